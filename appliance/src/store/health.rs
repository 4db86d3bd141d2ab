//! Whether the store is storing: the writer's last outcome (ok, full, failing) and the data
//! partition's free space, for `/rackboot/v1/status`, `/metrics` and the 507 problem.
//!
//! The state changes only on what the writer saw: a commit (or a write inside one) that SQLite
//! refused with `SQLITE_FULL` makes it `full`, another commit error `failing`, the next clean
//! commit `ok`. Each change is logged once (ERROR when writes stop, INFO when they come back),
//! never per write, so a full disk during a boot storm is one line, not one per packet.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Commit, StoreError};

/// How often the writer probes while writes fail and nothing else is queued.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Default headroom: this much, or [`DEFAULT_MIN_FREE_PERCENT`] of the partition if smaller.
const DEFAULT_MIN_FREE: u64 = 64 * 1024 * 1024;
const DEFAULT_MIN_FREE_PERCENT: u64 = 5;
/// `min_free` not configured.
const UNSET: u64 = u64::MAX;

/// What the store's writes are doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreState {
    /// The last commit was durable.
    Ok,
    /// The data partition is full: writes are refused until space is freed.
    Full,
    /// Commits fail for another reason (an I/O error): see the log.
    Failing,
}

impl StoreState {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreState::Ok => "ok",
            StoreState::Full => "full",
            StoreState::Failing => "failing",
        }
    }
}

/// The store's health as reported to people and scrapers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreHealth {
    pub state: StoreState,
    /// The data directory (where the database, images and keys live).
    pub data_dir: PathBuf,
    /// Bytes free for rackboot on the data partition (`None` if it cannot be read).
    pub free_bytes: Option<u64>,
    /// Size of the data partition.
    pub total_bytes: Option<u64>,
    /// Headroom image imports must leave free.
    pub min_free_bytes: u64,
    /// Why writes fail, when they do.
    pub detail: Option<String>,
}

pub(super) struct Health {
    data_dir: PathBuf,
    state: Mutex<(StoreState, Option<String>)>,
    min_free: AtomicU64,
}

impl Health {
    pub(super) fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            state: Mutex::new((StoreState::Ok, None)),
            min_free: AtomicU64::new(UNSET),
        }
    }

    pub(super) fn is_ok(&self) -> bool {
        self.lock().0 == StoreState::Ok
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (StoreState, Option<String>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sorts a failed commit: `SQLITE_FULL`, or an I/O error while the partition has no room
    /// left (some write paths report ENOSPC as a generic I/O error), is `Full`.
    pub(super) fn classify(&self, err: &StoreError) -> Commit {
        if err.is_disk_full() || self.space().is_some_and(|(free, _)| free < 64 * 1024) {
            Commit::Full
        } else {
            Commit::Failed(err.to_string())
        }
    }

    /// Records a batch's outcome; logs only when the state changes.
    pub(super) fn record(&self, commit: &Commit, hit_full: bool) {
        let (next, detail) = match commit {
            Commit::Durable if !hit_full => (StoreState::Ok, None),
            Commit::Durable | Commit::Full => (
                StoreState::Full,
                Some("database or disk is full".to_owned()),
            ),
            Commit::Failed(why) => (StoreState::Failing, Some(why.clone())),
        };
        let mut st = self.lock();
        let prev = st.0;
        *st = (next, detail.clone());
        drop(st);
        if prev == next {
            return;
        }
        let free = self.space().map(|(f, _)| f);
        let dir = self.data_dir.display();
        match next {
            StoreState::Ok => tracing::info!(
                data_dir = %dir, free_bytes = ?free, was = prev.as_str(),
                "store: writes are stored again"
            ),
            StoreState::Full => tracing::error!(
                data_dir = %dir, free_bytes = ?free,
                "store: the data partition is full; dynamic leases, API changes and boot events are not stored \
                 (inventory nodes keep booting) until space is freed: see docs/runbook-disk-full.md"
            ),
            StoreState::Failing => tracing::error!(
                data_dir = %dir, error = detail.as_deref().unwrap_or(""),
                "store: commits are failing; dynamic leases, API changes and boot events are not stored \
                 (inventory nodes keep booting)"
            ),
        }
    }

    pub(super) fn full_error(&self) -> StoreError {
        StoreError::Full {
            data_dir: self.data_dir.clone(),
            free_bytes: self.space().map_or(0, |(f, _)| f),
        }
    }

    pub(super) fn set_min_free(&self, bytes: Option<u64>) {
        self.min_free
            .store(bytes.unwrap_or(UNSET), Ordering::Relaxed);
    }

    fn min_free(&self, total: Option<u64>) -> u64 {
        match self.min_free.load(Ordering::Relaxed) {
            UNSET => {
                let pct = total.map_or(DEFAULT_MIN_FREE, |t| t / 100 * DEFAULT_MIN_FREE_PERCENT);
                DEFAULT_MIN_FREE.min(pct)
            }
            set => set,
        }
    }

    pub(super) fn check_headroom(&self, more: u64) -> Result<(), StoreError> {
        let Some((free, total)) = self.space() else {
            return Ok(()); // cannot tell; the write itself will say if it does not fit
        };
        let min_free = self.min_free(Some(total));
        if free.saturating_sub(more) < min_free {
            return Err(StoreError::Headroom {
                data_dir: self.data_dir.clone(),
                free_bytes: free,
                needed: more,
                min_free,
            });
        }
        Ok(())
    }

    /// (free for an unprivileged writer, total) bytes of the data partition.
    fn space(&self) -> Option<(u64, u64)> {
        let st = nix::sys::statvfs::statvfs(&self.data_dir).ok()?;
        let frag = st.fragment_size();
        let free = st.blocks_available().saturating_mul(frag);
        let total = st.blocks().saturating_mul(frag);
        Some((free, total))
    }

    pub(super) fn snapshot(&self) -> StoreHealth {
        let (state, detail) = self.lock().clone();
        let space = self.space();
        StoreHealth {
            state,
            data_dir: self.data_dir.clone(),
            free_bytes: space.map(|(f, _)| f),
            total_bytes: space.map(|(_, t)| t),
            min_free_bytes: self.min_free(space.map(|(_, t)| t)),
            detail,
        }
    }
}
