//! Boot images: content-addressed storage (sha256) served at /images/NAME.
//!
//! Blobs live at `<data-dir>/images/sha256/<hex>`, written once (temp file in the same
//! directory, fsync, rename to the hash, fsync the directory) and never modified. A name maps
//! to a blob through the index (name → sha256, size, created). Blobs that fail verification on
//! read are moved to `<data-dir>/images/corrupt/<hex>`, so every process sees the image as
//! corrupt (500) until it is imported again.

pub mod cli;
mod http;
mod index;
mod range;

pub use http::{admin_router, public_router};
pub use index::ImageRecord;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use index::Index;

/// Where the admin image routes live; uploads under it stream (no body limit, no request timeout
/// in the server loop; the upload handler enforces its own).
pub const ADMIN_PREFIX: &str = "/rackboot/v1/images/";

/// Read and write buffer size for image data: large reads keep syscalls and task hops per
/// byte low when a rack pulls the same kernel at once.
pub const CHUNK: usize = 256 * 1024;

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
}

impl ImageError {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
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
    index: Index,
    max_bytes: u64,
    /// Blobs whose whole content matched their hash since this process started. Later full
    /// reads skip the digest: hashing every download of a 64 MiB initrd during a boot storm
    /// costs more CPU than sending it. Import verifies too, and a restart verifies again.
    verified: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl ImageStore {
    /// Opens (creating if needed) the image store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, ImageError> {
        Self::open_with_limit(data_dir, DEFAULT_MAX_IMAGE_BYTES)
    }

    /// Like [`ImageStore::open`] with a custom largest image size.
    pub fn open_with_limit(data_dir: &Path, max_bytes: u64) -> Result<Self, ImageError> {
        let root = data_dir.join("images");
        for sub in ["sha256", "corrupt"] {
            std::fs::create_dir_all(root.join(sub)).map_err(ImageError::io(format!(
                "cannot create {}",
                root.join(sub).display()
            )))?;
        }
        let index = Index::open(&root)?;
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                index,
                max_bytes,
                verified: std::sync::Mutex::new(std::collections::HashSet::new()),
            }),
        })
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
        self.inner.index.put(&record).await?;
        tracing::info!(image = %name, sha256 = %record.sha256, size, "image imported");
        Ok(record)
    }

    /// The record of `name`, if there is one.
    pub async fn get(&self, name: &str) -> Result<Option<ImageRecord>, ImageError> {
        check_name(name)?;
        self.inner.index.get(name).await
    }

    /// Every image, by name.
    pub async fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        self.inner.index.list().await
    }

    /// Removes `name`; its blob goes too when no other name uses it. `false` if there was none.
    pub async fn remove(&self, name: &str) -> Result<bool, ImageError> {
        check_name(name)?;
        let Some(rec) = self.inner.index.get(name).await? else {
            return Ok(false);
        };
        self.inner.index.delete(name).await?;
        let shared = self
            .inner
            .index
            .list()
            .await?
            .iter()
            .any(|r| r.sha256 == rec.sha256);
        if !shared {
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

    /// Whether a full read of this blob already matched its hash in this process.
    pub fn is_verified(&self, sha256: &str) -> bool {
        self.inner
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(sha256)
    }

    /// Records that a full read matched the hash.
    pub fn mark_verified(&self, sha256: &str) {
        self.inner
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sha256.to_owned());
    }

    /// Whether the blob was quarantined after failing verification.
    pub fn is_corrupt(&self, sha256: &str) -> bool {
        self.inner.root.join("corrupt").join(sha256).exists()
    }

    /// Moves a blob that failed verification out of the way (every process then answers 500
    /// for the images using it until it is imported again).
    pub fn quarantine(&self, name: &str, sha256: &str, actual: &str) {
        tracing::error!(image = %name, sha256 = %sha256, actual = %actual, "image data does not match its sha256; marking it corrupt");
        self.inner
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sha256);
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
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ImageError::Stream(e.to_string()))?;
            size = size.saturating_add(chunk.len() as u64);
            if size > self.inner.max_bytes {
                return Err(ImageError::TooLarge(self.inner.max_bytes));
            }
            ctx.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(ImageError::io("cannot write the image"))?;
        }
        out.flush()
            .await
            .map_err(ImageError::io("cannot write the image"))?;
        out.sync_all()
            .await
            .map_err(ImageError::io("cannot fsync the image"))?;
        Ok((hex::encode(ctx.finish().as_ref()), size))
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
}
