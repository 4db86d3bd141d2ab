//! Boot images: content-addressed storage (sha256) served at /images/NAME.
//!
//! Blobs live at `<data-dir>/images/sha256/<hex>`, written once (temp file in the same
//! directory, fsync, rename to the hash, fsync the directory) and never modified. A name maps
//! to a blob through the `images` table of the store (name → sha256, size, created).
//!
//! Serving opens and maps a blob read-only once per process ([`ImageStore::mapped`]) and
//! hashes the mapping; if it matches, plain-HTTP bodies are sent from the open file with
//! sendfile(2) (`http::zerocopy`: the kernel moves page-cache pages to the socket, no copy in
//! userspace and nothing in rackboot's RSS), and TLS bodies are slices of the mapping. Blobs
//! that fail verification are moved to `<data-dir>/images/corrupt/<hex>`, so every process sees
//! the image as corrupt (500) until it is imported again; a corrupt byte is never sent.
//!
//! The mapped pages are the kernel's page cache, shared and reclaimable, but while they are in
//! this process's page tables they count in its RSS. Every [`UNMAP_EVERY`] the mappings are
//! dropped from the page tables (`MADV_DONTNEED` on a read-only shared file mapping: the cache
//! keeps the pages, the next read faults them back in), so the verification and TLS bodies do
//! not leave an image's size in RSS.
//!
//! Owns: blobs under `images/sha256`, `images` table, `/images/*`, `/rackboot/v1/images`,
//! `rackboot image`. May call: `client`, `http`, `output`, `store`, `timeline`.

pub mod cli;
mod http;
mod range;

pub use crate::store::ImageRecord;
pub use http::{admin_router, public_router};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::store::{Store, StoreError};

/// Where the admin image routes live; uploads under it stream (no body limit, no request timeout
/// in the server loop; the upload handler enforces its own).
pub const ADMIN_PREFIX: &str = "/rackboot/v1/images/";

/// Read and write buffer size for image data: large reads keep syscalls and task hops per
/// byte low when a rack pulls the same kernel at once.
pub const CHUNK: usize = 256 * 1024;

/// How often (in bytes written) an import re-checks the data partition's headroom.
const HEADROOM_STEP: u64 = 4 * 1024 * 1024;

/// Default largest image accepted (uploads and imports).
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error("invalid image name {0:?}: use 1 to 128 of A-Z a-z 0-9 . _ - (no \"..\")")]
    BadName(String),
    #[error("no image named {0:?}")]
    NotFound(String),
    #[error(
        "image {name:?} is corrupt (its data no longer matches sha256 {sha256}); import it again"
    )]
    Corrupt { name: String, sha256: String },
    #[error("image is larger than the {0}-byte limit")]
    TooLarge(u64),
    #[error("image data has sha256 {actual}, expected {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("image data stream failed: {0}")]
    Stream(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("image index: {0}")]
    Index(String),
    /// The data partition is full, or the image would eat into the headroom kept for leases.
    #[error("{0}")]
    NoSpace(StoreError),
}

impl From<StoreError> for ImageError {
    fn from(e: StoreError) -> Self {
        match e {
            e @ (StoreError::Full { .. } | StoreError::Headroom { .. }) => Self::NoSpace(e),
            e => Self::Index(e.to_string()),
        }
    }
}

impl ImageError {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

/// Moves names from the JSON-file index of earlier versions (`images/names/*.json`) into the
/// store, then removes the files. A name already in the store wins.
async fn import_legacy_index(store: &Store, dir: &Path) -> Result<(), ImageError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // no legacy index
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json")
            && let Ok(data) = std::fs::read(&path)
        {
            match serde_json::from_slice::<ImageRecord>(&data) {
                Ok(rec) => {
                    let name = rec.name.clone();
                    store.put_image_if_absent(rec).await?;
                    tracing::info!(image = %name, "image name moved from the file index into the store");
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping an unreadable legacy image record");
                    continue;
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

/// Whether `name` is an acceptable image name: `[A-Za-z0-9._-]{1,128}`, not `.`, no `..`.
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name != "."
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The image store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    index: Store,
    max_bytes: u64,
    /// Blobs mapped and verified in this process, by sha256. One cell per blob, so a boot storm
    /// hashes a cold image once while the other requests wait for it.
    maps: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::OnceCell<Blob>>>>,
}

/// A verified blob: its open file (sent with sendfile) and a read-only mapping of it (sliced
/// into bodies where sendfile cannot be used); cheap to clone.
#[derive(Debug, Clone)]
pub struct Blob {
    map: Arc<Option<memmap2::Mmap>>,
    file: Arc<std::fs::File>,
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }
}

/// How often the image mappings leave the page tables (see the module docs).
const UNMAP_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

impl Blob {
    /// The blob's file, open for reading.
    pub fn file(&self) -> &Arc<std::fs::File> {
        &self.file
    }

    /// Drops this process's page-table entries for the mapping; the bytes stay in the page
    /// cache and come back on the next read.
    #[allow(unsafe_code)]
    fn release_pages(&self) {
        if let Some(map) = self.map.as_ref() {
            // SAFETY: `map` is a read-only shared mapping of an immutable file (see
            // `map_readonly`). MADV_DONTNEED on it only removes page-table entries: any later
            // access, including a send in progress on another thread, faults the same bytes
            // back in from the page cache. (memmap2 marks the advice unsafe because on a
            // private or anonymous mapping it discards data; this mapping has none to lose.)
            if let Err(e) = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) } {
                tracing::debug!(error = %e, "images: cannot release mapped pages");
            }
        }
    }
}

/// Releases the mapped images' pages every [`UNMAP_EVERY`] while the store lives.
async fn release_pages_periodically(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(UNMAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { break };
        let blobs: Vec<Blob> = inner
            .maps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|cell| cell.get().cloned())
            .collect();
        drop(inner);
        for blob in blobs {
            blob.release_pages();
        }
    }
}

/// The sha256 (hex) of `file`'s contents, read from the start through a 64 KiB buffer.
fn hash_file(file: &std::fs::File) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0u64;
    loop {
        let n = match file.read_at(&mut buf, at) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r?,
        };
        let Some(read) = buf.get(..n).filter(|r| !r.is_empty()) else {
            break;
        };
        ctx.update(read);
        at += n as u64;
    }
    Ok(hex::encode(ctx.finish()))
}

/// Maps `file` read-only.
#[allow(unsafe_code)]
fn map_readonly(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the mapping is only sound while nobody truncates or rewrites the file. Blobs are
    // content-addressed and immutable: written to a temp file, fsynced, renamed into place and
    // never opened for writing again; removal and re-import unlink or rename over the path,
    // which leaves this inode (and the mapping) intact. Only another process writing into the
    // data directory behind rackboot's back could break it.
    unsafe { memmap2::MmapOptions::new().map(file) }
}

impl ImageStore {
    /// Opens (creating if needed) the image blobs under `data_dir`, named through `store`.
    pub async fn open(store: Store, data_dir: &Path) -> Result<Self, ImageError> {
        Self::open_with_limit(store, data_dir, DEFAULT_MAX_IMAGE_BYTES).await
    }

    /// Like [`ImageStore::open`] with a custom largest image size.
    pub async fn open_with_limit(
        store: Store,
        data_dir: &Path,
        max_bytes: u64,
    ) -> Result<Self, ImageError> {
        let root = data_dir.join("images");
        for sub in ["sha256", "corrupt"] {
            std::fs::create_dir_all(root.join(sub)).map_err(ImageError::io(format!(
                "cannot create {}",
                root.join(sub).display()
            )))?;
        }
        import_legacy_index(&store, &root.join("names")).await?;
        let inner = Arc::new(Inner {
            root,
            index: store,
            max_bytes,
            maps: std::sync::Mutex::new(std::collections::HashMap::new()),
        });
        tokio::spawn(release_pages_periodically(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// The store that holds the image names.
    pub fn store(&self) -> &Store {
        &self.inner.index
    }

    /// The largest image this store accepts.
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// Imports the file at `path` as `name` (replacing an existing name), verifying it against
    /// `expected_sha256` if given. Durable when this returns.
    pub async fn import_file(
        &self,
        name: &str,
        path: &Path,
        expected_sha256: Option<&str>,
    ) -> Result<ImageRecord, ImageError> {
        check_name(name)?;
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(ImageError::io(format!("cannot open {}", path.display())))?;
        let stream = async_stream_of(&mut file);
        self.import_stream(name, stream, expected_sha256).await
    }

    /// Imports a byte stream as `name`. The data is hashed while it is written to a temp file;
    /// the temp file becomes the blob only if it is complete and (if given) matches
    /// `expected_sha256`.
    pub async fn import_stream<S, E>(
        &self,
        name: &str,
        stream: S,
        expected_sha256: Option<&str>,
    ) -> Result<ImageRecord, ImageError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        check_name(name)?;
        let expected = expected_sha256.map(str::to_ascii_lowercase);
        let dir = self.inner.root.join("sha256");
        let mut rnd = [0u8; 8];
        aws_lc_rs::rand::fill(&mut rnd).map_err(|_| ImageError::Stream("no randomness".into()))?;
        let tmp = dir.join(format!(".tmp-{}", hex::encode(rnd)));
        let result = self.write_temp(&tmp, stream).await;
        let (sha256, size) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        if let Some(expected) = expected.filter(|e| *e != sha256) {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(ImageError::DigestMismatch {
                expected,
                actual: sha256,
            });
        }
        let blob = dir.join(&sha256);
        // Rename even when the blob exists: an intact copy is replaced by identical bytes, a
        // damaged one is repaired. rename(2) is atomic, readers keep their open file.
        tokio::fs::rename(&tmp, &blob)
            .await
            .map_err(ImageError::io(format!(
                "cannot move the image into {}",
                blob.display()
            )))?;
        sync_dir(&dir).await?;
        let _ = tokio::fs::remove_file(self.inner.root.join("corrupt").join(&sha256)).await;
        let record = ImageRecord {
            name: name.to_owned(),
            sha256,
            size,
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        self.inner.index.put_image(record.clone()).await?;
        tracing::info!(image = %name, sha256 = %record.sha256, size, "image imported");
        Ok(record)
    }

    /// The record of `name`, if there is one.
    pub async fn get(&self, name: &str) -> Result<Option<ImageRecord>, ImageError> {
        check_name(name)?;
        Ok(self.inner.index.get_image(name.to_owned()).await?)
    }

    /// Every image, by name.
    pub async fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self.inner.index.list_images().await?)
    }

    /// Removes `name`; its blob goes too when no other name uses it. `false` if there was none.
    pub async fn remove(&self, name: &str) -> Result<bool, ImageError> {
        check_name(name)?;
        let Some((rec, shared)) = self.inner.index.delete_image(name.to_owned()).await? else {
            return Ok(false);
        };
        if !shared {
            self.forget(&rec.sha256);
            let _ = tokio::fs::remove_file(self.blob_path(&rec.sha256)).await;
            let _ = tokio::fs::remove_file(self.inner.root.join("corrupt").join(&rec.sha256)).await;
            let _ = sync_dir(&self.inner.root.join("sha256")).await;
        }
        tracing::info!(image = %name, sha256 = %rec.sha256, "image removed");
        Ok(true)
    }

    /// Path of the blob with this hex digest.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.inner.root.join("sha256").join(sha256)
    }

    /// The blob of `rec`, mapped and verified against its sha256 on first use in this process.
    /// A blob that is missing, has the wrong size or the wrong hash is quarantined and the
    /// error is [`ImageError::Corrupt`].
    pub async fn mapped(&self, rec: &ImageRecord) -> Result<Blob, ImageError> {
        let cell = self
            .inner
            .maps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(rec.sha256.clone())
            .or_default()
            .clone();
        let blob = cell
            .get_or_try_init(|| {
                let (store, rec) = (self.clone(), rec.clone());
                async move {
                    tokio::task::spawn_blocking(move || store.map_and_verify(&rec))
                        .await
                        .map_err(|e| ImageError::Stream(e.to_string()))?
                }
            })
            .await?;
        Ok(blob.clone())
    }

    fn map_and_verify(&self, rec: &ImageRecord) -> Result<Blob, ImageError> {
        let corrupt = || ImageError::Corrupt {
            name: rec.name.clone(),
            sha256: rec.sha256.clone(),
        };
        let path = self.blob_path(&rec.sha256);
        let file = std::fs::File::open(&path).map_err(|e| {
            tracing::error!(image = %rec.name, path = %path.display(), error = %e, "image blob missing");
            corrupt()
        })?;
        let on_disk = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        if on_disk != rec.size {
            let why = format!("size {on_disk}, expected {}", rec.size);
            self.quarantine(&rec.name, &rec.sha256, &why);
            return Err(corrupt());
        }
        // An empty file cannot be mapped (and needs no mapping).
        let map = if on_disk == 0 {
            None
        } else {
            Some(
                map_readonly(&file)
                    .map_err(ImageError::io(format!("cannot map {}", path.display())))?,
            )
        };
        let started = std::time::Instant::now();
        // Hashed through a small buffer, not the mapping: touching every mapped page would put
        // the whole image in RSS until the next release.
        let actual =
            hash_file(&file).map_err(ImageError::io(format!("cannot read {}", path.display())))?;
        if actual != rec.sha256 {
            self.quarantine(&rec.name, &rec.sha256, &actual);
            return Err(corrupt());
        }
        tracing::debug!(image = %rec.name, bytes = rec.size, ms = started.elapsed().as_millis() as u64, "image verified and mapped");
        Ok(Blob {
            map: Arc::new(map),
            file: Arc::new(file),
        })
    }

    fn forget(&self, sha256: &str) {
        self.inner
            .maps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sha256);
    }

    /// Whether the blob was quarantined after failing verification.
    pub fn is_corrupt(&self, sha256: &str) -> bool {
        self.inner.root.join("corrupt").join(sha256).exists()
    }

    /// Moves a blob that failed verification out of the way (every process then answers 500
    /// for the images using it until it is imported again).
    pub fn quarantine(&self, name: &str, sha256: &str, actual: &str) {
        tracing::error!(image = %name, sha256 = %sha256, actual = %actual, "image data does not match its sha256; marking it corrupt");
        self.forget(sha256);
        let from = self.blob_path(sha256);
        let to = self.inner.root.join("corrupt").join(sha256);
        if let Err(err) = std::fs::rename(&from, &to) {
            tracing::error!(error = %err, path = %from.display(), "cannot quarantine the corrupt blob");
        }
    }

    async fn write_temp<S, E>(&self, tmp: &Path, stream: S) -> Result<(String, u64), ImageError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let mut out = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .await
            .map_err(ImageError::io(format!("cannot create {}", tmp.display())))?;
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut size: u64 = 0;
        // Checked before the first byte and then every HEADROOM_STEP: an import must leave
        // `store.min_free` on the data partition for leases and inventory changes.
        let mut checked_at: u64 = 0;
        self.inner.index.check_headroom(0)?;
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ImageError::Stream(e.to_string()))?;
            size = size.saturating_add(chunk.len() as u64);
            if size > self.inner.max_bytes {
                return Err(ImageError::TooLarge(self.inner.max_bytes));
            }
            if size - checked_at >= HEADROOM_STEP {
                // What was written is already off the free count.
                self.inner.index.check_headroom(0)?;
                checked_at = size;
            }
            ctx.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| self.write_error(e, "cannot write the image"))?;
        }
        out.flush()
            .await
            .map_err(|e| self.write_error(e, "cannot write the image"))?;
        out.sync_all()
            .await
            .map_err(|e| self.write_error(e, "cannot fsync the image"))?;
        Ok((hex::encode(ctx.finish().as_ref()), size))
    }
}

impl ImageStore {
    fn write_error(&self, e: std::io::Error, context: &str) -> ImageError {
        if e.raw_os_error() == Some(nix::libc::ENOSPC) {
            ImageError::NoSpace(self.inner.index.full_error())
        } else {
            ImageError::Io {
                context: context.to_owned(),
                source: e,
            }
        }
    }
}

fn check_name(name: &str) -> Result<(), ImageError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ImageError::BadName(name.chars().take(200).collect()))
    }
}

/// A stream of `CHUNK`-sized reads from `file`.
fn async_stream_of(
    file: &mut tokio::fs::File,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + '_ {
    futures_util::stream::unfold(file, |file| async move {
        let mut buf = vec![0u8; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}

async fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(|e| ImageError::Stream(e.to_string()))?
        .map_err(ImageError::io("cannot fsync the image directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "vmlinuz",
            "initrd.img-6.1",
            "a",
            "A_b-c.d",
            &"x".repeat(128),
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a..b",
            "../etc",
            "a/b",
            "a b",
            "é",
            "a\0",
            &"x".repeat(129),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    /// Resident pages of the mapping that starts at `addr`, from /proc/self/smaps (the
    /// process's page tables, not the page cache).
    fn resident_kib(addr: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let start = format!("{addr:x}-");
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
        assert!(lines.next().is_some(), "no mapping at {addr:x}");
        lines
            .find_map(|l| l.strip_prefix("Rss:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    /// A mapped image leaves the process's page tables (its RSS) on release, and the bytes
    /// read afterwards are still the image's.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn released_pages_leave_the_rss_and_the_bytes_stay_right() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        let path = dir.path().join("blob");
        std::fs::write(&path, &body).unwrap();
        // A blob of its own: no store, so no periodic release races the measurements.
        let file = std::fs::File::open(&path).unwrap();
        let blob = Blob {
            map: Arc::new(Some(map_readonly(&file).unwrap())),
            file: Arc::new(file),
        };
        let addr = blob.as_ref().as_ptr() as usize;
        assert!(blob.as_ref() == body.as_slice());
        assert!(resident_kib(addr) >= 4096, "{}", resident_kib(addr));
        blob.release_pages();
        assert_eq!(resident_kib(addr), 0);
        assert!(
            blob.as_ref() == body.as_slice(),
            "the bytes after a release"
        );
        assert!(resident_kib(addr) >= 4096);
    }

    /// The store releases the pages of the images it serves on its own.
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn the_store_releases_served_pages_periodically() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let images = ImageStore::open(store, dir.path()).await.unwrap();
        let src = dir.path().join("initrd");
        std::fs::write(&src, vec![7u8; 1 << 20]).unwrap();
        let rec = images.import_file("initrd", &src, None).await.unwrap();
        let blob = images.mapped(&rec).await.unwrap();
        let addr = blob.as_ref().as_ptr() as usize;
        assert!(blob.as_ref().iter().all(|b| *b == 7));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while resident_kib(addr) > 0 {
            assert!(std::time::Instant::now() < deadline, "never released");
            tokio::time::sleep(UNMAP_EVERY / 5).await;
        }
    }
}
