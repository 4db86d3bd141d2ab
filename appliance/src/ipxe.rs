//! The iPXE binaries directory (`--ipxe-dir`): the TFTP root, and `/ipxe/NAME` over HTTP for
//! UEFI HTTP Boot clients (which fetch the iPXE EFI binary by URL instead of TFTP).
//!
//! Owns: the iPXE directory, `/ipxe/*`. May call: `http`.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::io::ReaderStream;

use crate::http::Problem;

/// The directory iPXE binaries are served from.
#[derive(Debug, Clone)]
pub struct IpxeDir {
    root: PathBuf,
}

impl IpxeDir {
    /// Opens `root`; warns (does not fail) about missing default binaries, so a site that only
    /// boots UEFI can run without the BIOS file.
    pub fn open(root: &Path, expected: &[&str]) -> anyhow::Result<Self> {
        let meta = std::fs::metadata(root).map_err(|e| {
            anyhow::anyhow!(
                "iPXE directory {} is not readable: {e} (--ipxe-dir; on Debian `apt install ipxe` \
                 provides /usr/lib/ipxe)",
                root.display()
            )
        })?;
        if !meta.is_dir() {
            anyhow::bail!("--ipxe-dir {} is not a directory", root.display());
        }
        for name in expected {
            if !root.join(name).is_file() {
                tracing::warn!(file = %name, dir = %root.display(), "boot file missing from the iPXE directory; clients asking for it get 'file not found'");
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Resolves a normalised relative path (no `..`, no leading `/`; callers normalise first)
    /// inside the root, refusing anything that escapes it through symlinks.
    pub fn resolve(&self, relative: &str) -> Option<PathBuf> {
        let candidate = self.root.join(relative);
        let real = candidate.canonicalize().ok()?;
        let root = self.root.canonicalize().ok()?;
        (real.starts_with(&root) && real.is_file()).then_some(real)
    }

    /// `GET`/`HEAD /ipxe/{name}`: open, like the TFTP service.
    pub fn router(self) -> Router {
        Router::new()
            .route("/ipxe/{name}", get(serve_file))
            .with_state(self)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

async fn serve_file(
    State(dir): State<IpxeDir>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, Problem> {
    if !valid_name(&name) {
        return Err(Problem::bad_request(format!(
            "invalid iPXE file name {name:?}"
        )));
    }
    let Some(path) = dir.resolve(&name) else {
        return Err(Problem::not_found(format!(
            "no iPXE binary named {name:?} in {}",
            dir.root.display()
        )));
    };
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(Problem::internal)?;
    let len = file.metadata().await.map_err(Problem::internal)?.len();
    let mut resp = Body::from_stream(ReaderStream::with_capacity(file, 64 * 1024)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/efi"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    #[tokio::test]
    async fn serves_files_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("snponly.efi"), b"MZ-efi-image").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link.efi"))
            .unwrap();
        let app = IpxeDir::open(dir.path(), &["snponly.efi", "undionly.kpxe"])
            .unwrap()
            .router();

        let resp = app
            .clone()
            .oneshot(
                Request::get("/ipxe/snponly.efi")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "12");
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"MZ-efi-image");

        for (uri, want) in [
            ("/ipxe/undionly.kpxe", StatusCode::NOT_FOUND),
            ("/ipxe/link.efi", StatusCode::NOT_FOUND),
            ("/ipxe/..", StatusCode::BAD_REQUEST),
            ("/ipxe/%2e%2e%2fetc", StatusCode::BAD_REQUEST),
        ] {
            let resp = app
                .clone()
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.status(), want, "{uri}");
            assert_eq!(
                resp.headers()[header::CONTENT_TYPE],
                "application/problem+json"
            );
        }
    }

    #[test]
    fn missing_directory_names_the_flag() {
        let err = IpxeDir::open(Path::new("/nonexistent/ipxe"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--ipxe-dir"), "{err}");
    }
}
