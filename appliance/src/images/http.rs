//! `/images/{name}` (open: firmware and iPXE fetch kernels and initrds) and the admin API
//! under `/rackboot/v1/images`.

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
use super::{ImageError, ImageRecord, ImageStore};
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
    // Verified once per process, then served from the shared read-only mapping.
    let blob = store.mapped(&rec).await?;
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
        let (from, to) = (usize::try_from(start), usize::try_from(start + len));
        let (Ok(from), Ok(to)) = (from, to) else {
            return Err(Problem::internal("range beyond the address space"));
        };
        // No copy: the body is a slice of the mapping, written straight to the socket.
        Body::from(Bytes::from_owner(blob).slice(from..to))
    };
    resp.body(body).map_err(Problem::internal)
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
