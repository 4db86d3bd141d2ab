//! The one store: SQLite (WAL, synchronous=FULL), versioned schema, group-commit writer.
//!
//! Writes go through one writer thread that owns the write connection. Callers submit closures
//! with [`Store::write`]; the writer drains everything queued, runs each closure in its own
//! SAVEPOINT inside one transaction, commits once (one fsync for the whole batch) and only then
//! answers every caller. So a lease is durable before its ACK leaves, and durability does not cap
//! DHCP throughput. Reads use separate connections (WAL lets them run beside the writer).
//!
//! The writer's queue is bounded ([`WRITE_QUEUE`] writes): a write offered to a full queue is
//! refused at once with [`StoreError::Busy`] (nothing stored; HTTP 503 with Retry-After, a
//! counted drop in DHCP), so a burst of writes costs bounded memory, never a growing backlog.
//!
//! Every inventory-like table has an `owner` column: `local` today, `upstream` for objects a
//! federation upstream owns.
//!
//! Owns: `rackboot.db`: every table, migrations, the group-commit writer, the store's health. May
//! call: nothing of ours.

pub mod backup;
mod bmc;
mod bss;
mod cloudinit;
mod dns;
mod health;
mod hosts;
mod identity;
mod images;
mod leases;
mod outbox;
mod schema;
mod smd;
mod smd_bulk;
mod timeline;
mod tpm;
pub mod trial;
mod upstream;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction};
use tokio::sync::{oneshot, watch};

pub use bmc::DiscoveryNames;
pub use bss::{BootParameters, BootSelector, CloudInit};
pub use cloudinit::{CLOUD_INIT_DEFAULTS_KEY, CiKind, NodeInfo};
pub use health::{StoreHealth, StoreState};
pub use hosts::{Host, HostKind, bmc_of};
pub use identity::{Audit, AuditRow, CertRow, EnrollRequest, Issued, JoinToken, SecretScope};
pub use images::ImageRecord;
pub use leases::{LeaseAck, LeaseRecord, LeaseRecordKind, LeaseWrite};
pub use outbox::OutboxItem;
pub use smd::{
    Component, EthernetInterface, Group, GroupMembers, IpAddressEntry, RedfishEndpoint, Reservation,
};
pub use timeline::{BootEvent, NodeStatusRow};
pub use tpm::TpmEk;
pub use trial::Migration;
pub use upstream::{ApplyStats, UpstreamSnapshot};

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
    /// The data partition has no room: nothing of this write was stored.
    #[error(
        "the data partition is full: {} has {free_bytes} bytes free, so the change was not stored; free space there (docs/runbook-disk-full.md)",
        data_dir.display()
    )]
    Full { data_dir: PathBuf, free_bytes: u64 },
    /// A write outside the database (an image import) would eat into the headroom kept free
    /// so that leases and inventory changes can still be stored.
    #[error(
        "refused: {needed} more bytes would leave less than the {min_free} bytes kept free on the data partition ({} has {free_bytes} bytes free); free space or raise the partition size (docs/runbook-disk-full.md)",
        data_dir.display()
    )]
    Headroom {
        data_dir: PathBuf,
        free_bytes: u64,
        needed: u64,
        min_free: u64,
    },
    /// The transaction holding this write did not commit (an I/O error): nothing was stored.
    #[error("the store could not commit the change, so it was not stored: {0}")]
    NotDurable(String),
    #[error("the store writer has stopped")]
    WriterGone,
    /// The writer's queue is full: nothing of this write was queued or stored.
    #[error(
        "the store is busy ({queued} writes already waiting for the disk), so the change was not stored; retry in a moment"
    )]
    Busy { queued: usize },
}

impl StoreError {
    /// Whether SQLite said the disk is full (`SQLITE_FULL`).
    fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Sqlite(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull))
    }
}

/// How a batch's transaction ended, told to every job in it.
#[derive(Debug, Clone)]
enum Commit {
    Durable,
    Full,
    Failed(String),
}

type Completion = Box<dyn FnOnce(&Commit) + Send>;
/// A queued write: runs in the batch's transaction and says whether it hit a full disk.
type Job = Box<dyn FnOnce(&Transaction<'_>) -> (Completion, bool) + Send>;

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
    health: Arc<health::Health>,
    jobs: mpsc::SyncSender<Job>,
    /// The writer queue's capacity.
    queue: usize,
    /// Idle read connections; at most [`READERS`] exist.
    readers: Mutex<Vec<Connection>>,
    /// One permit per read connection: a read waits for one before it takes a blocking thread.
    read_permits: Arc<tokio::sync::Semaphore>,
    inventory: watch::Sender<u64>,
    /// Set when an upstream is configured: RedfishEndpoint writes also queue a push in the
    /// outbox, in the same transaction.
    push_upstream: std::sync::atomic::AtomicBool,
}

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Writes waiting for the writer, at most (past it: [`StoreError::Busy`]).
pub const WRITE_QUEUE: usize = 4 * MAX_BATCH;
/// Reads running at once, and so read connections open, at most. Without a bound a boot storm's
/// concurrent HTTP requests each took a blocking thread and opened a connection of their own
/// (each with its own page cache), kept for the process's life: hundreds of both.
pub const READERS: usize = 4;

/// Each read connection's SQLite page cache, in KiB.
const READER_CACHE_KIB: i64 = 512;

impl Store {
    /// Opens (creating if needed) `<data_dir>/rackboot.db` and migrates it.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Self::open_with_queue(data_dir, WRITE_QUEUE, Migration::Plain)
    }

    /// Like [`Store::open`], on an appliance boot that `mode` describes (an update's trial, or
    /// the previous slot after a failed one): see [`trial`].
    pub fn open_for(data_dir: &Path, mode: Migration) -> Result<Store, StoreError> {
        Self::open_with_queue(data_dir, WRITE_QUEUE, mode)
    }

    fn open_with_queue(
        data_dir: &Path,
        queue: usize,
        mode: Migration,
    ) -> Result<Store, StoreError> {
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
        trial::before_open(data_dir, mode)?;
        let path = data_dir.join("rackboot.db");
        let mut conn = Connection::open(&path)?;
        configure(&conn)?;
        schema::migrate(&mut conn).map_err(|e| match e {
            StoreError::Invalid(m) => open_err(m),
            other => other,
        })?;
        let (tx, rx) = mpsc::sync_channel::<Job>(queue);
        let health = Arc::new(health::Health::new(data_dir));
        {
            let health = health.clone();
            std::thread::Builder::new()
                .name("rackboot-store-writer".into())
                .spawn(move || writer(conn, rx, &health))
                .map_err(|e| open_err(e.to_string()))?;
        }
        let (inventory, _) = watch::channel(0);
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                health,
                jobs: tx,
                queue,
                readers: Mutex::new(Vec::new()),
                read_permits: Arc::new(tokio::sync::Semaphore::new(READERS)),
                inventory,
                push_upstream: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Runs `f` in the next group-committed transaction; resolves once it is durable. The write
    /// is queued when this is called (not when the future is first polled), or refused at once
    /// with [`StoreError::Busy`] when the writer's queue is full.
    pub fn write<T, F>(
        &self,
        f: F,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (done, wait) = oneshot::channel::<Result<T, StoreError>>();
        let health = self.inner.health.clone();
        let job: Job = Box::new(move |tx| {
            let result = run_in_savepoint(tx, f);
            let full = matches!(&result, Err(e) if e.is_disk_full());
            let completion: Completion = Box::new(move |commit| {
                let result = match (result, commit) {
                    (Ok(v), Commit::Durable) => Ok(v),
                    (Err(e), _) if e.is_disk_full() => Err(health.full_error()),
                    (Err(e), _) => Err(e),
                    (Ok(_), Commit::Full) => Err(health.full_error()),
                    (Ok(_), Commit::Failed(why)) => Err(StoreError::NotDurable(why.clone())),
                };
                let _ = done.send(result);
            });
            (completion, full)
        });
        let queued = match self.inner.jobs.try_send(job) {
            Ok(()) => Ok(wait),
            Err(mpsc::TrySendError::Full(_)) => Err(StoreError::Busy {
                queued: self.inner.queue,
            }),
            Err(mpsc::TrySendError::Disconnected(_)) => Err(StoreError::WriterGone),
        };
        async move { queued?.await.map_err(|_| StoreError::WriterGone)? }
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

    /// Runs `f` on a read connection (off the async runtime), waiting while [`READERS`] reads
    /// run.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let permit = inner
            .read_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::WriterGone)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
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
                    // A page cache of READER_CACHE_KIB, not SQLite's 2 MiB: reads are short
                    // lookups and the OS caches the file anyway (4 readers, memory target).
                    c.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
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

    /// Whether writes are being stored (ok, full, failing), and the data partition's free space.
    pub fn health(&self) -> StoreHealth {
        self.inner.health.snapshot()
    }

    /// Sets the headroom that image imports (and later backups) must leave free on the data
    /// partition; `None` = the default (64 MiB or 5% of the partition, whichever is smaller).
    pub fn set_min_free(&self, bytes: Option<u64>) {
        self.inner.health.set_min_free(bytes);
    }

    /// The error for a write the data partition has no room for.
    pub fn full_error(&self) -> StoreError {
        self.inner.health.full_error()
    }

    /// Refuses (with [`StoreError::Headroom`]) a write of `more` bytes outside the database that
    /// would leave less than the headroom free.
    pub fn check_headroom(&self, more: u64) -> Result<(), StoreError> {
        self.inner.health.check_headroom(more)
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

fn writer(mut conn: Connection, jobs: mpsc::Receiver<Job>, health: &health::Health) {
    loop {
        // While writes fail, probe now and then so the state (and the log) says when space
        // is back even if nothing else is written.
        let first = if health.is_ok() {
            match jobs.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        } else {
            match jobs.recv_timeout(health::PROBE_EVERY) {
                Ok(j) => j,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let probe = probe(&mut conn);
                    health.record(&probe, false);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        };
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
                // Run nothing; every caller learns the write did not happen.
                let commit = health.classify(&StoreError::Sqlite(err));
                health.record(&commit, false);
                drop(batch);
                continue;
            }
        };
        let mut hit_full = false;
        let completions: Vec<Completion> = batch
            .into_iter()
            .map(|job| {
                let (c, full) = job(&tx);
                hit_full |= full;
                c
            })
            .collect();
        let commit = match tx.commit() {
            Ok(()) => Commit::Durable,
            Err(err) => health.classify(&StoreError::Sqlite(err)),
        };
        health.record(&commit, hit_full);
        for c in completions {
            c(&commit);
        }
    }
}

/// A write that stores nothing new: rewriting `user_version` dirties page 1, so the commit
/// needs room in the WAL exactly as a real write does.
fn probe(conn: &mut Connection) -> Commit {
    let run = |conn: &mut Connection| -> Result<(), rusqlite::Error> {
        let tx = conn.transaction()?;
        let v: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        tx.pragma_update(None, "user_version", v)?;
        tx.commit()
    };
    match run(conn) {
        Ok(()) => Commit::Durable,
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) => Commit::Full,
        Err(e) => Commit::Failed(e.to_string()),
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
