//! `[backup]`: `rackboot serve` takes a backup every `interval` into `dir`, keeps the newest
//! `keep` archives and deletes blobs none of them needs. Each run is logged; the outcome is
//! the metrics `rackboot_backup_last_success_timestamp_seconds` and
//! `rackboot_backup_failures_total`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::archive::Seal;
use super::{CreateOptions, secret};
use crate::config::Backup;
use crate::metrics::Metrics;

/// After a failed backup, the next try comes after this (or `interval`, if shorter).
const RETRY_AFTER: Duration = Duration::from_secs(600);

/// Starts the schedule when `cfg.dir` is set. The keys are checked now, so a missing
/// passphrase file stops `rackboot serve` at start rather than failing every night.
pub fn spawn(
    tasks: &mut JoinSet<()>,
    cfg: &Backup,
    data_dir: &Path,
    config_file: Option<PathBuf>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(dir) = cfg.dir.clone() else {
        return Ok(());
    };
    seal_for(cfg).context("[backup]")?;
    let cfg = cfg.clone();
    let data_dir = data_dir.to_path_buf();
    tracing::info!(dir = %dir.display(), interval = ?cfg.interval, keep = cfg.keep, "scheduled backups on");
    tasks.spawn(async move {
        let mut wait = until_due(&dir, cfg.interval);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let run = {
                let (cfg, dir, data_dir, config_file) =
                    (cfg.clone(), dir.clone(), data_dir.clone(), config_file.clone());
                tokio::task::spawn_blocking(move || -> anyhow::Result<PathBuf> {
                    let created = super::create(&CreateOptions {
                        data_dir,
                        config: config_file,
                        target: dir.clone(),
                        seal: seal_for(&cfg)?,
                        keep: Some(cfg.keep as usize),
                    })?;
                    Ok(created.archive)
                })
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r)
            };
            match run {
                Ok(archive) => {
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                        .unwrap_or(0);
                    metrics.backup_succeeded(now);
                    tracing::info!(archive = %archive.display(), "scheduled backup done");
                    wait = cfg.interval;
                }
                Err(err) => {
                    metrics.backup_failed();
                    tracing::error!(error = format!("{err:#}"), dir = %dir.display(), "scheduled backup failed");
                    wait = cfg.interval.min(RETRY_AFTER);
                }
            }
        }
    });
    Ok(())
}

fn seal_for(cfg: &Backup) -> anyhow::Result<Seal> {
    match &cfg.passphrase_file {
        Some(f) => Ok(Seal::Passphrase(secret::passphrase_from_file(f)?)),
        None => secret::seal(&cfg.recipients, None),
    }
}

/// Time until the next backup: `interval` after the newest archive in `dir`, now if none.
fn until_due(dir: &Path, interval: Duration) -> Duration {
    let newest = archives(dir).ok().and_then(|a| a.last().map(|(t, _)| *t));
    match newest {
        Some(t) => (t + interval)
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
        None => Duration::ZERO,
    }
}

/// The archives in `dir`, oldest first.
fn archives(dir: &Path) -> anyhow::Result<Vec<(SystemTime, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("rackboot-") && name.ends_with(".tar.age") && e.file_type()?.is_file() {
            out.push((e.metadata()?.modified()?, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Deletes all but the newest `keep` archives in `dir`, then every blob that no remaining
/// archive's `.blobs` list names. Blobs are left alone if any archive has no list.
pub fn prune(dir: &Path, keep: usize) -> anyhow::Result<()> {
    let _lock = super::create::lock(dir)?;
    prune_locked(dir, keep)
}

/// [`prune`] for a caller that holds the target's lock.
pub(super) fn prune_locked(dir: &Path, keep: usize) -> anyhow::Result<()> {
    let all = archives(dir)?;
    let cut = all.len().saturating_sub(keep);
    for (_, path) in all.iter().take(cut) {
        std::fs::remove_file(path)
            .with_context(|| format!("cannot delete the old backup {}", path.display()))?;
        let _ = std::fs::remove_file(blob_list(path));
        tracing::info!(archive = %path.display(), "old backup deleted");
    }
    let mut needed = std::collections::BTreeSet::new();
    for (_, path) in all.iter().skip(cut) {
        let Ok(list) = std::fs::read_to_string(blob_list(path)) else {
            tracing::warn!(archive = %path.display(), "no blob list beside it: blobs are not pruned");
            return Ok(());
        };
        needed.extend(list.lines().map(str::to_owned));
    }
    let blobs = dir.join("blobs").join("sha256");
    let Ok(rd) = std::fs::read_dir(&blobs) else {
        return Ok(());
    };
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if super::is_sha256_hex(&name) && !needed.contains(&name) {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

fn blob_list(archive: &Path) -> PathBuf {
    let mut s = archive.as_os_str().to_owned();
    s.push(".blobs");
    PathBuf::from(s)
}
