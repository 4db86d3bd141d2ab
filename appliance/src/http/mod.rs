//! HTTP plumbing shared by every route: problem errors, the JSON extractor, the server loop,
//! file bodies sent with sendfile (`zerocopy.rs`); and capped reading of what peers answer
//! (`capped.rs`).
//!
//! Owns: RFC 7807 problems, the JSON extractor, the HTTP(S) server loop with its limits, capped
//! client bodies. May call: `store`.

pub mod capped;
pub mod problem;
pub mod server;
pub mod zerocopy;

use axum::http::{HeaderMap, header};

pub use problem::{Json, Problem};

/// `http://<Host>` if the Host header is a plain host[:port], else the configured base.
pub fn base_url(headers: &HeaderMap, fallback: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:-[]".contains(&b));
    if ok {
        format!("http://{host}")
    } else {
        fallback.to_owned()
    }
}
