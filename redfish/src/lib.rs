//! A small async Redfish client for BMC discovery and control.
//!
//! - **Auth**: a SessionService session (`X-Auth-Token`), falling back to HTTP basic auth
//!   when the BMC has no session service; the session is deleted on [`Bmc::logout`].
//! - **TLS** ([`TlsPolicy`]): a CA bundle; or pin-on-first-use of the BMC's certificate
//!   (SHA-256 of the leaf, recorded by the caller and enforced on every later connection);
//!   or, as an explicit and logged opt-in, no verification.
//! - **Tolerant parsing**: BMCs differ, so responses are `serde_json::Value`s read through
//!   [`Res`] accessors that never panic and accept `@odata.id` in its odd forms.
//! - **Limits**: connect and request timeouts, retries with backoff on connection errors and
//!   5xx, and a cap on response size (a BMC cannot make us buffer gigabytes).

pub mod model;
mod tls;
mod transport;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION};
use http::{Method, Request};
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::Value;
use transport::{Reply, Transport, TransportError};

pub use model::{Res, odata_id};
pub use tls::TlsPolicy;

/// Largest response body accepted from a BMC.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// What went wrong talking to one BMC, phrased for the operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("{0}: timed out")]
    Timeout(String),
    #[error(
        "{0}: TLS certificate changed since it was pinned (pinned sha256 {1}); if the BMC was re-keyed on purpose, clear the pin"
    )]
    PinMismatch(String, String),
    #[error("{0}: TLS verification failed: {1}")]
    Tls(String, String),
    #[error("{0}: authentication failed (HTTP {1}): check the BMC credentials")]
    Auth(String, u16),
    #[error("{0}: HTTP {1}: {2}")]
    Status(String, u16, String),
    #[error("{0}: response larger than {MAX_BODY} bytes")]
    TooLarge(String),
    #[error("{0}: response is not JSON: {1}")]
    BadJson(String, String),
    #[error("{0}: not a Redfish service ({1})")]
    NotRedfish(String, String),
    #[error("{0}: {1}")]
    Other(String, String),
}

/// Username and password for a BMC.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Timeouts and retries.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Attempts for one request (connection errors and 5xx are retried).
    pub attempts: u32,
    pub backoff: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(15),
            attempts: 3,
            backoff: Duration::from_millis(300),
        }
    }
}

enum Auth {
    None,
    Basic,
    Session {
        token: String,
        location: Option<String>,
    },
}

/// A connection to one BMC.
pub struct Bmc {
    base: String,
    http: Transport,
    creds: Option<Credentials>,
    auth: Auth,
    limits: Limits,
    seen_cert: Arc<Mutex<Option<String>>>,
    pinned: Option<String>,
}

impl std::fmt::Debug for Bmc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bmc")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Bmc {
    /// A client for the BMC at `base` (`https://10.0.0.5` or `http://10.0.0.5:8000`).
    pub fn new(
        base: &str,
        tls: TlsPolicy,
        creds: Option<Credentials>,
        limits: Limits,
    ) -> Result<Bmc, Error> {
        let base = base.trim_end_matches('/').to_owned();
        let seen_cert = Arc::new(Mutex::new(None));
        let pinned = match &tls {
            TlsPolicy::Pin(p) => p.clone(),
            _ => None,
        };
        let config = tls::client_config(&tls, seen_cert.clone(), &base)
            .map_err(|e| Error::Tls(base.clone(), e))?;
        // hyper's client follows no redirects: a BMC answer is taken as it comes.
        let http = Transport::new(config, limits.connect_timeout);
        Ok(Bmc {
            base,
            http,
            creds,
            auth: Auth::None,
            limits,
            seen_cert,
            pinned,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// SHA-256 (hex) of the certificate the BMC presented, once a TLS connection was made:
    /// record it to pin the BMC.
    pub fn certificate_sha256(&self) -> Option<String> {
        self.seen_cert
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `GET /redfish/v1/` without credentials (the service root is public).
    pub async fn service_root(&self) -> Result<Res, Error> {
        let v = self.get_raw("/redfish/v1/", false).await?;
        if v.get("RedfishVersion").is_none() && v.get("Systems").is_none() {
            return Err(Error::NotRedfish(
                self.base.clone(),
                "no RedfishVersion or Systems in /redfish/v1/".into(),
            ));
        }
        Ok(Res(v))
    }

    /// Opens a session when the service root offers a SessionService; otherwise (or when the
    /// session is refused) settles on basic auth, checked with one request so wrong
    /// credentials fail here with [`Error::Auth`].
    pub async fn login(&mut self) -> Result<(), Error> {
        let root = Res(self.get_raw("/redfish/v1/", false).await?);
        let Some(c) = self.creds.clone() else {
            self.auth = Auth::None;
            return Ok(());
        };
        if root.link("SessionService").is_some() || root.0.pointer("/Links/Sessions").is_some() {
            let url = root
                .0
                .pointer("/Links/Sessions")
                .and_then(odata_id)
                .unwrap_or_else(|| "/redfish/v1/SessionService/Sessions".into());
            let body = serde_json::json!({ "UserName": c.username, "Password": c.password });
            let req = Req::json(Method::POST, self.url(&url), &body);
            let resp = self.send(&req, false).await?;
            if resp.status.is_success()
                && let Some(token) = resp
                    .headers
                    .get("x-auth-token")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            {
                let location = resp
                    .headers
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                self.auth = Auth::Session { token, location };
                return Ok(());
            }
        }
        // Basic auth on every request; prove it works on a protected resource.
        self.auth = Auth::Basic;
        let probe = root
            .link("Systems")
            .unwrap_or_else(|| "/redfish/v1/Systems".into());
        match self.get_raw(&probe, true).await {
            Ok(_) => Ok(()),
            Err(e @ Error::Auth(..)) => Err(e),
            // Not an auth problem (an odd BMC without Systems): let the crawl report it.
            Err(_) => Ok(()),
        }
    }

    /// Deletes the session, if one was opened (best effort).
    pub async fn logout(&mut self) {
        if let Auth::Session {
            location: Some(loc),
            ..
        } = &self.auth
        {
            let req = Req::empty(Method::DELETE, self.url(loc));
            let _ = self.send(&req, true).await;
        }
        self.auth = Auth::None;
    }

    /// `GET path` with credentials, as a tolerant resource.
    pub async fn get(&self, path: &str) -> Result<Res, Error> {
        Ok(Res(self.get_raw(path, true).await?))
    }

    /// `POST path` with a JSON body; the answer's JSON (or `Null` when empty) and its
    /// `Location` header.
    pub async fn post(&self, path: &str, body: &Value) -> Result<(Value, Option<String>), Error> {
        let resp = self
            .send(&Req::json(Method::POST, self.url(path), body), true)
            .await?;
        self.json_and_location(path, resp)
    }

    /// `POST path` as `multipart/form-data` (the Redfish `MultipartHttpPushUri` form): an
    /// `UpdateParameters` JSON part and an `UpdateFile` part carrying `file`, sent without
    /// copying it and with an explicit Content-Length (some BMCs refuse chunked uploads).
    pub async fn post_multipart(
        &self,
        path: &str,
        params: &Value,
        file_name: &str,
        file: bytes::Bytes,
    ) -> Result<(Value, Option<String>), Error> {
        let (head, tail, boundary) = multipart_frame(params, file_name);
        let req = Req {
            method: Method::POST,
            url: self.url(path),
            content_type: Some(format!("multipart/form-data; boundary={boundary}")),
            body: Payload::Parts([head, file, tail]),
        };
        let resp = self.send(&req, true).await?;
        self.json_and_location(path, resp)
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, Error> {
        let resp = self
            .send(&Req::json(Method::PATCH, self.url(path), body), true)
            .await?;
        Ok(self.json_and_location(path, resp)?.0)
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else if path.starts_with('/') {
            format!("{}{path}", self.base)
        } else {
            format!("{}/{path}", self.base)
        }
    }

    async fn get_raw(&self, path: &str, authed: bool) -> Result<Value, Error> {
        let resp = self
            .send(&Req::empty(Method::GET, self.url(path)), authed)
            .await?;
        Ok(self.json_and_location(path, resp)?.0)
    }

    fn json_and_location(&self, path: &str, resp: Reply) -> Result<(Value, Option<String>), Error> {
        let status = resp.status.as_u16();
        let location = resp
            .headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.body;
        let what = format!("{}{path}", self.base);
        match status {
            200..=299 => {}
            401 | 403 => return Err(Error::Auth(self.base.clone(), status)),
            _ => {
                let msg = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| {
                        v.pointer("/error/message")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
                return Err(Error::Status(what, status, msg));
            }
        }
        if resp.unterminated {
            // No close_notify and no length: only a whole JSON object or array (every Redfish
            // resource and action answer is one) proves the body was not cut short on the way
            // (RFC 8446 §6.1). An empty or partial body is refused, not read as "nothing".
            return match serde_json::from_slice::<Value>(&body) {
                Ok(v) if v.is_object() || v.is_array() => {
                    tracing::debug!(
                        bmc = %self.base,
                        path,
                        "close-delimited answer ended without TLS close_notify; accepted as a complete JSON document"
                    );
                    Ok((v, location))
                }
                Ok(_) => Err(Error::BadJson(
                    what,
                    "the connection closed without TLS close_notify after a body that is not a JSON object or array".into(),
                )),
                Err(e) => Err(Error::BadJson(
                    what,
                    format!(
                        "the connection closed without TLS close_notify and the body is incomplete or not JSON ({e})"
                    ),
                )),
            };
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok((Value::Null, location));
        }
        serde_json::from_slice(&body)
            .map(|v| (v, location))
            .map_err(|e| Error::BadJson(what, e.to_string()))
    }

    /// The credentials header for an authenticated request, if any.
    fn auth_header(&self) -> Option<(http::HeaderName, HeaderValue)> {
        let (name, value) = match (&self.auth, &self.creds) {
            (Auth::Session { token, .. }, _) => {
                (http::HeaderName::from_static("x-auth-token"), token.clone())
            }
            (Auth::Basic, Some(c)) | (Auth::None, Some(c)) => {
                let raw = format!("{}:{}", c.username, c.password);
                (
                    AUTHORIZATION,
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(raw)
                    ),
                )
            }
            _ => return None,
        };
        // A token or password with bytes a header cannot carry is sent as nothing; the BMC
        // then answers 401 and the operator sees an authentication error.
        let mut value = HeaderValue::from_str(&value).ok()?;
        value.set_sensitive(true);
        Some((name, value))
    }

    /// Sends with retries on connection errors and 5xx, backing off between attempts. An
    /// answer that started but broke off is not retried: the BMC may have acted on it.
    async fn send(&self, req: &Req, authed: bool) -> Result<Reply, Error> {
        let auth = if authed { self.auth_header() } else { None };
        let mut delay = self.limits.backoff;
        let mut last = None;
        for attempt in 1..=self.limits.attempts.max(1) {
            let request = req.build(auth.clone()).map_err(|e| self.classify(&e))?;
            let result = tokio::time::timeout(
                self.limits.request_timeout,
                self.http.request(request, MAX_BODY),
            )
            .await
            .unwrap_or(Err(TransportError::Timeout));
            match result {
                Ok(r) if r.status.is_server_error() && attempt < self.limits.attempts => {
                    last = Some(Error::Status(
                        self.base.clone(),
                        r.status.as_u16(),
                        "server error".into(),
                    ));
                }
                Ok(r) => return Ok(r),
                Err(e) => {
                    let err = self.classify(&e);
                    // A changed certificate will not get better; a broken-off answer or an
                    // oversized one is not worth repeating.
                    if matches!(
                        err,
                        Error::PinMismatch(..) | Error::Tls(..) | Error::TooLarge(..)
                    ) || matches!(e, TransportError::Body(_) | TransportError::Url(..))
                    {
                        return Err(err);
                    }
                    last = Some(err);
                }
            }
            if attempt < self.limits.attempts {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
        }
        Err(last.unwrap_or_else(|| Error::Other(self.base.clone(), "no attempt made".into())))
    }

    fn classify(&self, e: &TransportError) -> Error {
        let mut text = e.to_string();
        let mut timed_out = matches!(e, TransportError::Timeout);
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            timed_out |= s
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
            source = s.source();
        }
        if text.contains(tls::PIN_MISMATCH) {
            return Error::PinMismatch(self.base.clone(), self.pinned.clone().unwrap_or_default());
        }
        if timed_out {
            return Error::Timeout(self.base.clone());
        }
        match e {
            TransportError::TooLarge(_) => return Error::TooLarge(self.base.clone()),
            TransportError::Http(h) if h.is_connect() => {
                if text.contains("certificate") || text.contains("InvalidCertificate") {
                    return Error::Tls(self.base.clone(), text);
                }
                return Error::Connect(self.base.clone(), text);
            }
            _ => {}
        }
        Error::Other(self.base.clone(), text)
    }
}

/// One request, rebuilt for every attempt.
struct Req {
    method: Method,
    url: String,
    content_type: Option<String>,
    body: Payload,
}

enum Payload {
    Empty,
    Bytes(Bytes),
    /// Sent one after the other without copying (a firmware image can be large), with an
    /// explicit Content-Length: some BMCs refuse chunked uploads.
    Parts([Bytes; 3]),
}

impl Req {
    fn empty(method: Method, url: String) -> Req {
        Req {
            method,
            url,
            content_type: None,
            body: Payload::Empty,
        }
    }

    fn json(method: Method, url: String, body: &Value) -> Req {
        Req {
            method,
            url,
            content_type: Some("application/json".into()),
            body: Payload::Bytes(Bytes::from(body.to_string())),
        }
    }

    fn build(
        &self,
        auth: Option<(http::HeaderName, HeaderValue)>,
    ) -> Result<Request<transport::Body>, TransportError> {
        let uri = http::Uri::try_from(escape_url(&self.url))
            .map_err(|e| TransportError::Url(self.url.clone(), e.to_string()))?;
        let mut b = Request::builder().method(self.method.clone()).uri(uri);
        if let Some((name, value)) = auth {
            b = b.header(name, value);
        }
        if let Some(ct) = &self.content_type {
            b = b.header(CONTENT_TYPE, ct);
        }
        let body = match &self.body {
            Payload::Empty => Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed(),
            Payload::Bytes(bytes) => Full::new(bytes.clone())
                .map_err(|never| match never {})
                .boxed(),
            Payload::Parts(parts) => {
                let len: usize = parts.iter().map(Bytes::len).sum();
                b = b.header(CONTENT_LENGTH, len);
                let frames = parts
                    .clone()
                    .map(|p| Ok::<_, std::io::Error>(http_body::Frame::data(p)));
                StreamBody::new(futures_util::stream::iter(frames)).boxed()
            }
        };
        b.body(body)
            .map_err(|e| TransportError::Url(self.url.clone(), e.to_string()))
    }
}

/// Percent-encodes what a URI may not carry (spaces, quotes, non-ASCII): BMCs put such
/// characters in `@odata.id`s now and then.
fn escape_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for b in url.bytes() {
        if b.is_ascii_graphic()
            && !matches!(
                b,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
            )
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The bytes before and after the file in a two-part `multipart/form-data` body, and the
/// boundary (128 random bits: it will not occur inside an image by chance).
fn multipart_frame(params: &Value, file_name: &str) -> (Bytes, Bytes, String) {
    let mut nonce = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut nonce);
    let boundary = format!("rackboot-{}", hex::encode(nonce));
    // A quote or line break in the name would break the header; firmware names need neither.
    let name: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let head = format!(
        "--{boundary}\r\n\
         Content-Disposition: form-data; name=\"UpdateParameters\"\r\n\
         Content-Type: application/json\r\n\r\n\
         {params}\r\n\
         --{boundary}\r\n\
         Content-Disposition: form-data; name=\"UpdateFile\"; filename=\"{name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    (head.into(), tail.into(), boundary)
}
