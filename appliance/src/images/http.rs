//! `/images/{name}` (open: firmware and iPXE fetch kernels and initrds) and the admin API
//! under `/rackboot/v1/images`.

use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Extension, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::range::{self, RangeReq};
use super::{ImageError, ImageRecord, ImageStore};
use crate::http::zerocopy::FileSender;
use crate::http::{Json, Problem};
use crate::timeline::{Observers, Subject, stage};

#[derive(Clone)]
struct Public {
    images: ImageStore,
    obs: Option<Observers>,
}

/// `GET`/`HEAD /images/{name}`: open route, Range and conditional requests, verified on read.
/// With `obs`, completed and failed downloads are counted and put on the boot timeline.
pub fn public_router(images: ImageStore, obs: Option<Observers>) -> Router {
    Router::new()
        .route("/images/{name}", get(serve_image))
        .with_state(Public { images, obs })
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
            ImageError::NoSpace(_) => Problem::insufficient_storage(err.to_string()),
        }
    }
}

async fn serve_image(
    State(public): State<Public>,
    method: Method,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    name: Result<UrlPath<String>, PathRejection>,
    files: Option<Extension<FileSender>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let UrlPath(name) = name.map_err(|e| Problem::bad_request(e.body_text()))?;
    let peer_ip = match peer.ip() {
        std::net::IpAddr::V4(v4) => Some(v4),
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    let files = files.map(|Extension(f)| f);
    let result = serve_named(&public.images, &method, &name, &headers, files.as_ref()).await;
    let Some(obs) = public.obs else {
        return result.map(|(resp, _)| resp);
    };
    match result {
        Ok((resp, Some(len))) => {
            let (parts, body) = resp.into_parts();
            let done = Completion {
                obs,
                store: public.images.store().clone(),
                name,
                peer: peer_ip,
                started: std::time::Instant::now(),
            };
            Ok(Response::from_parts(
                parts,
                Body::new(Tracked::new(body, len, done)),
            ))
        }
        Ok((resp, None)) => Ok(resp),
        Err(problem) => {
            if let Some(ip) = peer_ip {
                obs.timeline.record(
                    Subject::Ip(ip),
                    stage::IMAGE_ERROR,
                    false,
                    serde_json::json!({ "image": name, "status": problem.status, "error": problem.detail }),
                );
            }
            Err(problem)
        }
    }
}

/// Serves `name`; the length is `Some` for a body that is being sent (GET 200/206).
async fn serve_named(
    store: &ImageStore,
    method: &Method,
    name: &str,
    headers: &HeaderMap,
    files: Option<&FileSender>,
) -> Result<(Response, Option<u64>), Problem> {
    let rec = store
        .get(name)
        .await?
        .ok_or_else(|| ImageError::NotFound(name.to_owned()))?;
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
        return Ok((not_modified(&etag), None));
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
            return Ok((p, None));
        }
    };
    resp = resp.status(status).header(header::CONTENT_LENGTH, len);
    if *method == Method::HEAD {
        return Ok((resp.body(Body::empty()).map_err(Problem::internal)?, None));
    }
    let (from, to) = (usize::try_from(start), usize::try_from(start + len));
    let (Ok(from), Ok(to)) = (from, to) else {
        return Err(Problem::internal("range beyond the address space"));
    };
    // Plain HTTP: the kernel sends the file from the page cache (http::zerocopy).
    if let Some(files) = files {
        let body = Body::new(files.body(blob.file().clone(), start, len));
        return Ok((resp.body(body).map_err(Problem::internal)?, Some(len)));
    }
    // TLS: slices of the mapping, copied into the TLS stream. Slicing it into chunks lets the
    // end of the body mean "sent", not "queued".
    let whole = Bytes::from_owner(blob).slice(from..to);
    let chunks = (0..whole.len())
        .step_by(BODY_CHUNK)
        .map(move |at| {
            Ok::<_, std::convert::Infallible>(whole.slice(at..(at + BODY_CHUNK).min(whole.len())))
        })
        .collect::<Vec<_>>();
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    Ok((resp.body(body).map_err(Problem::internal)?, Some(len)))
}

/// Size of the slices a response body is handed to hyper in.
const BODY_CHUNK: usize = 1024 * 1024;

/// Reports a download when its body ends (complete) or is dropped early (aborted).
struct Completion {
    obs: Observers,
    store: crate::store::Store,
    name: String,
    peer: Option<std::net::Ipv4Addr>,
    started: std::time::Instant,
}

impl Completion {
    fn finish(self, sent: u64, total: u64) {
        let complete = sent >= total;
        self.obs.metrics.image_bytes(&self.name, sent);
        let Some(ip) = self.peer else { return };
        let duration_ms = self.started.elapsed().as_millis() as u64;
        // Which role the image plays for this node (kernel or initrd) comes from its boot
        // parameters; resolved off the request path.
        tokio::spawn(async move {
            let mac = self.store.mac_for_ip(ip).await.ok().flatten();
            let bp = match mac {
                Some(m) => self
                    .store
                    .boot_parameters_for(Some(m), None, None)
                    .await
                    .ok()
                    .flatten(),
                None => None,
            };
            let suffix = format!("/images/{}", self.name);
            let role = match bp {
                Some(b) if b.kernel.ends_with(&suffix) => stage::KERNEL,
                Some(b) if b.initrd.ends_with(&suffix) => stage::INITRD,
                _ => stage::IMAGE,
            };
            let (st, ok) = if complete {
                (role, true)
            } else {
                (stage::IMAGE_ERROR, false)
            };
            let mut detail = serde_json::json!({
                "image": self.name, "bytes": sent, "size": total, "duration_ms": duration_ms,
            });
            if !complete && let Some(o) = detail.as_object_mut() {
                o.insert("error".into(), "download aborted before the end".into());
            }
            self.obs.timeline.record(Subject::Ip(ip), st, ok, detail);
        });
    }
}

/// A response body that counts what hyper takes and reports once at the end.
struct Tracked {
    inner: Body,
    sent: u64,
    total: u64,
    done: Option<Completion>,
}

impl Tracked {
    fn new(inner: Body, total: u64, done: Completion) -> Self {
        Self {
            inner,
            sent: 0,
            total,
            done: Some(done),
        }
    }
}

impl axum::body::HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                self.sent = self.sent.saturating_add(n);
            }
            std::task::Poll::Ready(None) => {
                let (sent, total) = (self.sent, self.total);
                if let Some(done) = self.done.take() {
                    done.finish(sent, total);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done.finish(self.sent, self.total);
        }
    }
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
