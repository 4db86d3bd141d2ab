//! The one store: SQLite (WAL, synchronous=FULL), versioned schema, group-commit writer.
//!
//! Writes go through one writer thread that owns the write connection. Callers submit closures
//! with [`Store::write`]; the writer drains everything queued, runs each closure in its own
//! SAVEPOINT inside one transaction, commits once (one fsync for the whole batch) and only then
//! answers every caller. So a lease is durable before its ACK leaves, and durability does not cap
//! DHCP throughput. Reads use separate connections (WAL lets them run beside the writer).
//!
//! Every inventory-like table has an `owner` column: `local` today, `upstream` for objects a
//! federation upstream owns.

mod bmc;
mod bss;
mod cloudinit;
mod identity;
mod images;
mod leases;
mod schema;
mod smd;
mod timeline;
mod upstream;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction};
use tokio::sync::{oneshot, watch};

pub use bmc::DiscoveryNames;
pub use bss::{BootParameters, BootSelector, CloudInit};
pub use cloudinit::{CiKind, NodeInfo};
pub use identity::{Audit, AuditRow, CertRow, EnrollRequest, JoinToken, SecretScope};
pub use images::ImageRecord;
pub use leases::{LeaseRecord, LeaseRecordKind};
pub use smd::{
    Component, EthernetInterface, Group, GroupMembers, IpAddressEntry, RedfishEndpoint, Reservation,
};
pub use timeline::{BootEvent, NodeStatusRow};
pub use upstream::{ApplyStats, OutboxItem, UpstreamSnapshot};

/// Store errors. `Conflict`/`NotFound`/`Invalid` carry a message a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("stored JSON is corrupt: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot open the store at {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("the store writer has stopped")]
    WriterGone,
}

type Completion = Box<dyn FnOnce(bool) + Send>;
type Job = Box<dyn FnOnce(&Transaction<'_>) -> Completion + Send>;

/// A handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

struct Inner {
    path: PathBuf,
    jobs: Mutex<mpsc::Sender<Job>>,
    readers: Mutex<Vec<Connection>>,
    inventory: watch::Sender<u64>,
    /// Set when an upstream is configured: RedfishEndpoint writes also queue a push in the
    /// outbox, in the same transaction.
    push_upstream: std::sync::atomic::AtomicBool,
}

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 1024;

impl Store {
    /// Opens (creating if needed) `<data_dir>/rackboot.db` and migrates it.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: data_dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(data_dir).map_err(|e| open_err(e.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700));
        }
        let path = data_dir.join("rackboot.db");
        let mut conn = Connection::open(&path)?;
        configure(&conn)?;
        schema::migrate(&mut conn).map_err(|e| match e {
            StoreError::Invalid(m) => open_err(m),
            other => other,
        })?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("rackboot-store-writer".into())
            .spawn(move || writer(conn, rx))
            .map_err(|e| open_err(e.to_string()))?;
        let (inventory, _) = watch::channel(0);
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                jobs: Mutex::new(tx),
                readers: Mutex::new(Vec::new()),
                inventory,
                push_upstream: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Runs `f` in the next group-committed transaction; resolves once it is durable.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (done, wait) = oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |tx| {
            let result = run_in_savepoint(tx, f);
            Box::new(move |committed| {
                let result = match result {
                    Ok(v) if committed => Ok(v),
                    Ok(_) => Err(StoreError::WriterGone),
                    Err(e) => Err(e),
                };
                let _ = done.send(result);
            })
        });
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .map_err(|_| StoreError::WriterGone)?;
        wait.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Like [`Store::write`] for inventory and boot data: also notifies
    /// [`Store::subscribe_inventory`] subscribers after the commit.
    pub async fn write_inventory<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let out = self.write(f).await?;
        self.inner.inventory.send_modify(|v| *v = v.wrapping_add(1));
        Ok(out)
    }

    /// Runs `f` on a read connection (off the async runtime).
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            let conn = match conn {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        &inner.path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    c.busy_timeout(Duration::from_secs(5))?;
                    c
                }
            };
            let out = f(&conn);
            inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            out
        })
        .await
        .map_err(|_| StoreError::WriterGone)?
    }

    /// A counter bumped after every committed inventory or boot-parameter change.
    pub fn subscribe_inventory(&self) -> watch::Receiver<u64> {
        self.inner.inventory.subscribe()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn run_in_savepoint<T>(
    tx: &Transaction<'_>,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    tx.execute_batch("SAVEPOINT job")?;
    match f(tx) {
        Ok(v) => {
            tx.execute_batch("RELEASE job")?;
            Ok(v)
        }
        Err(e) => {
            // One failing write must not undo the others in its batch.
            tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(e)
        }
    }
}

fn writer(mut conn: Connection, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let tx = match conn.transaction() {
            Ok(tx) => tx,
            Err(err) => {
                tracing::error!(error = %err, "store: cannot begin a transaction");
                for job in batch {
                    // Run nothing; every caller learns the write did not happen.
                    drop(job);
                }
                continue;
            }
        };
        let completions: Vec<Completion> = batch.into_iter().map(|job| job(&tx)).collect();
        let committed = match tx.commit() {
            Ok(()) => true,
            Err(err) => {
                tracing::error!(error = %err, "store: commit failed; the batch is not durable");
                false
            }
        };
        for c in completions {
            c(committed);
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
