//! BMCs that end HTTPS answers with a TCP close and no TLS close_notify (older iDRAC/iLO/
//! Supermicro firmware, small OpenBMC builds, sushy-static). A hand-made TLS server answers
//! with exactly the bytes each case needs and then drops the TCP connection without closing
//! TLS. A close-delimited answer holding a whole JSON document is read; everything a
//! truncation could have produced (inside a Content-Length, inside a chunk, JSON cut short, an
//! empty body) stays an error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::{Arc, Mutex};

use redfish::{Bmc, Credentials, Error, Limits, TlsPolicy};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Vec<u8> + Send + Sync>;

/// A TLS server on 127.0.0.1 with a fresh rcgen self-signed certificate. Every connection
/// carries one request; the raw answer from `handler` is written, and the TCP connection is
/// then shut down under TLS, with no close_notify. Returns the base URL and the requests seen.
async fn serve(handler: Handler) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![ck.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, handler, log) = (acceptor.clone(), handler.clone(), log.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Some(req) = read_request(&mut tls).await else {
                    return;
                };
                let answer = handler(&req);
                log.lock().unwrap().push(req);
                let _ = tls.write_all(&answer).await;
                let _ = tls.flush().await;
                // Away from the TLS layer: a FIN with no close_notify before it.
                let (mut tcp, _) = tls.into_inner();
                let _ = tcp.shutdown().await;
            });
        }
    });
    (base, seen)
}

/// Reads one request: head, then a Content-Length body (left unread it would make the close
/// a reset rather than a FIN).
async fn read_request(
    tls: &mut tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tls.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf.split_off(head_end);
    while body.len() < len {
        let n = tls.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        method,
        path,
        headers,
        body,
    })
}

fn limits() -> Limits {
    Limits {
        attempts: 1,
        ..Limits::default()
    }
}

fn bmc(base: &str) -> Bmc {
    Bmc::new(base, TlsPolicy::Pin(None), None, limits()).unwrap()
}

/// An HTTP/1.0 answer with no Content-Length: the body runs to the close.
fn http10(status: &str, extra: &str, body: &str) -> Vec<u8> {
    format!("HTTP/1.0 {status}\r\nContent-Type: application/json\r\n{extra}\r\n{body}").into_bytes()
}

/// hyper's framing refused the body: the stream ended before the length or the chunks did.
fn is_early_eof(err: &Error) -> bool {
    matches!(err, Error::Other(_, m) if m.contains("reading the body")
        && (m.contains("end of file before message length") || m.contains("unexpected EOF")))
}

fn fixed(answer: String) -> Handler {
    Arc::new(move |_: &Seen| answer.clone().into_bytes())
}

const DOC: &str = r#"{"@odata.id": "/redfish/v1/Systems/1", "Id": "1", "PowerState": "On"}"#;

#[tokio::test]
async fn close_delimited_json_without_close_notify_is_read() {
    let (base, _) = serve(Arc::new(|_: &Seen| http10("200 OK", "", DOC))).await;
    let b = bmc(&base);
    let res = b.get("/redfish/v1/Systems/1").await.unwrap();
    assert_eq!(res.0, serde_json::from_str::<Value>(DOC).unwrap());
    assert_eq!(
        b.certificate_sha256().map(|s| s.len()),
        Some(64),
        "the certificate was seen, ready to pin"
    );
}

#[tokio::test]
async fn close_delimited_json_cut_short_is_an_error() {
    let (base, _) = serve(Arc::new(|_: &Seen| http10("200 OK", "", &DOC[..30]))).await;
    let err = bmc(&base).get("/redfish/v1/Systems/1").await.unwrap_err();
    assert!(
        matches!(&err, Error::BadJson(_, m) if m.contains("close_notify")),
        "{err}"
    );
}

#[tokio::test]
async fn close_delimited_empty_body_without_close_notify_is_an_error() {
    let (base, _) = serve(Arc::new(|_: &Seen| http10("200 OK", "", ""))).await;
    let err = bmc(&base).get("/redfish/v1/Systems/1").await.unwrap_err();
    assert!(matches!(err, Error::BadJson(..)), "{err}");
    // A JSON scalar is not a Redfish document: a prefix of a number would parse too.
    let (base, _) = serve(Arc::new(|_: &Seen| http10("200 OK", "", "12"))).await;
    let err = bmc(&base).get("/redfish/v1/Systems/1").await.unwrap_err();
    assert!(matches!(err, Error::BadJson(..)), "{err}");
}

#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_read_to_the_close_and_held_to_json() {
    // RFC 9112 §6.3 rule 4: the body runs to the close, so the same proof is needed.
    let (base, _) = serve(fixed(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: identity\r\n\r\n"
            .to_owned(),
    ))
    .await;
    let err = bmc(&base).get("/redfish/v1/Systems/1").await.unwrap_err();
    assert!(matches!(err, Error::BadJson(..)), "{err}");
}

#[tokio::test]
async fn a_body_cut_short_inside_its_content_length_is_an_error() {
    // The whole document is there and parses, but fewer bytes than announced arrived: only
    // the framing can tell, and it must.
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{DOC}",
        DOC.len() + 20
    );
    let (base, _) = serve(fixed(answer)).await;
    let err = bmc(&base).get("/redfish/v1/Systems/1").await.unwrap_err();
    assert!(is_early_eof(&err), "{err}");
    // Control: the same answer with the right length is read, though no close_notify follows.
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{DOC}",
        DOC.len()
    );
    let (base, _) = serve(fixed(answer)).await;
    let res = bmc(&base).get("/redfish/v1/Systems/1").await.unwrap();
    assert_eq!(res.0["PowerState"], "On");
}

#[tokio::test]
async fn a_chunked_body_that_stops_mid_chunk_is_an_error() {
    // First chunk: the whole document; the second is announced as 16 bytes and breaks off.
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{DOC}\r\n10\r\n    ",
        DOC.len()
    );
    let (base, _) = serve(fixed(answer)).await;
    let err = bmc(&base).get("/redfish/v1/Systems/1").await.unwrap_err();
    assert!(is_early_eof(&err), "{err}");
    // Chunks complete but no last-chunk (`0\r\n\r\n`): still cut short.
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{DOC}\r\n",
        DOC.len()
    );
    let (base, _) = serve(fixed(answer)).await;
    let err = bmc(&base).get("/redfish/v1/Systems/1").await.unwrap_err();
    assert!(is_early_eof(&err), "{err}");
    // Control: the same chunks with their last-chunk are read.
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{DOC}\r\n0\r\n\r\n",
        DOC.len()
    );
    let (base, _) = serve(fixed(answer)).await;
    let res = bmc(&base).get("/redfish/v1/Systems/1").await.unwrap();
    assert_eq!(res.0["Id"], "1");
}

/// Every kind of request goes through the same transport: a session (POST, then DELETE on
/// logout), authenticated GETs, an action POST, a PATCH, the firmware task monitor (a GET of
/// the task) and a multipart push, all answered HTTP/1.0 without close_notify.
#[tokio::test]
async fn sessions_gets_actions_and_pushes_work_against_such_a_bmc() {
    let handler: Handler = Arc::new(|req: &Seen| {
        let authed = req.header("x-auth-token") == Some("tok-1");
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/redfish/v1/") => http10(
                "200 OK",
                "",
                &json!({
                    "RedfishVersion": "1.6.0",
                    "Systems": {"@odata.id": "/redfish/v1/Systems"},
                    "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
                    "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}},
                })
                .to_string(),
            ),
            ("POST", "/redfish/v1/SessionService/Sessions") => {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
                if body["UserName"] == "admin" && body["Password"] == "pw" {
                    http10(
                        "201 Created",
                        "X-Auth-Token: tok-1\r\nLocation: /redfish/v1/SessionService/Sessions/1\r\n",
                        &json!({"@odata.id": "/redfish/v1/SessionService/Sessions/1", "Id": "1"})
                            .to_string(),
                    )
                } else {
                    http10("401 Unauthorized", "", "{}")
                }
            }
            _ if !authed => http10("401 Unauthorized", "", "{}"),
            ("GET", "/redfish/v1/Systems") => http10(
                "200 OK",
                "",
                &json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1"}]}).to_string(),
            ),
            ("POST", "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset") => {
                http10("200 OK", "", r#"{"Accepted": true}"#)
            }
            ("PATCH", "/redfish/v1/Systems/1") => http10("200 OK", "", DOC),
            ("POST", "/redfish/v1/UpdateService/upload") => http10(
                "202 Accepted",
                "Location: /redfish/v1/TaskService/Tasks/7\r\n",
                r#"{"@odata.id": "/redfish/v1/TaskService/Tasks/7"}"#,
            ),
            ("GET", "/redfish/v1/TaskService/Tasks/7") => http10(
                "200 OK",
                "",
                r#"{"Id": "7", "TaskState": "Completed", "PercentComplete": 100}"#,
            ),
            ("DELETE", "/redfish/v1/SessionService/Sessions/1") => {
                b"HTTP/1.0 204 No Content\r\n\r\n".to_vec()
            }
            _ => http10("404 Not Found", "", "{}"),
        }
    });
    let (base, seen) = serve(handler).await;
    let creds = Credentials {
        username: "admin".into(),
        password: "pw".into(),
    };
    let mut b = Bmc::new(&base, TlsPolicy::Pin(None), Some(creds), limits()).unwrap();
    b.service_root().await.unwrap();
    b.login().await.unwrap();
    let systems = b.get("/redfish/v1/Systems").await.unwrap();
    assert_eq!(
        systems.0["Members"][0]["@odata.id"],
        "/redfish/v1/Systems/1"
    );
    let (answer, _) = b
        .post(
            "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
            &json!({"ResetType": "On"}),
        )
        .await
        .unwrap();
    assert_eq!(answer["Accepted"], true);
    let patched = b
        .patch(
            "/redfish/v1/Systems/1",
            &json!({"Boot": {"BootSourceOverrideTarget": "Pxe"}}),
        )
        .await
        .unwrap();
    assert_eq!(patched["Id"], "1");
    let (answer, location) = b
        .post_multipart(
            "/redfish/v1/UpdateService/upload",
            &json!({"Targets": []}),
            "bios.bin",
            bytes::Bytes::from(vec![0x5a; 100_000]),
        )
        .await
        .unwrap();
    assert_eq!(answer["@odata.id"], "/redfish/v1/TaskService/Tasks/7");
    let task = b.get(&location.unwrap()).await.unwrap();
    assert_eq!(task.0["TaskState"], "Completed");
    b.logout().await;

    let seen = seen.lock().unwrap();
    let calls: Vec<(String, String)> = seen
        .iter()
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect();
    assert!(
        calls.contains(&(
            "DELETE".into(),
            "/redfish/v1/SessionService/Sessions/1".into()
        )),
        "the session was deleted: {calls:?}"
    );
    let push = seen
        .iter()
        .find(|s| s.path == "/redfish/v1/UpdateService/upload")
        .unwrap();
    assert_eq!(
        push.body.len().to_string(),
        push.header("content-length").unwrap()
    );
    assert!(
        push.header("content-type")
            .unwrap()
            .starts_with("multipart/form-data; boundary=")
    );
}

/// The transport's failures still reach the operator as the same errors: a refused
/// connection, a certificate other than the pinned one.
#[tokio::test]
async fn refused_connections_and_pin_mismatches_keep_their_errors() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = bmc(&format!("https://127.0.0.1:{port}"))
        .get("/redfish/v1/")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect(..)), "{err}");
    assert!(err.to_string().contains("refused"), "{err}");

    let (base, _) = serve(Arc::new(|_: &Seen| http10("200 OK", "", DOC))).await;
    let pinned = Bmc::new(&base, TlsPolicy::Pin(Some("00".repeat(32))), None, limits()).unwrap();
    let err = pinned.get("/redfish/v1/").await.unwrap_err();
    assert!(matches!(err, Error::PinMismatch(..)), "{err}");
}
