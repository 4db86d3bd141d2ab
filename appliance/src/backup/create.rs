//! `rackboot backup create`: snapshot, keys, config and blobs into a target directory.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::archive::{self, Seal, Writer};
use super::{Blob, FORMAT, FORMAT_VERSION, Manifest, is_sha256_hex, stamp};
use crate::store::backup::{self as snap, SnapshotSummary};

/// What to back up, and where.
pub struct CreateOptions {
    pub data_dir: PathBuf,
    /// The config file in use, if any; it goes into the archive as `config/<name>`.
    pub config: Option<PathBuf>,
    /// The target directory (created if missing).
    pub target: PathBuf,
    pub seal: Seal,
    /// Then keep only the newest this many archives (and the blobs they need), under the
    /// same lock, so nobody sees more than that many.
    pub keep: Option<usize>,
}

/// A finished backup.
#[derive(Debug)]
pub struct Created {
    pub archive: PathBuf,
    pub manifest: Manifest,
    pub summary: SnapshotSummary,
    /// Blobs copied into the target by this backup, and their bytes.
    pub blobs_written: u64,
    pub blob_bytes_written: u64,
    /// Blobs the target already held.
    pub blobs_present: u64,
}

/// Files of the data dir that are not copied as files: the store (snapshotted instead), its
/// WAL and index, image blobs (kept by hash in the target), our own temporaries.
fn skipped(rel: &Path) -> bool {
    let Some(first) = rel.components().next() else {
        return true;
    };
    let first = first.as_os_str().to_string_lossy();
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    first.starts_with("rackboot.db")
        || first == "images"
        || first == "lost+found"
        || first == "restored-config"
        || name.starts_with('.')
        || name.ends_with(".tmp")
}

/// Takes a backup of `opts.data_dir` into `opts.target`; safe while `rackboot serve` runs.
pub fn create(opts: &CreateOptions) -> anyhow::Result<Created> {
    let data_dir = &opts.data_dir;
    if !data_dir.join("rackboot.db").is_file() {
        bail!(
            "{} has no rackboot.db: not a rackboot data dir (--data-dir, RACKBOOT_DATA_DIR)",
            data_dir.display()
        );
    }
    let blobs_dir = opts.target.join("blobs").join("sha256");
    archive::create_private_dir_all(&blobs_dir)?;
    // One writer per target: pruning must not delete a blob a backup is about to name.
    let _lock = lock(&opts.target)?;

    let created_ms = crate::store::now_ms();
    let (name, final_path) = free_name(&opts.target, created_ms)?;
    let snapshot = TempFile(data_dir.join(format!(
        ".backup-snapshot-{}-{created_ms}.db",
        std::process::id()
    )));
    snap::snapshot(data_dir, &snapshot.0).context("cannot snapshot the store")?;
    let summary = snap::inspect(&snapshot.0).context("the store snapshot")?;

    // Blobs first: an archive exists only once every blob it names is durable.
    let mut blobs: Vec<Blob> = summary
        .images
        .iter()
        .map(|i| Blob {
            sha256: i.sha256.clone(),
            size: i.size,
        })
        .collect();
    blobs.sort();
    blobs.dedup();
    let (mut written, mut bytes, mut present) = (0u64, 0u64, 0u64);
    for b in &blobs {
        if !is_sha256_hex(&b.sha256) {
            bail!(
                "the store names an image blob {:?}, not a SHA-256",
                b.sha256
            );
        }
        let src = data_dir.join("images").join("sha256").join(&b.sha256);
        match copy_blob(&src, &blobs_dir, b)? {
            true => {
                written += 1;
                bytes += b.size;
            }
            false => present += 1,
        }
    }
    archive::sync_dir(&blobs_dir)?;

    // The blob list beside the archive: what pruning old backups may not delete.
    let list: String = blobs.iter().map(|b| format!("{}\n", b.sha256)).collect();
    let list_path = opts.target.join(format!("{name}.blobs"));
    write_atomic(&list_path, list.as_bytes())?;

    let tmp = TempFile(opts.target.join(format!(".{name}.tmp")));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp.0)
        .with_context(|| format!("cannot create {}", tmp.0.display()))?;
    let mtime = u64::try_from(created_ms / 1000).unwrap_or(0);
    let mut w = Writer::new(file, &opts.seal, mtime)?;
    {
        let f = File::open(&snapshot.0)?;
        let size = f.metadata()?.len();
        w.add("store/rackboot.db", 0o600, size, f)?;
    }
    for rel in data_files(data_dir)? {
        let path = data_dir.join(&rel);
        let f = File::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let meta = f.metadata()?;
        let rel = rel
            .to_str()
            .with_context(|| format!("{} is not a UTF-8 name", path.display()))?;
        if crate::seal::keyfile::KEY_FILES
            .iter()
            .any(|(k, _)| *k == rel)
        {
            // A key sealed to this appliance's TPM goes into the (encrypted) archive unsealed:
            // the restore may be on another appliance, which seals it to its own TPM.
            let key = crate::seal::keyfile::read(&path)
                .with_context(|| format!("cannot read the key file {}", path.display()))?;
            let len = u64::try_from(key.len())?;
            w.add(
                &format!("data/{rel}"),
                meta.mode(),
                len,
                std::io::Cursor::new(key),
            )?;
            continue;
        }
        w.add(&format!("data/{rel}"), meta.mode(), meta.len(), f)?;
    }
    let config_file = match &opts.config {
        Some(path) => {
            let f = File::open(path)
                .with_context(|| format!("cannot read the config file {}", path.display()))?;
            let meta = f.metadata()?;
            let base = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("rackboot.toml");
            w.add(&format!("config/{base}"), meta.mode(), meta.len(), f)?;
            Some(path.display().to_string())
        }
        None => None,
    };
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        created: humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(u64::try_from(created_ms).unwrap_or(0)),
        )
        .to_string(),
        created_ms,
        rackboot_version: env!("CARGO_PKG_VERSION").into(),
        source_data_dir: data_dir.display().to_string(),
        config_file,
        schema_version: summary.schema_version,
        members: Vec::new(),
        blobs,
    };
    let manifest = w.finish(manifest)?;
    std::fs::rename(&tmp.0, &final_path)
        .with_context(|| format!("cannot write {}", final_path.display()))?;
    archive::sync_dir(&opts.target)?;
    if let Some(keep) = opts.keep {
        super::schedule::prune_locked(&opts.target, keep)?;
    }
    tracing::info!(
        archive = %final_path.display(),
        blobs_written = written,
        blobs_present = present,
        "backup created"
    );
    Ok(Created {
        archive: final_path,
        manifest,
        summary,
        blobs_written: written,
        blob_bytes_written: bytes,
        blobs_present: present,
    })
}

/// Holds the target's `.lock` (flock) until dropped; waits for another holder.
pub(super) fn lock(target: &Path) -> anyhow::Result<nix::fcntl::Flock<File>> {
    let path = target.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("cannot lock {}: {e}", path.display()))
}

/// `rackboot-<stamp>.tar.age`, with `-2`, `-3`… when a backup of the same second exists.
fn free_name(target: &Path, ms: i64) -> anyhow::Result<(String, PathBuf)> {
    let base = format!("rackboot-{}", stamp(ms));
    for i in 1..1000 {
        let name = if i == 1 {
            format!("{base}.tar.age")
        } else {
            format!("{base}-{i}.tar.age")
        };
        let path = target.join(&name);
        if !path.exists() {
            return Ok((name, path));
        }
    }
    bail!(
        "{} already holds too many backups named {base}",
        target.display()
    )
}

/// Copies a blob into the target unless it holds it already; `Ok(true)` when copied.
fn copy_blob(src: &Path, blobs_dir: &Path, blob: &Blob) -> anyhow::Result<bool> {
    let dest = blobs_dir.join(&blob.sha256);
    if let Ok(meta) = std::fs::metadata(&dest)
        && meta.is_file()
        && meta.len() == blob.size
    {
        // Content-addressed: same name and size is the same blob. `verify` rehashes it.
        return Ok(false);
    }
    let mut f = File::open(src).with_context(|| {
        format!(
            "the store names image blob {} but {} cannot be read (was the image just deleted? run the backup again)",
            blob.sha256,
            src.display()
        )
    })?;
    let tmp = TempFile(blobs_dir.join(format!(".{}.tmp", blob.sha256)));
    let _ = std::fs::remove_file(&tmp.0);
    let (sha, n) = archive::write_file(&tmp.0, 0o644, &mut f)?;
    if sha != blob.sha256 || n != blob.size {
        bail!(
            "image blob {} in the data dir is corrupt ({n} bytes, sha256 {sha}): re-import that image first",
            src.display()
        );
    }
    std::fs::rename(&tmp.0, &dest).with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(true)
}

/// Every file of the data dir to copy as a file, relative, sorted.
fn data_files(data_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = data_dir.join(&rel);
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let entry = entry?;
            let rel = rel.join(entry.file_name());
            if skipped(&rel) {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(rel);
            } else if kind.is_file() {
                out.push(rel);
            } else {
                tracing::warn!(path = %data_dir.join(&rel).display(), "not a regular file: left out of the backup");
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = TempFile(path.with_file_name(format!(".{name}.tmp")));
    let _ = std::fs::remove_file(&tmp.0);
    archive::write_file(&tmp.0, 0o600, &mut &bytes[..])?;
    std::fs::rename(&tmp.0, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A file removed when dropped (if it still exists under that name).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
