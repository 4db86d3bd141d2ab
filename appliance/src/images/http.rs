//! `/images/{name}` (open: firmware and iPXE fetch kernels and initrds) and the admin API
//! under `/rackboot/v1/images`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::range::{self, RangeReq};
use super::{CHUNK, ImageError, ImageRecord, ImageStore};
use crate::http::{Json, Problem};

/// `GET`/`HEAD /images/{name}`: open route, Range and conditional requests, verified on read.
pub fn public_router(images: ImageStore) -> Router {
    Router::new()
        .route("/images/{name}", get(serve_image))
        .with_state(images)
}

/// The admin API under `/rackboot/v1/images` (wrap it with `auth::require(.., "images")`):
/// `GET` list, `GET|DELETE /{name}`, `PUT /{name}[?sha256=HEX]` streaming upload.
pub fn admin_router(images: ImageStore) -> Router {
    Router::new()
        .route("/rackboot/v1/images", get(list_images))
        .route(
            "/rackboot/v1/images/{name}",
            get(show_image).put(upload_image).delete(delete_image),
        )
        .with_state(images)
}

/// An image as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageView {
    pub name: String,
    pub sha256: String,
    pub size: u64,
    /// RFC 3339.
    pub created: String,
    /// Where nodes fetch it (relative to the appliance's base URL).
    pub url: String,
    /// Whether the data failed verification and needs a re-import.
    pub corrupt: bool,
}

/// An upload stalls out after this long without data.
const UPLOAD_IDLE: Duration = Duration::from_secs(60);

impl ImageView {
    fn new(rec: ImageRecord, store: &ImageStore) -> Self {
        let created =
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(rec.created))
                .to_string();
        Self {
            url: format!("/images/{}", rec.name),
            corrupt: store.is_corrupt(&rec.sha256),
            name: rec.name,
            sha256: rec.sha256,
            size: rec.size,
            created,
        }
    }
}

impl From<ImageError> for Problem {
    fn from(err: ImageError) -> Self {
        match &err {
            ImageError::BadName(_) => Problem::bad_request(err.to_string()),
            ImageError::NotFound(_) => Problem::not_found(err.to_string()),
            ImageError::Corrupt { .. } => {
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
            }
            ImageError::TooLarge(_) => Problem::payload_too_large(err.to_string()),
            ImageError::DigestMismatch { .. } => Problem::unprocessable(err.to_string()),
            ImageError::Stream(_) => Problem::bad_request(err.to_string()),
            ImageError::Io { .. } | ImageError::Index(_) => Problem::internal(err),
        }
    }
}

async fn serve_image(
    State(store): State<ImageStore>,
    method: Method,
    name: Result<UrlPath<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let UrlPath(name) = name.map_err(|e| Problem::bad_request(e.body_text()))?;
    let rec = store
        .get(&name)
        .await?
        .ok_or_else(|| ImageError::NotFound(name.clone()))?;
    let corrupt = || ImageError::Corrupt {
        name: rec.name.clone(),
        sha256: rec.sha256.clone(),
    };
    if store.is_corrupt(&rec.sha256) {
        return Err(corrupt().into());
    }
    let etag = format!("\"sha256:{}\"", rec.sha256);
    if let Some(inm) = headers.get(header::IF_NONE_MATCH)
        && etag_matches(inm.as_bytes(), &etag)
    {
        return Ok(not_modified(&etag));
    }
    let path = store.blob_path(&rec.sha256);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(image = %rec.name, path = %path.display(), error = %e, "image blob missing");
            return Err(corrupt().into());
        }
    };
    let on_disk = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    if on_disk != rec.size {
        store.quarantine(
            &rec.name,
            &rec.sha256,
            &format!("size {on_disk}, expected {}", rec.size),
        );
        return Err(corrupt().into());
    }
    // RFC 9110 §13.1.5: a Range with a stale If-Range validator gets the whole representation.
    let range_header = match headers.get(header::IF_RANGE) {
        Some(v) if v.as_bytes() != etag.as_bytes() => None,
        _ => headers.get(header::RANGE).map(HeaderValue::as_bytes),
    };
    let range = range::parse(range_header, rec.size);

    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag)
        // A name can be re-imported with new content: caches must revalidate (cheap: 304).
        .header(header::CACHE_CONTROL, "no-cache");
    let (status, start, len) = match range {
        RangeReq::Full => (StatusCode::OK, 0, rec.size),
        RangeReq::Partial { start, end } => {
            resp = resp.header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{}", rec.size),
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeReq::Unsatisfiable => {
            let mut p = Problem::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("image {:?} has {} bytes", rec.name, rec.size),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", rec.size)) {
                p.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(p);
        }
    };
    resp = resp.status(status).header(header::CONTENT_LENGTH, len);
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        // Only a full read can be verified; ranges are served as stored.
        let verify =
            (status == StatusCode::OK && !store.is_verified(&rec.sha256)).then(|| Verify {
                store: store.clone(),
                name: rec.name.clone(),
                sha256: rec.sha256.clone(),
                ctx: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
            });
        Body::from_stream(read_blob(Arc::new(file), start, len, verify))
    };
    resp.body(body).map_err(Problem::internal)
}

struct Verify {
    store: ImageStore,
    name: String,
    sha256: String,
    ctx: aws_lc_rs::digest::Context,
}

struct ReadState {
    file: Arc<File>,
    offset: u64,
    remaining: u64,
    verify: Option<Verify>,
}

/// Streams `len` bytes from `offset` in `CHUNK` reads (positional reads on a blocking thread).
/// With `verify`, the last chunk is released only after the digest matched; on a mismatch the
/// stream fails instead, so the client never receives a complete (corrupt) body and hyper
/// aborts the connection.
fn read_blob(
    file: Arc<File>,
    offset: u64,
    len: u64,
    verify: Option<Verify>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let state = ReadState {
        file,
        offset,
        remaining: len,
        verify,
    };
    futures_util::stream::unfold(Some(state), |state| async move {
        let mut st = state?;
        if st.remaining == 0 {
            return None;
        }
        let want = usize::try_from(st.remaining.min(CHUNK as u64)).unwrap_or(CHUNK);
        let (file, at) = (st.file.clone(), st.offset);
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; want];
            let n = file.read_at(&mut buf, at)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>(buf)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let buf = match read {
            Ok(b) if b.is_empty() => {
                // Shorter than recorded: the blob was truncated under us.
                if let Some(v) = st.verify.take() {
                    v.store.quarantine(&v.name, &v.sha256, "truncated");
                }
                return Some((Err(std::io::Error::other("image blob truncated")), None));
            }
            Ok(b) => b,
            Err(e) => return Some((Err(e), None)),
        };
        st.offset = st.offset.saturating_add(buf.len() as u64);
        st.remaining = st.remaining.saturating_sub(buf.len() as u64);
        if let Some(v) = st.verify.as_mut() {
            v.ctx.update(&buf);
        }
        if st.remaining == 0
            && let Some(v) = st.verify.take()
        {
            let actual = hex::encode(v.ctx.finish().as_ref());
            if actual == v.sha256 {
                v.store.mark_verified(&v.sha256);
            } else {
                v.store.quarantine(&v.name, &v.sha256, &actual);
                return Some((
                    Err(std::io::Error::other(
                        "image data does not match its sha256",
                    )),
                    None,
                ));
            }
        }
        Some((Ok(Bytes::from(buf)), Some(st)))
    })
}

/// RFC 9110 §13.1.2: If-None-Match uses the weak comparison; `*` matches any.
fn etag_matches(header: &[u8], etag: &str) -> bool {
    let Ok(h) = std::str::from_utf8(header) else {
        return false;
    };
    h.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

fn not_modified(etag: &str) -> Response {
    let mut resp = StatusCode::NOT_MODIFIED.into_response();
    if let Ok(v) = HeaderValue::from_str(etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

async fn list_images(State(store): State<ImageStore>) -> Result<Json<Vec<ImageView>>, Problem> {
    let list = store.list().await?;
    Ok(Json(
        list.into_iter()
            .map(|r| ImageView::new(r, &store))
            .collect(),
    ))
}

async fn show_image(
    State(store): State<ImageStore>,
    name: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<ImageView>, Problem> {
    let UrlPath(name) = name.map_err(|e| Problem::bad_request(e.body_text()))?;
    let rec = store.get(&name).await?.ok_or(ImageError::NotFound(name))?;
    Ok(Json(ImageView::new(rec, &store)))
}

async fn delete_image(
    State(store): State<ImageStore>,
    name: Result<UrlPath<String>, PathRejection>,
) -> Result<StatusCode, Problem> {
    let UrlPath(name) = name.map_err(|e| Problem::bad_request(e.body_text()))?;
    if store.remove(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ImageError::NotFound(name).into())
    }
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    sha256: Option<String>,
}

async fn upload_image(
    State(store): State<ImageStore>,
    name: Result<UrlPath<String>, PathRejection>,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let UrlPath(name) = name.map_err(|e| Problem::bad_request(e.body_text()))?;
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    if let Some(s) = &query.sha256
        && (s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(Problem::bad_request("sha256 must be 64 hex digits"));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > store.max_bytes()) {
        return Err(ImageError::TooLarge(store.max_bytes()).into());
    }
    let existed = store.get(&name).await?.is_some();
    let stream = idle_limited(body.into_data_stream());
    let rec = store
        .import_stream(&name, stream, query.sha256.as_deref())
        .await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let location = format!("/rackboot/v1/images/{}", rec.name);
    let mut resp = (status, Json(ImageView::new(rec, &store))).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// Ends an upload whose client stops sending for `UPLOAD_IDLE` (the server loop exempts uploads
/// from the request timeout, so this is their bound).
fn idle_limited(
    stream: axum::body::BodyDataStream,
) -> impl futures_util::Stream<Item = Result<Bytes, String>> {
    futures_util::stream::unfold(Some(stream), |s| async move {
        let mut s = s?;
        match tokio::time::timeout(UPLOAD_IDLE, s.next()).await {
            Err(_) => Some((Err(format!("no data for {}s", UPLOAD_IDLE.as_secs())), None)),
            Ok(None) => None,
            Ok(Some(Ok(b))) => Some((Ok(b), Some(s))),
            Ok(Some(Err(e))) => Some((Err(e.to_string()), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match() {
        let e = "\"sha256:ab\"";
        assert!(etag_matches(b"\"sha256:ab\"", e));
        assert!(etag_matches(b"W/\"sha256:ab\"", e));
        assert!(etag_matches(b"\"x\", \"sha256:ab\"", e));
        assert!(etag_matches(b"*", e));
        assert!(!etag_matches(b"\"sha256:ac\"", e));
        assert!(!etag_matches(b"sha256:ab", e));
    }
}
