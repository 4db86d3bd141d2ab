//! The image index: name → (sha256, size, created).
//!
//! Until the store module has its `images` table this is a directory of small JSON files
//! (`<data-dir>/images/names/<name>.json`), each written atomically (temp, fsync, rename,
//! fsync dir) so a second process (`rackboot image import` beside `rackboot serve`) sees
//! either the old or the new record, never a torn one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ImageError;

/// One named image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    /// Lowercase hex SHA-256 of the data.
    pub sha256: String,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub created: u64,
}

#[derive(Debug)]
pub(crate) struct Index {
    dir: PathBuf,
}

impl Index {
    pub(crate) fn open(root: &Path) -> Result<Self, ImageError> {
        let dir = root.join("names");
        std::fs::create_dir_all(&dir)
            .map_err(ImageError::io(format!("cannot create {}", dir.display())))?;
        Ok(Self { dir })
    }

    pub(crate) async fn put(&self, rec: &ImageRecord) -> Result<(), ImageError> {
        let dir = self.dir.clone();
        let rec = rec.clone();
        blocking(move || {
            let data = serde_json::to_vec(&rec).map_err(|e| ImageError::Index(e.to_string()))?;
            let mut rnd = [0u8; 8];
            aws_lc_rs::rand::fill(&mut rnd)
                .map_err(|_| ImageError::Index("no randomness".into()))?;
            let tmp = dir.join(format!(".tmp-{}", hex::encode(rnd)));
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&data)?;
                f.sync_all()?;
                std::fs::rename(&tmp, dir.join(format!("{}.json", rec.name)))?;
                std::fs::File::open(&dir)?.sync_all()
            };
            write().map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                ImageError::Io {
                    context: "cannot record the image name".into(),
                    source: e,
                }
            })
        })
        .await
    }

    pub(crate) async fn get(&self, name: &str) -> Result<Option<ImageRecord>, ImageError> {
        let path = self.dir.join(format!("{name}.json"));
        match tokio::fs::read(&path).await {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| ImageError::Index(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::Io {
                context: format!("cannot read {}", path.display()),
                source: e,
            }),
        }
    }

    pub(crate) async fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let dir = self.dir.clone();
        blocking(move || {
            let mut out = Vec::new();
            let entries = std::fs::read_dir(&dir)
                .map_err(ImageError::io(format!("cannot list {}", dir.display())))?;
            for entry in entries.flatten() {
                let fname = entry.file_name();
                let Some(fname) = fname.to_str() else { continue };
                if fname.starts_with(".tmp-") || !fname.ends_with(".json") {
                    continue;
                }
                let Ok(data) = std::fs::read(entry.path()) else { continue };
                match serde_json::from_slice::<ImageRecord>(&data) {
                    Ok(rec) => out.push(rec),
                    Err(e) => tracing::warn!(file = %fname, error = %e, "skipping an unreadable image record"),
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    pub(crate) async fn delete(&self, name: &str) -> Result<(), ImageError> {
        let path = self.dir.join(format!("{name}.json"));
        let dir = self.dir.clone();
        blocking(move || {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => {
                    return Err(ImageError::Io {
                        context: format!("cannot remove {}", path.display()),
                        source: e,
                    });
                }
            }
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(ImageError::io("cannot fsync the image index"))
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ImageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::Index(e.to_string()))?
}
