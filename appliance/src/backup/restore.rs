//! `rackboot backup verify` and `rackboot backup restore`.
//!
//! Both decrypt and unpack the whole archive into a staging directory, check every member
//! against the manifest, open the store snapshot (integrity check, schema version) and check
//! every blob's hash. Restore then builds the complete data dir in the staging directory and
//! moves it into place with one rename, so a refused or interrupted restore leaves the target
//! as it was.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;

use super::archive::{self, Unpacked, Unseal};
use super::{KeyInfo, Manifest, describe_keys, is_sha256_hex, stamp};
use crate::store::backup::{self as snap, SCHEMA_VERSION, SnapshotSummary};

/// What `verify` found.
#[derive(Debug, Serialize)]
pub struct Inspected {
    pub archive: String,
    pub manifest: Manifest,
    pub store: SnapshotSummary,
    pub keys: Vec<KeyInfo>,
    /// Blobs checked (present, right size, right hash) and their bytes.
    pub blobs_checked: u64,
    pub blob_bytes: u64,
}

/// Decrypts and checks `archive` completely; writes nothing outside a private temporary dir.
pub fn verify(archive: &Path, unseal: &Unseal, blobs_dir: &Path) -> anyhow::Result<Inspected> {
    let staging = Staging::new(&std::env::temp_dir(), "rackboot-verify")?;
    let (unpacked, store) = open_checked(archive, unseal, &staging.0)?;
    let mut blob_bytes = 0;
    for b in &unpacked.manifest.blobs {
        let path = blobs_dir.join("sha256").join(&b.sha256);
        let mut f = std::fs::File::open(&path).with_context(|| {
            format!(
                "blob {} is missing from {} (the backup's images cannot be restored; --blobs DIR if they are elsewhere)",
                b.sha256,
                blobs_dir.display()
            )
        })?;
        let mut h = archive::HashingReader::new(&mut f);
        std::io::copy(&mut h, &mut std::io::sink())?;
        let (sha, n) = h.finish();
        if sha != b.sha256 || n != b.size {
            bail!(
                "blob {} is damaged ({n} bytes, sha256 {sha})",
                path.display()
            );
        }
        blob_bytes += n;
    }
    let keys = describe_keys(&staging.0.join("data"));
    Ok(Inspected {
        archive: archive.display().to_string(),
        blobs_checked: unpacked.manifest.blobs.len() as u64,
        blob_bytes,
        manifest: unpacked.manifest,
        store,
        keys,
    })
}

/// Where and how to restore.
pub struct RestoreOptions {
    pub data_dir: PathBuf,
    pub blobs_dir: PathBuf,
    /// Restore into a non-empty data dir, moving what is there aside first.
    pub force: bool,
}

/// A finished restore.
#[derive(Debug, Serialize)]
pub struct Restored {
    pub data_dir: String,
    pub manifest: Manifest,
    pub store: SnapshotSummary,
    /// Where the backed-up config file was put, if the backup had one.
    pub config: Option<String>,
    /// Where the data dir's previous contents went (`--force`).
    pub moved_aside: Option<String>,
}

/// Restores `archive` as the data dir `opts.data_dir`.
pub fn restore(archive: &Path, unseal: &Unseal, opts: &RestoreOptions) -> anyhow::Result<Restored> {
    let target = &opts.data_dir;
    let existing = entries(target)?;
    if !existing.is_empty() && !opts.force {
        bail!(
            "{} is not empty: restore only fills an empty or new data dir; stop rackboot and pass --force \
             to move its contents aside (to {}.before-restore-<time>) first",
            target.display(),
            target.display()
        );
    }
    // Stage beside the target (one rename puts it in place), or inside it when it is a
    // mount point (a rename cannot cross file systems).
    let mount_point = is_mount_point(target)?;
    let parent = match target.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("."),
    };
    let staging = if mount_point {
        Staging::new(target, ".rackboot-restore")?
    } else {
        archive::create_private_dir_all(&parent)?;
        Staging::new(&parent, ".rackboot-restore")?
    };
    let (unpacked, store) = open_checked(archive, unseal, &staging.0)?;
    let root = staging.0.join("data");
    archive::create_private_dir_all(&root)?;
    let db = unpacked
        .files
        .get("store/rackboot.db")
        .context("the archive has no store snapshot")?;
    std::fs::rename(db, root.join("rackboot.db"))?;
    let images = root.join("images").join("sha256");
    archive::create_private_dir_all(&images)?;
    for b in &unpacked.manifest.blobs {
        let src = opts.blobs_dir.join("sha256").join(&b.sha256);
        let mut f = std::fs::File::open(&src).with_context(|| {
            format!(
                "blob {} is missing from {} (--blobs DIR if the backup's blobs are elsewhere)",
                b.sha256,
                opts.blobs_dir.display()
            )
        })?;
        let (sha, n) = archive::write_file(&images.join(&b.sha256), 0o644, &mut f)?;
        if sha != b.sha256 || n != b.size {
            bail!(
                "blob {} is damaged ({n} bytes, sha256 {sha})",
                src.display()
            );
        }
    }
    let mut config = None;
    for (path, file) in &unpacked.files {
        if let Some(name) = path.strip_prefix("config/") {
            let dir = root.join("restored-config");
            archive::create_private_dir_all(&dir)?;
            std::fs::rename(file, dir.join(name))?;
            config = Some(
                target
                    .join("restored-config")
                    .join(name)
                    .display()
                    .to_string(),
            );
        }
    }
    sync_tree(&root)?;

    let moved_aside = if mount_point {
        commit_inside(target, &root, &existing)?
    } else {
        commit_beside(target, &root, &existing)?
    };
    archive::sync_dir(target)?;
    archive::sync_dir(&parent)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o700))?;
    }
    tracing::info!(data_dir = %target.display(), created = %unpacked.manifest.created, "backup restored");
    Ok(Restored {
        data_dir: target.display().to_string(),
        manifest: unpacked.manifest,
        store,
        config,
        moved_aside: moved_aside.map(|p| p.display().to_string()),
    })
}

/// Unpacks into `staging` and checks the snapshot: the part `verify` and `restore` share.
fn open_checked(
    archive: &Path,
    unseal: &Unseal,
    staging: &Path,
) -> anyhow::Result<(Unpacked, SnapshotSummary)> {
    let unpacked = archive::unpack(archive, unseal, staging)?;
    let db = unpacked
        .files
        .get("store/rackboot.db")
        .context("the archive has no store snapshot (store/rackboot.db)")?;
    let store = snap::inspect(db).context("the archive's store snapshot")?;
    if store.schema_version > SCHEMA_VERSION {
        bail!(
            "the backup's store has schema version {}, newer than this rackboot understands ({SCHEMA_VERSION}): \
             restore it with rackboot {} or later",
            store.schema_version,
            unpacked.manifest.rackboot_version
        );
    }
    if store.schema_version != unpacked.manifest.schema_version {
        bail!(
            "the archive is inconsistent: its manifest says schema version {}, its store has {}",
            unpacked.manifest.schema_version,
            store.schema_version
        );
    }
    for b in &unpacked.manifest.blobs {
        if !is_sha256_hex(&b.sha256) {
            bail!(
                "the archive's manifest names a blob {:?}, not a SHA-256",
                b.sha256
            );
        }
    }
    for image in &store.images {
        if !unpacked
            .manifest
            .blobs
            .iter()
            .any(|b| b.sha256 == image.sha256)
        {
            bail!(
                "image {} refers to blob {}, which the archive's manifest does not list",
                image.name,
                image.sha256
            );
        }
    }
    Ok((unpacked, store))
}

/// The names in `dir` (none if it does not exist), leaving out `lost+found` and our staging.
fn entries(dir: &Path) -> anyhow::Result<Vec<std::ffi::OsString>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut out = Vec::new();
    for e in rd {
        let name = e?.file_name();
        let s = name.to_string_lossy();
        if s == "lost+found" || s.starts_with(".rackboot-restore") {
            continue;
        }
        out.push(name);
    }
    Ok(out)
}

fn is_mount_point(dir: &Path) -> anyhow::Result<bool> {
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(false);
    };
    let parent = dir.join("..");
    let pmeta =
        std::fs::metadata(&parent).with_context(|| format!("cannot stat {}", parent.display()))?;
    Ok(meta.dev() != pmeta.dev() || meta.ino() == pmeta.ino())
}

/// One rename puts the staged data dir in place (after moving a forced target aside).
fn commit_beside(
    target: &Path,
    root: &Path,
    existing: &[std::ffi::OsString],
) -> anyhow::Result<Option<PathBuf>> {
    let mut moved = None;
    if target.exists() {
        if existing.is_empty() {
            // Empty (or only lost+found): rename(2) replaces an empty directory.
            if target.join("lost+found").exists() {
                std::fs::remove_dir(target.join("lost+found")).ok();
            }
        } else {
            let aside = aside_name(target);
            std::fs::rename(target, &aside).with_context(|| {
                format!(
                    "cannot move {} aside to {}",
                    target.display(),
                    aside.display()
                )
            })?;
            moved = Some(aside);
        }
    }
    std::fs::rename(root, target)
        .with_context(|| format!("cannot move the restored data into {}", target.display()))?;
    Ok(moved)
}

/// Moves the staged entries into a mount point one by one, the store last: until it is in
/// place the data dir has no `rackboot.db` and `rackboot serve` would not see a half restore as
/// a store.
fn commit_inside(
    target: &Path,
    root: &Path,
    existing: &[std::ffi::OsString],
) -> anyhow::Result<Option<PathBuf>> {
    let mut moved = None;
    if !existing.is_empty() {
        let aside = target.join(format!(".before-restore-{}", stamp(crate::store::now_ms())));
        archive::create_private_dir_all(&aside)?;
        for name in existing {
            std::fs::rename(target.join(name), aside.join(name))?;
        }
        moved = Some(aside);
    }
    let mut names: Vec<_> = std::fs::read_dir(root)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort_by_key(|n| n == "rackboot.db");
    for name in names {
        std::fs::rename(root.join(&name), target.join(&name))?;
    }
    Ok(moved)
}

fn aside_name(target: &Path) -> PathBuf {
    let now = stamp(crate::store::now_ms());
    let mut s = target.as_os_str().to_owned();
    s.push(format!(".before-restore-{now}"));
    PathBuf::from(s)
}

/// fsyncs every directory under `root` (files were synced as they were written).
fn sync_tree(root: &Path) -> anyhow::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            }
        }
        archive::sync_dir(&dir)?;
    }
    Ok(())
}

/// A private (0700) directory removed with everything in it when dropped.
struct Staging(PathBuf);

impl Staging {
    fn new(parent: &Path, prefix: &str) -> anyhow::Result<Staging> {
        let path = parent.join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            crate::store::now_ms()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Staging(path))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
