//! A farm of fixture BMCs for the discovery benchmark (`cargo xtask bench redfish`).
//!
//! ```text
//! bmc_fixture --tree DIR --first 127.0.1.1 --count 256 --port 8000
//! ```
//!
//! Serves one recorded Redfish tree (`DIR/<url path>/index.json`, e.g.
//! `DIR/redfish/v1/Systems/index.json`) over plain HTTP on `count` consecutive IPv4 addresses
//! starting at `first` (loopback addresses need no configuration), one listener each on `port`,
//! all in one tokio runtime. Prints `ready` on stdout once every listener is bound.
//!
//! It is a fixture, not a BMC:
//! - any credentials (or none) are accepted;
//! - `GET`/`HEAD` of a recorded path (trailing slashes ignored) answers its JSON, anything else
//!   a Redfish-style JSON 404; other methods answer 405 (so a client asking
//!   `POST /redfish/v1/SessionService/Sessions` falls back to basic auth at once);
//! - every MAC address (`xx:xx:xx:xx:xx:xx`, any case) in paths and bodies gets its 4th and 5th
//!   octets replaced by the BMC's index (big-endian), and every UUID its second group, so the
//!   BMCs have distinct NIC MACs and system UUIDs. Two MACs (or UUIDs) of the recorded tree that
//!   differ only in those places would collide; the bench records MACs that differ in the last
//!   octet and UUIDs that differ in the first group.
//!
//! On SIGINT it prints how many requests it served (per method) on stderr and exits.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Serve a recorded Redfish tree on many loopback addresses (benchmark fixture)")]
struct Args {
    /// Directory holding the recorded tree: <url path>/index.json.
    #[arg(long)]
    tree: PathBuf,
    /// The first address; the others follow it.
    #[arg(long, default_value = "127.0.1.1")]
    first: Ipv4Addr,
    /// How many BMCs (one listener each).
    #[arg(long, default_value_t = 256)]
    count: u32,
    /// The TCP port every BMC listens on.
    #[arg(long, default_value_t = 8000)]
    port: u16,
}

/// Requests served, for the summary printed on SIGINT.
#[derive(Default)]
struct Counters {
    get: AtomicU64,
    not_found: AtomicU64,
    other: AtomicU64,
}

/// One BMC: its rewritten documents by normalised path.
struct Bmc {
    docs: HashMap<String, Bytes>,
    counters: Arc<Counters>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.count == 0 || args.count > 0xffff {
        bail!("--count must be 1..=65535 (the BMC index goes into two MAC octets)");
    }
    let last = u32::from(args.first)
        .checked_add(args.count - 1)
        .context("--first + --count overflows the IPv4 space")?;
    let recorded = load_tree(&args.tree)?;
    if !recorded.iter().any(|(p, _)| p == "/redfish/v1") {
        bail!(
            "{} has no redfish/v1/index.json (the service root)",
            args.tree.display()
        );
    }
    let counters = Arc::new(Counters::default());
    let mut servers = tokio::task::JoinSet::new();
    for index in 0..args.count {
        let ip = Ipv4Addr::from(u32::from(args.first) + index);
        let bmc = Bmc {
            docs: recorded
                .iter()
                .map(|(path, body)| {
                    (
                        normalise(&rewrite(path, index)),
                        Bytes::from(rewrite(body, index)),
                    )
                })
                .collect(),
            counters: counters.clone(),
        };
        let addr = SocketAddr::from((ip, args.port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let app = Router::new().fallback(answer).with_state(Arc::new(bmc));
        servers.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("bmc_fixture: {addr}: {e}");
            }
        });
    }
    println!("ready");
    eprintln!(
        "bmc_fixture: {} BMCs on {}..={}:{}, {} documents each",
        args.count,
        args.first,
        Ipv4Addr::from(last),
        args.port,
        recorded.len()
    );
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        Some(_) = servers.join_next() => bail!("a listener stopped"),
    }
    eprintln!(
        "bmc_fixture: served {} GET, {} not found, {} other",
        counters.get.load(Ordering::Relaxed),
        counters.not_found.load(Ordering::Relaxed),
        counters.other.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Every `index.json` under `dir` as (url path, body), each checked to be JSON.
fn load_tree(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                pending.push(path);
            } else if entry.file_name() == "index.json" {
                let body = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                serde_json::from_str::<serde_json::Value>(&body)
                    .with_context(|| format!("{} is not JSON", path.display()))?;
                let rel = d.strip_prefix(dir).unwrap_or(&d);
                let mut url = String::new();
                for part in rel.components() {
                    url.push('/');
                    url.push_str(&part.as_os_str().to_string_lossy());
                }
                out.push((normalise(&url), body));
            }
        }
    }
    if out.is_empty() {
        bail!("no index.json under {}", dir.display());
    }
    Ok(out)
}

/// A path without query, fragment or trailing slashes ("/" stays "").
fn normalise(path: &str) -> String {
    let p = path.split(['?', '#']).next().unwrap_or(path);
    p.trim_end_matches('/').to_owned()
}

async fn answer(State(bmc): State<Arc<Bmc>>, req: Request) -> Response {
    let path = normalise(req.uri().path());
    let method = req.method().clone();
    if method != Method::GET && method != Method::HEAD {
        bmc.counters.other.fetch_add(1, Ordering::Relaxed);
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Base.1.0.ActionNotSupported",
            &format!("{method} {path} is not supported by this fixture"),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match bmc.docs.get(&path) {
        Some(body) => {
            bmc.counters.get.fetch_add(1, Ordering::Relaxed);
            json(StatusCode::OK, Body::from(body.clone()))
        }
        None => {
            bmc.counters.not_found.fetch_add(1, Ordering::Relaxed);
            error(
                StatusCode::NOT_FOUND,
                "Base.1.0.ResourceMissingAtURI",
                &format!("The resource at the URI {path} was not found."),
            )
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": { "code": code, "message": message, "@Message.ExtendedInfo": [] }
    });
    json(status, Body::from(body.to_string()))
}

fn json(status: StatusCode, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert("OData-Version", HeaderValue::from_static("4.0"));
    r
}

/// `text` with every MAC and UUID made specific to BMC `index` (see the module docs).
fn rewrite(text: &str, index: u32) -> String {
    let b = text.as_bytes();
    let [_, _, hi, lo] = index.to_be_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0; // text[..copied] is in `out`
    let mut i = 0;
    while i < b.len() {
        let replacement = if shaped(b, i, MAC) {
            Some((MAC.len(), mac_for(text, i, hi, lo)))
        } else if shaped(b, i, UUID) {
            Some((UUID.len(), uuid_for(text, i, index)))
        } else {
            None
        };
        match replacement {
            Some((len, Some(new))) => {
                out.push_str(text.get(copied..i).unwrap_or_default());
                out.push_str(&new);
                i += len;
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    out
}

/// Shapes: `x` a hex digit, anything else that exact byte.
const MAC: &[u8] = b"xx:xx:xx:xx:xx:xx";
const UUID: &[u8] = b"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

/// Whether `b[i..]` starts with `shape`, not inside a longer run of hex digits and separators.
fn shaped(b: &[u8], i: usize, shape: &[u8]) -> bool {
    // A MAC inside "a:b:…" or a UUID inside "…-…" is part of something longer.
    let sep = shape.iter().copied().find(|&c| c != b'x').unwrap_or(b'-');
    let joined = |c: &u8| c.is_ascii_hexdigit() || *c == sep;
    let Some(w) = b.get(i..i + shape.len()) else {
        return false;
    };
    let before = i.checked_sub(1).and_then(|p| b.get(p));
    if before.is_some_and(joined) || b.get(i + shape.len()).is_some_and(joined) {
        return false;
    }
    w.iter().zip(shape).all(|(c, s)| match s {
        b'x' => c.is_ascii_hexdigit(),
        _ => c == s,
    })
}

/// The MAC at `text[i..]` with octets 4 and 5 replaced by `hi`, `lo` (in the MAC's case).
fn mac_for(text: &str, i: usize, hi: u8, lo: u8) -> Option<String> {
    let mac = text.get(i..i + MAC.len())?;
    let head = mac.get(..9)?; // "xx:xx:xx:"
    let tail = mac.get(15..)?; // "xx"
    let new = format!("{head}{hi:02x}:{lo:02x}:{tail}");
    Some(if mac.bytes().any(|c| c.is_ascii_uppercase()) {
        new.to_ascii_uppercase()
    } else {
        new
    })
}

/// The UUID at `text[i..]` with its second group replaced by `index` (in the UUID's case).
fn uuid_for(text: &str, i: usize, index: u32) -> Option<String> {
    let uuid = text.get(i..i + UUID.len())?;
    let head = uuid.get(..9)?; // "xxxxxxxx-"
    let tail = uuid.get(13..)?; // "-xxxx-xxxx-xxxxxxxxxxxx"
    let new = format!("{head}{index:04x}{tail}");
    Some(if uuid.bytes().any(|c| c.is_ascii_uppercase()) {
        new.to_ascii_uppercase()
    } else {
        new
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_macs_and_uuids_per_bmc() {
        let doc = r#"{"MACAddress":"52:54:00:AA:00:01","@odata.id":"/redfish/v1/Systems/8cf3a1b2-1111-4000-8000-000000000001","x":"52:54:00:aa:00:02","n":"1:2:3"}"#;
        let got = rewrite(doc, 0x0102);
        assert!(got.contains(r#""MACAddress":"52:54:00:01:02:01""#), "{got}");
        assert!(got.contains(r#""x":"52:54:00:01:02:02""#), "{got}");
        assert!(
            got.contains("/Systems/8cf3a1b2-0102-4000-8000-000000000001"),
            "{got}"
        );
        assert!(got.contains(r#""n":"1:2:3""#), "{got}");
        // Longer hex runs are not MACs.
        assert_eq!(rewrite("52:54:00:aa:00:01:ff", 7), "52:54:00:aa:00:01:ff");
        assert_eq!(
            rewrite("urn:uuid:8CF3A1B2-1111-4000-8000-000000000001", 0xab),
            "urn:uuid:8CF3A1B2-00AB-4000-8000-000000000001"
        );
        assert_eq!(normalise("/redfish/v1/"), "/redfish/v1");
        assert_eq!(
            normalise("/redfish/v1/Systems?$top=1"),
            "/redfish/v1/Systems"
        );
    }
}
