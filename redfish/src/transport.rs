//! HTTP(S) to a BMC: hyper's HTTP/1 client over our own connector (TCP, then rustls for
//! `https`), so the TLS stream can be read the way BMCs actually end their answers.
//!
//! Many BMC web servers (older iDRAC, iLO and Supermicro firmware, small OpenBMC builds,
//! sushy-static) answer `HTTP/1.0` with no `Content-Length` and end the body by closing TCP
//! without a TLS close_notify. rustls reports that as `UnexpectedEof`, which would fail every
//! such answer. [`BmcStream`] turns exactly that read result into a plain end of stream and
//! records it; hyper's own framing then decides what the end means: inside a `Content-Length`
//! or a chunk it is still an error (hyper's `IncompleteBody`), and only a close-delimited
//! body (RFC 9112 §6.3, rule 8) ends there. The caller additionally requires such a body to be
//! a complete JSON document ([`Reply::unterminated`]), since without close_notify a truncation
//! by the network (RFC 8446 §6.1) cannot otherwise be told from the real end.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A request body: empty, JSON bytes, or a streamed multipart upload.
pub(crate) type Body = BoxBody<Bytes, io::Error>;

/// What can go wrong below the Redfish layer, before it is phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    #[error("timed out")]
    Timeout,
    #[error("bad URL {0}: {1}")]
    Url(String, String),
    /// The cause chain (connect, TLS, protocol) follows as the error's sources.
    #[error("request failed")]
    Http(#[from] hyper_util::client::legacy::Error),
    #[error("reading the body")]
    Body(#[source] hyper::Error),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

/// A complete answer.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The body was close-delimited and the connection ended with a TCP close and no TLS
    /// close_notify: the body's own syntax must prove it complete.
    pub unterminated: bool,
}

/// An HTTP/1 client with connection reuse for one BMC.
#[derive(Clone)]
pub(crate) struct Transport {
    client: Client<Connector, Body>,
}

impl Transport {
    pub(crate) fn new(tls: rustls::ClientConfig, connect_timeout: Duration) -> Transport {
        let connector = Connector {
            tls: TlsConnector::from(Arc::new(tls)),
            connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Transport { client }
    }

    /// Sends `req` and reads the whole answer, at most `max_body` bytes of it.
    pub(crate) async fn request(
        &self,
        req: Request<Body>,
        max_body: usize,
    ) -> Result<Reply, TransportError> {
        let resp = self.client.request(req).await?;
        let (parts, mut body) = resp.into_parts();
        if parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > max_body as u64)
        {
            return Err(TransportError::TooLarge(max_body));
        }
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(TransportError::Body)?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > max_body {
                    return Err(TransportError::TooLarge(max_body));
                }
                out.extend_from_slice(&data);
            }
        }
        // RFC 9112 §6.3: a body framed by Content-Length or by chunked coding (rules 4–6) has an
        // end hyper checked; any other body (rules 4 and 8) runs to the close. 1xx, 204 and 304
        // answers have no body at all (rule 1).
        let framed = parts.headers.contains_key(CONTENT_LENGTH) || is_chunked(&parts.headers);
        let close_delimited = !framed && !matches!(parts.status.as_u16(), 100..=199 | 204 | 304);
        let unterminated = close_delimited
            && parts
                .extensions
                .get::<NoCloseNotify>()
                .is_some_and(NoCloseNotify::seen);
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: out,
            unterminated,
        })
    }
}

/// Whether the last transfer coding is `chunked` (RFC 9112 §6.3 rule 4: otherwise the body
/// runs to the close).
fn is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
}

/// Set once the connection's TLS stream ended with a TCP close and no close_notify; handed to
/// each response on that connection through hyper-util's connection extras.
#[derive(Clone, Default)]
struct NoCloseNotify(Arc<AtomicBool>);

impl NoCloseNotify {
    fn seen(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Opens TCP, then TLS for `https`.
#[derive(Clone)]
struct Connector {
    tls: TlsConnector,
    connect_timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = BmcStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<BmcStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            tokio::time::timeout(this.connect_timeout, this.connect(dst))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
        })
    }
}

impl Connector {
    async fn connect(self, dst: Uri) -> Result<BmcStream, BoxError> {
        let tls = match dst.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => return Err(format!("unsupported scheme {other:?}").into()),
        };
        let host = dst.host().ok_or("URL has no host")?;
        // `Uri::host` keeps an IPv6 literal's brackets; name and socket address want it bare.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = dst.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        // Redfish is request/response of small documents: Nagle would only add delay.
        let _ = tcp.set_nodelay(true);
        let peer = format!("{host}:{port}");
        let io = if tls {
            let name = ServerName::try_from(host)?;
            Io::Tls(Box::new(self.tls.connect(name, tcp).await?))
        } else {
            Io::Plain(tcp)
        };
        Ok(BmcStream {
            io: TokioIo::new(io),
            eof: NoCloseNotify::default(),
            peer,
        })
    }
}

/// A connection to a BMC, as hyper reads and writes it.
struct BmcStream {
    io: TokioIo<Io>,
    eof: NoCloseNotify,
    peer: String,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for BmcStream {
    fn connected(&self) -> Connected {
        Connected::new().extra(self.eof.clone())
    }
}

impl Read for BmcStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let tls = matches!(this.io.inner(), Io::Tls(_));
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            // rustls (`Reader::read`) reports a TCP close before close_notify as UnexpectedEof,
            // after handing over every byte it authenticated. Give hyper a plain end of stream:
            // its framing errors on it inside Content-Length or chunked bodies, and ends a
            // close-delimited body there, as curl and browsers do with such servers.
            Poll::Ready(Err(e)) if tls && e.kind() == io::ErrorKind::UnexpectedEof => {
                if !this.eof.0.swap(true, Ordering::AcqRel) {
                    tracing::debug!(
                        peer = %this.peer,
                        "BMC closed the TLS connection without close_notify; treating the TCP close as the end of the stream"
                    );
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl Write for BmcStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
