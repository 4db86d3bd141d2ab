//! The HTTP server loop on a real TCP listener: slowloris, body limit, 404 problems,
//! connection cap, time-to-headers limit that spares long downloads, graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use rackboot::http::server::{HttpLimits, serve};
use rackboot::http::{Json, problem::not_found_fallback};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// Upper bound for anything the server should do "soon"; only hit when the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(app: Router, limits: HttpLimits) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app, limits, async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("serve did not return after shutdown")
            .unwrap()
            .unwrap();
    }
}

fn app() -> Router {
    Router::new()
        .route("/echo", post(|Json(v): Json<Value>| async move { Json(v) }))
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .fallback(not_found_fallback)
}

/// Sends a raw request and reads until the server closes the connection.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut out))
        .await
        .expect("server kept the connection open")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn body_of(resp: &str) -> Value {
    let (_, body) = resp.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn slowloris_half_a_header_gets_the_connection_closed() {
    let limits = HttpLimits {
        header_read_timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    };
    let server = Server::start(app(), limits).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The server must give up on us: EOF (possibly after a 408) or a reset.
    let read = tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf))
        .await
        .expect("slowloris connection was never closed");
    if read.is_ok() {
        let text = String::from_utf8_lossy(&buf);
        assert!(!text.contains("200 OK"), "{text}");
    }
    // And the server still serves others.
    let resp = raw(
        server.addr,
        b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    server.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_too() {
    let limits = HttpLimits {
        header_read_timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    };
    let server = Server::start(app(), limits).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    // Connected, never sends a byte.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "silent connection was never closed");
    server.stop().await;
}

#[tokio::test]
async fn oversized_body_is_413_problem_declared_or_chunked() {
    let limits = HttpLimits {
        max_body_bytes: 1024,
        ..HttpLimits::default()
    };
    let server = Server::start(app(), limits).await;
    let big = format!("\"{}\"", "a".repeat(4096));

    let req = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
        big.len()
    );
    let resp = raw(server.addr, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("content-type: application/problem+json")
    );
    assert_eq!(body_of(&resp)["status"], 413);

    // Chunked: no Content-Length to reject up front; the limit applies while reading.
    let req = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let resp = raw(server.addr, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert_eq!(body_of(&resp)["status"], 413);

    // Under the limit: echoed.
    let req = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\nConnection: close\r\n\r\n\"small\"";
    let resp = raw(server.addr, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(body_of(&resp), Value::String("small".into()));
    server.stop().await;
}

#[tokio::test]
async fn unknown_route_is_404_problem_and_peer_address_is_visible() {
    let server = Server::start(app(), HttpLimits::default()).await;
    let resp = raw(
        server.addr,
        b"GET /nope/../x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("application/problem+json")
    );
    assert_eq!(body_of(&resp)["status"], 404);

    let resp = raw(
        server.addr,
        b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.contains("\r\n\r\n127.0.0.1:"), "{resp}");
    server.stop().await;
}

#[tokio::test]
async fn handler_slower_than_request_timeout_is_503_but_long_download_streams() {
    let app = Router::new()
        .route(
            "/stuck",
            get(|| async {
                std::future::pending::<()>().await;
                "never"
            }),
        )
        .route(
            "/trickle",
            get(|| async {
                // Headers at once, body over several request-timeouts.
                let chunks = futures_util::stream::unfold(0u8, |i| async move {
                    if i == 5 {
                        return None;
                    }
                    // A slow producer is the behaviour under test (a body that takes longer
                    // than the request timeout), not a wait for something to happen.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 10])),
                        i + 1,
                    ))
                });
                Body::from_stream(chunks)
            }),
        );
    let limits = HttpLimits {
        request_timeout: Duration::from_millis(150),
        ..HttpLimits::default()
    };
    let server = Server::start(app, limits).await;
    let resp = raw(
        server.addr,
        b"GET /stuck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert_eq!(body_of(&resp)["status"], 503);

    let resp = raw(
        server.addr,
        b"GET /trickle HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(resp.matches('x').count(), 50, "{resp}");
    server.stop().await;
}

#[tokio::test]
async fn connection_cap_makes_extra_connections_wait() {
    let limits = HttpLimits {
        max_connections: 1,
        ..HttpLimits::default()
    };
    let server = Server::start(app(), limits).await;
    // A holds the only slot with a keep-alive connection.
    let mut a = TcpStream::connect(server.addr).await.unwrap();
    a.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = a.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    // B connects (kernel backlog) but is not served while A is open: it waits in the
    // listener's accept queue (the kernel's count, polled), and A is still served meanwhile.
    let b = tokio::spawn(raw(
        server.addr,
        b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while accept_queue(server.addr.port()) < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never reached the accept queue"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = a.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    assert_eq!(accept_queue(server.addr.port()), 1, "B was accepted");
    assert!(!b.is_finished(), "second connection served beyond the cap");
    drop(a);
    let resp = tokio::time::timeout(PATIENCE, b).await.unwrap().unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_and_refuses_new() {
    let release = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let (r, e) = (release.clone(), entered.clone());
    let app = Router::new().route(
        "/slow",
        get(move || {
            let (r, e) = (r.clone(), e.clone());
            async move {
                e.notify_one();
                r.notified().await;
                "finished"
            }
        }),
    );
    let server = Server::start(app, HttpLimits::default()).await;
    let addr = server.addr;
    let inflight = tokio::spawn(raw(
        addr,
        b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ));
    entered.notified().await;
    let Server { stop, task, .. } = server;
    let _ = stop.unwrap().send(());
    // The listener goes away: new connections are refused (polled until a deadline).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !task.is_finished(),
        "serve returned with a request in flight"
    );
    release.notify_one();
    let resp = tokio::time::timeout(PATIENCE, inflight)
        .await
        .unwrap()
        .unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("finished"), "{resp}");
    tokio::time::timeout(PATIENCE, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_grace_cuts_requests_that_never_finish() {
    let entered = Arc::new(Notify::new());
    let e = entered.clone();
    let app = Router::new().route(
        "/forever",
        get(move || {
            let e = e.clone();
            async move {
                e.notify_one();
                std::future::pending::<()>().await;
                "never"
            }
        }),
    );
    let limits = HttpLimits {
        shutdown_grace: Duration::from_millis(200),
        request_timeout: Duration::from_secs(3600),
        ..HttpLimits::default()
    };
    let server = Server::start(app, limits).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The request is being served (its handler said so) before stopping.
    entered.notified().await;
    server.stop().await;
}

/// Connections waiting in the accept queue of the IPv4 listener on `port` (the kernel's
/// `rx_queue` of a LISTEN socket in /proc/net/tcp).
fn accept_queue(port: u16) -> u32 {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    tcp.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = f.get(1)?;
            let p = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (p == port && *f.get(3)? == "0A").then_some(())?;
            u32::from_str_radix(f.get(4)?.split(':').nth(1)?, 16).ok()
        })
        .next()
        .unwrap_or(0)
}
