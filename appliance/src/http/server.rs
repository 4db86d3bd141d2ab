//! The HTTP/1.1 server loop (hyper-util) every rackboot listener runs, with its limits.
//!
//! `axum::serve` has no header timeout, no connection cap and no body limit, and a boot storm
//! or one slowloris client must not take the boot path down (ARCHITECTURE invariant 4), so the
//! loop is ours:
//! - header read timeout (hyper's timer; also bounds idle keep-alive connections),
//! - a cap on concurrent connections (a semaphore; extra connections wait in the listen backlog),
//! - a per-request limit on the time until the response *headers* (a long kernel download
//!   streams its body for as long as it needs),
//! - a request body limit answered with a 413 problem,
//! - graceful shutdown: stop accepting, let in-flight requests finish within a grace period.
//!
//! Paths under [`HttpLimits::streaming_prefixes`] (image uploads) get neither the body limit
//! nor the request timeout: their handlers enforce their own size cap and idle timeout.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::http::Problem;
use crate::http::zerocopy::{FileSender, ZeroCopyStream};

/// Limits of one HTTP listener. `Default` is sized for a rack: a few hundred nodes booting at
/// once, each holding a connection or two.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// A client must send a complete request head within this time (slowloris), and an idle
    /// keep-alive connection is closed after it.
    pub header_read_timeout: Duration,
    /// HTTP/1.1 keep-alive (iPXE fetches kernel and initrd over one connection).
    pub keep_alive: bool,
    /// Connections served at once; further ones wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// Time until the response headers are ready; then 503 problem.
    pub request_timeout: Duration,
    /// Largest request body (JSON APIs); larger ones get a 413 problem.
    pub max_body_bytes: usize,
    /// Largest request head (request line + headers); hyper answers 431 beyond it.
    pub max_header_bytes: usize,
    /// Path prefixes exempt from `request_timeout` and `max_body_bytes` (streaming uploads).
    pub streaming_prefixes: Vec<String>,
    /// Path prefixes of slow operations (BMC scans, power off with its graceful wait, the
    /// boot event stream): `long_request_timeout` instead of `request_timeout`.
    pub long_prefixes: Vec<String>,
    pub long_request_timeout: Duration,
    /// How long shutdown waits for in-flight requests before cutting connections.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            keep_alive: true,
            max_connections: 2048,
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 4 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            streaming_prefixes: Vec::new(),
            long_prefixes: vec![
                "/rackboot/v1/discovery".to_owned(),
                "/rackboot/v1/power".to_owned(),
                "/rackboot/v1/reprovision".to_owned(),
                "/rackboot/v1/firmware".to_owned(),
            ],
            long_request_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl HttpLimits {
    fn is_streaming(&self, path: &str) -> bool {
        self.streaming_prefixes.iter().any(|p| path.starts_with(p))
    }
}

/// The client certificate (DER) a TLS peer presented, verified by the listener's rustls config;
/// in the request extensions of HTTPS requests that had one.
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Vec<u8>);

/// Where an HTTPS listener gets its current rustls config (certificates are renewed).
pub type TlsSource = Arc<dyn Fn() -> Option<Arc<rustls::ServerConfig>> + Send + Sync>;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves, then drains in-flight requests for up
/// to `limits.shutdown_grace`. Handlers can read the peer address as
/// `ConnectInfo<SocketAddr>` (cloud-init identifies nodes by source IP).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with(listener, app, limits, None, shutdown).await
}

/// [`serve`] over TLS: each connection's handshake runs in its own task with a timeout, and a
/// verified client certificate is passed on as [`PeerCertificate`].
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: TlsSource,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with(listener, app, limits, Some(tls), shutdown).await
}

async fn serve_with(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<TlsSource>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let limits = Arc::new(limits);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(limits.keep_alive)
        // hyper's floor is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192));
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    // EMFILE/ENFILE/ECONNABORTED are transient; back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let (app, limits, builder) = (app.clone(), limits.clone(), builder.clone());
        let stop = stop_rx.clone();
        let tls_config = tls.as_ref().map(|t| t());
        // Plain and TLS connections are tasks of their own kinds: a task is as large as its
        // future, and a plain connection (a thousand of them in a boot storm) must not carry
        // room for a TLS handshake and stream.
        match tls_config {
            None => {
                conns.spawn(async move {
                    let (stream, files) = ZeroCopyStream::new(stream);
                    let ext = Extensions {
                        cert: None,
                        files: Some(files),
                    };
                    drive(&builder, stream, app, limits, peer, ext, stop).await;
                    drop(permit);
                });
            }
            Some(None) => {
                tracing::warn!(%peer, "HTTPS: no server certificate yet; connection closed");
                drop(permit);
            }
            Some(Some(cfg)) => {
                conns.spawn(Box::pin(async move {
                    serve_tls_connection(&builder, stream, cfg, app, limits, peer, stop).await;
                    drop(permit);
                }));
            }
        }
    }

    drop(listener);
    let _ = stop_tx.send(true);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace, drain)
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?limits.shutdown_grace,
            left = conns.len(),
            "HTTP requests still running after the shutdown grace period; closing them"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    Ok(())
}

/// Completes the TLS handshake (bounded by [`HANDSHAKE_TIMEOUT`]) and serves the connection.
async fn serve_tls_connection(
    builder: &hyper::server::conn::http1::Builder,
    stream: tokio::net::TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    app: Router,
    limits: Arc<HttpLimits>,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| PeerCertificate(c.to_vec()));
            let ext = Extensions { cert, files: None };
            drive(builder, tls, app, limits, peer, ext, stop).await;
        }
        Ok(Err(err)) => tracing::info!(%peer, error = %err, "TLS handshake refused"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// What a connection adds to each of its requests' extensions.
#[derive(Clone)]
struct Extensions {
    /// The TLS client's verified certificate.
    cert: Option<PeerCertificate>,
    /// Plain HTTP: file bodies may be sent with sendfile.
    files: Option<FileSender>,
}

/// Serves HTTP/1.1 on one connection until it ends or shutdown; then finishes the request in
/// flight.
async fn drive<S>(
    builder: &hyper::server::conn::http1::Builder,
    stream: S,
    app: Router,
    limits: Arc<HttpLimits>,
    peer: SocketAddr,
    ext: Extensions,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        handle(app.clone(), limits.clone(), peer, ext.clone(), req)
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let done = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = stop.wait_for(|s| *s) => None,
    };
    let result = match done {
        Some(r) => r,
        None => {
            // Finish the request in flight, then close (no new requests on it).
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "HTTP connection ended with an error");
    }
}

async fn handle(
    app: Router,
    limits: Arc<HttpLimits>,
    peer: SocketAddr,
    ext: Extensions,
    req: Request<Incoming>,
) -> Result<Response, Infallible> {
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    if let Some(c) = ext.cert {
        parts.extensions.insert(c);
    }
    if let Some(f) = ext.files {
        parts.extensions.insert(f);
    }
    if limits.is_streaming(parts.uri.path()) {
        let req = Request::from_parts(parts, Body::new(body));
        return app.oneshot(req).await;
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Ok(too_large(limits.max_body_bytes));
    }
    // Chunked bodies are cut off at the limit while being read; axum's extractors (and our
    // `Json`) turn the `LengthLimitError` into a 413 problem.
    let body = Body::new(http_body_util::Limited::new(body, limits.max_body_bytes));
    let req = Request::from_parts(parts, body);
    let timeout = if limits
        .long_prefixes
        .iter()
        .any(|p| req.uri().path().starts_with(p))
    {
        limits.long_request_timeout
    } else {
        limits.request_timeout
    };
    match tokio::time::timeout(timeout, app.oneshot(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(%peer, ?timeout, "request timed out before its response was ready");
            let mut resp = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the request did not complete within {}s; retry later",
                    timeout.as_secs()
                ),
            )
            .into_response();
            resp.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            Ok(resp)
        }
    }
}

fn too_large(limit: usize) -> Response {
    let mut resp = Problem::payload_too_large(format!(
        "the request body is larger than the {limit}-byte limit"
    ))
    .into_response();
    // The unread body is still on the wire; do not try to reuse the connection (RFC 9110 §15.5.14).
    resp.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    resp
}
