//! File bodies sent with sendfile(2) on plain-HTTP connections, through hyper.
//!
//! A boot storm is a thousand nodes pulling the same kernel and initrd. Copying those bytes
//! into the socket from a mapping costs a CPU copy per byte and, while the pages are in
//! rackboot's page tables, their size in its RSS. sendfile(2) moves them from the page cache
//! to the socket in the kernel, as nginx does.
//!
//! hyper only writes bytes it was given, so a file body hands hyper *marks*: slices of one
//! reserved, never-written region of address space ([`mark`]), as long as the file range they
//! stand for. The body records each range ([`Segment`]) on its connection's [`FileSender`]
//! as it yields the mark. The connection's stream ([`ZeroCopyStream`]) sees the marks among
//! the buffers hyper writes (hyper queues body chunks and writes them with `writev`, in order,
//! without copying them) and sends the recorded file range with sendfile instead; everything
//! else is written as it is. hyper's framing (Content-Length, keep-alive) is unchanged: it
//! counts the mark's length as sent.
//!
//! What it relies on, and what happens otherwise:
//! - hyper queues body chunks rather than copying them: it does so for a stream that says it
//!   writes vectored ([`ZeroCopyStream`] does) unless `writev(false)` is set on the builder
//!   (`http/server.rs` does not). A mark that reached the socket as bytes would send zeros:
//!   `zerocopy_tests` serve real files through the real listener and compare every byte;
//! - a mark written with no recorded range, or a file shorter than its record, ends the
//!   connection with an error (the client sees a short body, never wrong bytes);
//! - the files are expected in the page cache (images are read once when verified): a
//!   sendfile of cold pages waits for the disk on the worker thread, like nginx without aio.
//!
//! TLS connections cannot use sendfile (the bytes must be encrypted in userspace); they get
//! no `FileSender` and images are sent from their mapping.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The longest range one mark stands for (and the size of the reserved region).
const MARK_LEN: usize = 1024 * 1024;

/// The reserved region marks are slices of. Allocated zeroed and never written, so its pages
/// are never faulted in (no RSS); if a mark were ever written as bytes, the client would get
/// zeros and a short or failed checksum, never another node's data.
fn mark() -> &'static [u8] {
    static REGION: LazyLock<&'static [u8]> =
        LazyLock::new(|| Vec::leak(vec![0u8; MARK_LEN]) as &'static [u8]);
    &REGION
}

fn is_mark(buf: &[u8]) -> bool {
    let region = mark().as_ptr_range();
    !buf.is_empty() && region.contains(&buf.as_ptr())
}

/// A file range to send in place of the next mark bytes.
struct Segment {
    file: Arc<File>,
    offset: u64,
    len: u64,
}

/// The file ranges a connection's bodies have handed to hyper as marks, in order. In the
/// request extensions of plain-HTTP requests (see `http::server`).
#[derive(Clone, Default)]
pub struct FileSender(Arc<Mutex<VecDeque<Segment>>>);

impl FileSender {
    fn segments(&self) -> std::sync::MutexGuard<'_, VecDeque<Segment>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A body of `len` bytes of `file` from `offset`, sent with sendfile on this connection.
    pub fn body(&self, file: Arc<File>, offset: u64, len: u64) -> FileBody {
        FileBody {
            sender: self.clone(),
            file,
            offset,
            remaining: len,
        }
    }
}

/// A response body that stands for a file range (see the module docs).
pub struct FileBody {
    sender: FileSender,
    file: Arc<File>,
    offset: u64,
    remaining: u64,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(self.remaining).map_or(MARK_LEN, |r| r.min(MARK_LEN));
        let Some(chunk) = mark().get(..n) else {
            return Poll::Ready(None);
        };
        let segment = Segment {
            file: self.file.clone(),
            offset: self.offset,
            len: n as u64,
        };
        self.sender.segments().push_back(segment);
        self.offset += n as u64;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A plain TCP connection that sends marked ranges with sendfile (see the module docs).
pub struct ZeroCopyStream {
    inner: TcpStream,
    sender: FileSender,
}

impl ZeroCopyStream {
    pub fn new(inner: TcpStream) -> (Self, FileSender) {
        let sender = FileSender::default();
        (
            Self {
                inner,
                sender: sender.clone(),
            },
            sender,
        )
    }

    fn poll_send_file(&mut self, cx: &mut Context<'_>, marked: usize) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            let mut segments = self.sender.segments();
            let Some(segment) = segments.front_mut() else {
                return Poll::Ready(Err(io::Error::other(
                    "a file body's mark reached the socket with no file range recorded",
                )));
            };
            let want = usize::try_from(segment.len).map_or(marked, |l| l.min(marked));
            let mut offset = i64::try_from(segment.offset).map_err(io::Error::other)?;
            let sent = self.inner.try_io(Interest::WRITABLE, || {
                nix::sys::sendfile::sendfile(&self.inner, &*segment.file, Some(&mut offset), want)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file being sent is shorter than its record",
                    )));
                }
                Ok(n) => {
                    segment.offset += n as u64;
                    segment.len -= n as u64;
                    if segment.len == 0 {
                        segments.pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_write_bufs(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match bufs.iter().position(|b| is_mark(b)) {
            None => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
            Some(at) => {
                let before = bufs.get(..at).unwrap_or_default();
                if before.iter().any(|b| !b.is_empty()) {
                    // The bytes before the mark go first; hyper calls again with the rest.
                    Pin::new(&mut self.inner).poll_write_vectored(cx, before)
                } else {
                    let marked = bufs.get(at).map_or(0, |b| b.len());
                    self.poll_send_file(cx, marked)
                }
            }
        }
    }
}

impl AsyncRead for ZeroCopyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ZeroCopyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_bufs(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_bufs(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A file of `len` bytes with no zero byte in it (a mark sent as bytes would show).
    fn pattern_file(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&bytes).unwrap();
        (f, bytes)
    }

    /// Serves one connection with hyper: `/file` is `range` of `file` as a [`FileBody`],
    /// anything else a small in-memory body.
    async fn serve_one(stream: TcpStream, file: Arc<File>, range: (u64, u64)) {
        let (stream, files) = ZeroCopyStream::new(stream);
        let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
            let body = if req.uri().path() == "/file" {
                axum::body::Body::new(files.body(file.clone(), range.0, range.1))
            } else {
                axum::body::Body::from("plain")
            };
            async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(body)) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .await;
    }

    /// Reads one response with a Content-Length body, slowly (so the server's socket fills
    /// and sendfile sends in pieces).
    async fn read_response(client: &mut TcpStream, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 7000];
        loop {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&pending[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                while pending.len() < end + 4 + len {
                    let n = client.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return None;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    tokio::task::yield_now().await;
                }
                let body = pending[end + 4..end + 4 + len].to_vec();
                pending.drain(..end + 4 + len);
                return Some(body);
            }
            let n = client.read(&mut buf).await.unwrap();
            if n == 0 {
                return None;
            }
            pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Two ranges of a file, between and around ordinary responses on one keep-alive
    /// connection, pipelined, arrive byte for byte; the file range crosses several marks.
    #[tokio::test]
    async fn file_bodies_arrive_byte_exact_between_ordinary_responses() {
        let len = 2 * MARK_LEN + MARK_LEN / 2 + 7;
        let (f, bytes) = pattern_file(len);
        let file = Arc::new(File::open(f.path()).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            // A small send buffer: sendfile sends the marks in many pieces.
            nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::SndBuf, &4096)
                .unwrap();
            serve_one(stream, file, (3, (len - 3) as u64)).await;
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        let req = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        let all = [req("/plain"), req("/file"), req("/plain"), req("/file")].concat();
        client.write_all(all.as_bytes()).await.unwrap();
        let mut pending = Vec::new();
        for want in [&b"plain"[..], &bytes[3..], b"plain", &bytes[3..]] {
            let got = read_response(&mut client, &mut pending).await.unwrap();
            assert_eq!(got.len(), want.len());
            assert!(got == want, "a body differs from what was served");
        }
        drop(client);
        server.await.unwrap();
    }

    /// A file shorter than the range its body stands for ends the connection: the client gets
    /// a short body, never filler bytes.
    #[tokio::test]
    async fn a_file_shorter_than_its_record_ends_the_connection() {
        let (f, bytes) = pattern_file(100_000);
        let file = Arc::new(File::open(f.path()).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            serve_one(stream, file, (0, 150_000)).await;
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /file HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        // The server must close; a hang here is the failure (bounded so it fails, not hangs).
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            client.read_to_end(&mut got),
        )
        .await
        .expect("the server kept the connection open after a short file")
        .unwrap();
        let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(String::from_utf8_lossy(&got[..end]).contains("content-length: 150000"));
        assert_eq!(
            &got[end..],
            &bytes[..],
            "exactly the file's bytes, then the close"
        );
        server.await.unwrap();
    }
}
