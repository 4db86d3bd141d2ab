//! Schema migrations across an appliance update's trial boot.
//!
//! A new version may migrate the store forward, and an older rackboot refuses a store newer
//! than it understands. So a trial boot that migrates and then fails its health check would
//! leave the previous slot, booted again by the firmware, unable to open its own store: the rack
//! down after a rollback. The rule here:
//!
//! - On a trial boot ([`Migration::Trial`]) a store that needs migrating is first copied, as of
//!   one commit, to [`PRE_UPDATE_COPY`]; only then is it migrated.
//! - When the trial slot is marked good, [`confirm`] deletes the copy: the migration stands.
//! - When the previous slot comes back after a failed trial ([`Migration::RolledBack`]) and the
//!   store is newer than this rackboot, the migrated store is set aside as
//!   `rackboot.db.failed-update` (with its `-wal`) and the copy takes its place. The rack goes on
//!   from the store as it was just before the update; what was written during the failed trial
//!   (minutes at most) is in the set-aside file for an operator.
//!
//! A store that did not need migrating is never copied, and one the previous version can still
//! open is never replaced: a failed trial loses nothing then.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{StoreError, backup, schema};

/// The copy of `rackboot.db` taken before a trial boot migrated it.
pub const PRE_UPDATE_COPY: &str = "rackboot.db.before-update";
/// Where a store migrated by a failed trial is set aside.
pub const FAILED_UPDATE: &str = "rackboot.db.failed-update";

/// How [`super::Store::open_for`] treats a migration; the appliance's updater decides which
/// applies to this boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Migration {
    /// Not an update's trial boot: migrate as needed.
    #[default]
    Plain,
    /// An update's trial boot, not yet confirmed: copy the store before migrating it.
    Trial,
    /// The previous slot after a failed trial: go back to the copy if the trial's migration left
    /// a store this rackboot cannot open.
    RolledBack,
}

fn open_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The schema version of the database at `db`, without migrating or changing it.
fn version_of(db: &Path) -> Result<i64, StoreError> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| open_err(db, e))?;
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| open_err(dir, e))
}

/// Before the store at `data_dir` is opened for serving.
pub(super) fn before_open(data_dir: &Path, mode: Migration) -> Result<(), StoreError> {
    let db = data_dir.join("rackboot.db");
    let copy = data_dir.join(PRE_UPDATE_COPY);
    if !db.exists() {
        return Ok(());
    }
    match mode {
        Migration::Plain => Ok(()),
        Migration::Trial => {
            let version = version_of(&db)?;
            if version == 0 || version >= schema::LATEST || copy.exists() {
                // New, current, or already copied by an earlier start of this trial (whose
                // migrations may have got part of the way: the copy is the older one).
                return Ok(());
            }
            let tmp = data_dir.join(format!("{PRE_UPDATE_COPY}.tmp"));
            let _ = std::fs::remove_file(&tmp);
            backup::snapshot(data_dir, &tmp)?;
            std::fs::rename(&tmp, &copy).map_err(|e| open_err(&copy, e))?;
            sync_dir(data_dir)?;
            tracing::info!(
                from = version,
                to = schema::LATEST,
                copy = %copy.display(),
                "update trial boot: the store is copied before it is migrated; the copy goes once this slot is marked good"
            );
            Ok(())
        }
        Migration::RolledBack => {
            if !copy.exists() {
                return Ok(());
            }
            let version = version_of(&db)?;
            if version <= schema::LATEST {
                // The failed trial left a store this version opens: keep every write.
                std::fs::remove_file(&copy).map_err(|e| open_err(&copy, e))?;
                return Ok(());
            }
            let copied = version_of(&copy)?;
            if copied > schema::LATEST {
                return Err(open_err(
                    &copy,
                    format!(
                        "the copy taken before the update has schema version {copied}, newer than this rackboot ({})",
                        schema::LATEST
                    ),
                ));
            }
            for suffix in ["", "-wal", "-shm"] {
                let from = data_dir.join(format!("rackboot.db{suffix}"));
                let to = data_dir.join(format!("{FAILED_UPDATE}{suffix}"));
                let _ = std::fs::remove_file(&to);
                match std::fs::rename(&from, &to) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(open_err(&from, e)),
                }
            }
            std::fs::rename(&copy, &db).map_err(|e| open_err(&db, e))?;
            sync_dir(data_dir)?;
            tracing::warn!(
                migrated = version,
                restored = copied,
                set_aside = %data_dir.join(FAILED_UPDATE).display(),
                "the failed update trial had migrated the store past this version's schema: restored the copy taken just before it"
            );
            Ok(())
        }
    }
}

/// The trial slot is good: its migration stands, the copy goes.
pub fn confirm(data_dir: &Path) -> Result<(), StoreError> {
    let copy = data_dir.join(PRE_UPDATE_COPY);
    match std::fs::remove_file(&copy) {
        Ok(()) => sync_dir(data_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(open_err(&copy, e)),
    }
}
