//! The HTTP client the CLI uses to talk to a running rackboot, and output formatting.
//!
//! `rackboot node|boot|lease|image …` build on [`ApiClient`]: it finds a token (`--token`, or a
//! short-lived one minted from the local issuer key when the data dir is readable), sends JSON,
//! and turns RFC 7807 problems into errors a person can act on.
//!
//! Owns: the CLI's API client (`RACKBOOT_URL`, token). May call: `auth`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::auth::LocalIssuer;

/// Connection options shared by every subcommand that talks to a running rackboot.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// rackboot API base URL.
    #[arg(long, env = "RACKBOOT_URL", default_value = "http://127.0.0.1")]
    pub url: String,
    /// Bearer token for the API.
    #[arg(long, env = "RACKBOOT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data dir: with no --token, a short-lived token is minted from the local issuer key there
    /// (if this user can read it).
    #[arg(long, env = "RACKBOOT_DATA_DIR", default_value = "/var/lib/rackboot")]
    pub data_dir: PathBuf,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable table.
    #[default]
    Table,
    /// JSON, for scripts.
    Json,
}

impl ClientArgs {
    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }
}

/// A client for one rackboot API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// Lifetime of a token the CLI mints for itself from the local key.
const SELF_MINTED_TTL: Duration = Duration::from_secs(300);

impl ApiClient {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let token = match &args.token {
            Some(t) if !t.trim().is_empty() => Some(t.trim().to_owned()),
            _ => match LocalIssuer::open_existing(&args.data_dir) {
                Ok(Some(issuer)) => Some(
                    issuer
                        .mint("rackboot-cli", &["admin".to_owned()], SELF_MINTED_TTL)
                        .context("cannot mint a CLI token from the local issuer key")?,
                ),
                Ok(None) => None,
                Err(err) => {
                    tracing::debug!(error = %err, "local issuer key unusable; sending no token");
                    None
                }
            },
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .no_proxy();
        if args.url.starts_with("http://") {
            // Plain HTTP needs no CA certificates; without this the client would load the
            // system's, and fail where there are none (an empty root, a `FROM scratch` image).
            builder = builder.tls_certs_only(Vec::<reqwest::Certificate>::new());
        }
        let http = builder.build().context("cannot build the HTTP client")?;
        Ok(Self {
            http,
            base: args.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// The base URL this client talks to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// GET `path` (e.g. `/hsm/v2/State/Components`) and decode the JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.send(self.request(reqwest::Method::GET, path)).await?;
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("reading the answer to GET {path}"))?;
        serde_json::from_slice(&body)
            .with_context(|| format!("rackboot's answer to GET {path} is not the expected JSON"))
    }

    /// POST JSON; the answer's JSON body, if there is one.
    pub async fn post(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        self.with_body(reqwest::Method::POST, path, Some(body))
            .await
    }

    /// PUT JSON; the answer's JSON body, if there is one.
    pub async fn put(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        self.with_body(reqwest::Method::PUT, path, Some(body)).await
    }

    /// PATCH JSON; the answer's JSON body, if there is one.
    pub async fn patch(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        self.with_body(reqwest::Method::PATCH, path, Some(body))
            .await
    }

    /// DELETE, with an optional JSON body (BSS takes its selector in the body).
    pub async fn delete(
        &self,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        self.with_body(reqwest::Method::DELETE, path, body).await
    }

    /// PUT a raw byte stream (image uploads) with `Content-Type: application/octet-stream`.
    pub async fn put_stream(
        &self,
        path: &str,
        body: reqwest::Body,
        len: Option<u64>,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let mut req = self
            .request(reqwest::Method::PUT, path)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            // An upload may legitimately take longer than the JSON timeout.
            .timeout(Duration::from_secs(24 * 3600));
        if let Some(len) = len {
            req = req.header(reqwest::header::CONTENT_LENGTH, len);
        }
        let resp = self.send(req.body(body)).await?;
        json_body(resp, path).await
    }

    /// POST JSON and read a streamed `application/x-ndjson` answer, handing each line's JSON
    /// to `on_line`; returns the last line.
    pub async fn post_ndjson(
        &self,
        path: &str,
        body: &impl Serialize,
        mut on_line: impl FnMut(&serde_json::Value),
    ) -> anyhow::Result<serde_json::Value> {
        use futures_util::StreamExt;
        let req = self
            .request(reqwest::Method::POST, path)
            .header(reqwest::header::ACCEPT, "application/x-ndjson")
            .json(body);
        let resp = self.send(req).await?;
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut last = None;
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(
                &chunk.with_context(|| format!("reading the answer to POST {path}"))?,
            );
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_slice(&line).with_context(|| {
                    format!("rackboot's answer to POST {path} is not line-delimited JSON")
                })?;
                on_line(&v);
                last = Some(v);
            }
        }
        last.with_context(|| format!("rackboot's answer to POST {path} was empty"))
    }

    async fn with_body(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = self.send(req).await?;
        json_body(resp, path).await
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with('/') {
            format!("{}{path}", self.base)
        } else {
            format!("{}/{path}", self.base)
        };
        let req = self
            .http
            .request(method, url)
            .header(reqwest::header::ACCEPT, "application/json");
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let (method, path) = match req.try_clone().and_then(|r| r.build().ok()) {
            Some(r) => (r.method().to_string(), r.url().path().to_owned()),
            None => (String::new(), String::new()),
        };
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(err) if err.is_connect() => {
                anyhow::bail!(
                    "cannot connect to rackboot at {}: {err} (is `rackboot serve` running? pass \
                     --url or set RACKBOOT_URL)",
                    self.base
                )
            }
            Err(err) if err.is_timeout() => {
                anyhow::bail!("rackboot at {} did not answer in time: {err}", self.base)
            }
            Err(err) => return Err(err).context(format!("{method} {path} failed")),
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        let detail = problem_detail(&body);
        let mut msg = format!("{method} {path}: {status}");
        if let Some(d) = detail {
            msg.push_str(": ");
            msg.push_str(&d);
        }
        match status.as_u16() {
            401 if self.token.is_none() => msg.push_str(
                " (no token sent: pass --token or set RACKBOOT_TOKEN — mint one with `rackboot \
                 token create --scope admin` — or run where --data-dir holds a readable issuer key)",
            ),
            401 => msg.push_str(" (the token was refused: mint a new one with `rackboot token create`)"),
            403 => msg.push_str(" (the token lacks the scope this needs: mint one with the scope named above)"),
            _ => {}
        }
        anyhow::bail!(msg)
    }
}

async fn json_body(
    resp: reqwest::Response,
    path: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    let body = resp
        .bytes()
        .await
        .with_context(|| format!("reading the answer from {path}"))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    Ok(Some(serde_json::from_slice(&body).with_context(|| {
        format!("rackboot's answer from {path} is not JSON")
    })?))
}

/// The `detail` (or `title`) of an RFC 7807 problem body, or the body text if short.
fn problem_detail(body: &[u8]) -> Option<String> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        for key in ["detail", "title", "message"] {
            if let Some(s) = v
                .get(key)
                .and_then(|d| d.as_str())
                .filter(|s| !s.is_empty())
            {
                return Some(s.to_owned());
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    (!text.is_empty() && text.len() <= 200).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_detail_prefers_detail() {
        let b = br#"{"type":"about:blank","title":"Not Found","status":404,"detail":"no node x1"}"#;
        assert_eq!(problem_detail(b).as_deref(), Some("no node x1"));
        assert_eq!(problem_detail(b"").as_deref(), None);
    }
}
