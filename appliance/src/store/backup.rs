//! Snapshots of the store for `rackboot backup`, and what a snapshot holds.
//!
//! A snapshot is `VACUUM INTO` from a connection of its own: SQLite runs it inside one read
//! transaction, so the copy is the database as of one commit. In WAL mode that read
//! transaction does not block the writer (of this process or of a running `rackboot serve`),
//! and every write committed before it started is in the copy, so every lease ACKed by then
//! is (a lease is durable before its ACK leaves). A file copy of `rackboot.db` would not be
//! consistent: the last commits live in `rackboot.db-wal` until a checkpoint.
//!
//! The database is opened without migrating it: a backup holds the schema version it was
//! taken at, and restore refuses one newer than this rackboot ([`SCHEMA_VERSION`]).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// The schema version this rackboot writes (`PRAGMA user_version` after every migration).
pub const SCHEMA_VERSION: i64 = super::schema::LATEST;

/// What a snapshot holds, as `rackboot backup verify` prints it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub schema_version: i64,
    /// SMD Components of type Node.
    pub nodes: u64,
    pub components: u64,
    pub ethernet_interfaces: u64,
    pub redfish_endpoints: u64,
    pub boot_parameters: u64,
    pub leases: u64,
    /// Node certificates, and how many of them are neither revoked nor expired.
    pub certs: u64,
    pub certs_valid: u64,
    pub secrets: u64,
    pub images: Vec<SnapshotImage>,
}

/// One row of the `images` table: a name and the blob it points at.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotImage {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// Writes a consistent copy of `<data_dir>/rackboot.db` to `dest` (which must not exist yet),
/// beside a running server. `dest` is fsynced before this returns.
pub fn snapshot(data_dir: &Path, dest: &Path) -> Result<(), StoreError> {
    let db = data_dir.join("rackboot.db");
    let conn = Connection::open_with_flags(
        &db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Open {
        path: db.clone(),
        reason: format!("{e} (is this a rackboot data dir?)"),
    })?;
    // The server's writer holds the write lock only while it commits; a reader in WAL mode
    // never waits for it, but opening may need the WAL index lock for a moment.
    conn.busy_timeout(Duration::from_secs(30))?;
    let dest_str = dest
        .to_str()
        .ok_or_else(|| StoreError::Invalid(format!("{} is not UTF-8", dest.display())))?;
    conn.execute("VACUUM INTO ?1", [dest_str])?;
    drop(conn);
    // VACUUM INTO does not sync its output.
    let f = std::fs::File::open(dest).map_err(|e| StoreError::Open {
        path: dest.to_path_buf(),
        reason: e.to_string(),
    })?;
    f.sync_all().map_err(|e| StoreError::Open {
        path: dest.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(())
}

/// Opens the snapshot at `db` (a private copy: it may be written to) without migrating it,
/// checks its integrity and counts what it holds.
pub fn inspect(db: &Path) -> Result<SnapshotSummary, StoreError> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Open {
        path: db.to_path_buf(),
        reason: e.to_string(),
    })?;
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| StoreError::Invalid(format!("the store snapshot is not a database: {e}")))?;
    if check != "ok" {
        return Err(StoreError::Invalid(format!(
            "the store snapshot fails SQLite's integrity check: {check}"
        )));
    }
    let schema_version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let mut s = SnapshotSummary {
        schema_version,
        ..Default::default()
    };
    if schema_version > SCHEMA_VERSION {
        // Its tables may not be the ones counted below.
        return Ok(s);
    }
    let count = |sql: &str| -> Result<u64, StoreError> {
        let n: i64 = conn.query_row(sql, [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    let has = |table: &str| -> Result<bool, StoreError> {
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    };
    s.components = count("SELECT count(*) FROM components")?;
    s.nodes = count("SELECT count(*) FROM components WHERE json_extract(doc, '$.Type') = 'Node'")?;
    s.ethernet_interfaces = count("SELECT count(*) FROM ethernet_interfaces")?;
    s.redfish_endpoints = count("SELECT count(*) FROM redfish_endpoints")?;
    s.boot_parameters = count("SELECT count(*) FROM boot_parameters")?;
    s.leases = count("SELECT count(*) FROM leases")?;
    if has("certs")? {
        s.certs = count("SELECT count(*) FROM certs")?;
        let now = super::now_ms();
        s.certs_valid = count(&format!(
            "SELECT count(*) FROM certs WHERE revoked_ms IS NULL AND not_after_ms > {now}"
        ))?;
    }
    if has("secrets")? {
        s.secrets = count("SELECT count(*) FROM secrets")?;
    }
    if has("images")? {
        let mut stmt = conn.prepare("SELECT name, sha256, size FROM images ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(SnapshotImage {
                name: r.get(0)?,
                sha256: r.get(1)?,
                size: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
            })
        })?;
        for row in rows {
            s.images.push(row?);
        }
    }
    Ok(s)
}

/// The MAC and address of every lease in the database at `db` (tests compare them).
pub fn leases_in(db: &Path) -> Result<Vec<(String, String)>, StoreError> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare("SELECT mac, ip FROM leases ORDER BY mac")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect::<Result<_, _>>().map_err(StoreError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn snapshot_holds_committed_writes_and_the_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        store
            .write(|tx| {
                tx.execute(
                    "INSERT INTO leases (mac, ip, expires_ms, kind, updated_ms) \
                     VALUES ('52:54:00:00:00:01', '10.0.0.9', 1, 'dynamic', 1)",
                    [],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let dest = dir.path().join("snap.db");
        snapshot(dir.path(), &dest).unwrap();
        let s = inspect(&dest).unwrap();
        assert_eq!(s.schema_version, SCHEMA_VERSION);
        assert_eq!(s.leases, 1);
        assert_eq!(
            leases_in(&dest).unwrap(),
            vec![("52:54:00:00:00:01".into(), "10.0.0.9".into())]
        );
        // The destination must not exist: VACUUM INTO refuses to overwrite.
        assert!(snapshot(dir.path(), &dest).is_err());
    }

    #[test]
    fn snapshot_of_a_missing_store_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = snapshot(dir.path(), &dir.path().join("s.db")).unwrap_err();
        assert!(err.to_string().contains("rackboot data dir"), "{err}");
        assert!(!dir.path().join("rackboot.db").exists());
    }
}
