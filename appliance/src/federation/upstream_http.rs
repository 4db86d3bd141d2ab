//! Talking to the upstream: SMD/BSS URLs, the bearer token (a file re-read on change, or
//! OAuth2 client credentials cached for their lifetime), requests with timeouts and capped
//! bodies, and OpenCHAMI's bare-or-wrapped list answers.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use super::{Federation, rfc3339_now};
use crate::http::capped::{read_capped, read_prefix};

/// `application/x-www-form-urlencoded` (reqwest's form feature is not built in).
pub(super) fn form_urlencode(pairs: &[(&str, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}

/// The elements of a list answer, bare (`[…]`) or wrapped (`{"Components": […]}`).
pub(super) fn list(v: Value, key: &str) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove(key) {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

impl Federation {
    /// Largest upstream answer read (`upstream.max_body`).
    pub(super) fn max_body(&self) -> u64 {
        self.inner.cfg.max_body.0
    }

    pub(super) fn smd(&self, path: &str) -> String {
        format!("{}/hsm/v2{path}", self.inner.cfg.smd.trim_end_matches('/'))
    }

    pub(super) fn bss(&self, path: &str) -> String {
        let base = self.inner.cfg.bss.as_deref().unwrap_or(&self.inner.cfg.smd);
        format!("{}/boot/v1{path}", base.trim_end_matches('/'))
    }

    pub(super) fn set_error(&self, e: &anyhow::Error, reachable: bool) {
        let mut s = self.inner.status.lock().unwrap_or_else(|p| p.into_inner());
        s.last_error = Some(format!("{e:#}"));
        s.last_error_at = Some(rfc3339_now());
        s.reachable = reachable;
    }

    /// The bearer token, if auth is configured: the token file (re-read when it changes) or an
    /// OAuth2 client-credentials token (cached until shortly before it expires).
    pub(super) async fn token(&self, fresh: bool) -> anyhow::Result<Option<String>> {
        let cfg = &self.inner.cfg;
        let mut cache = self.inner.tokens.lock().await;
        if let Some(path) = &cfg.token_file {
            let modified = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .with_context(|| format!("upstream.token_file {}", path.display()))?;
            if let Some((t, at)) = &cache.file
                && *at == modified
                && !fresh
            {
                return Ok(Some(t.clone()));
            }
            let t = std::fs::read_to_string(path)
                .with_context(|| format!("upstream.token_file {}", path.display()))?
                .trim()
                .to_owned();
            if t.is_empty() {
                bail!("upstream.token_file {} is empty", path.display());
            }
            cache.file = Some((t.clone(), modified));
            return Ok(Some(t));
        }
        if let Some(o) = &cfg.oauth2 {
            if let Some((t, until)) = &cache.oauth
                && !fresh
                && std::time::Instant::now() < *until
            {
                return Ok(Some(t.clone()));
            }
            let secret = std::fs::read_to_string(&o.client_secret_file).with_context(|| {
                format!(
                    "upstream.oauth2.client_secret_file {}",
                    o.client_secret_file.display()
                )
            })?;
            let mut form = vec![
                ("grant_type", "client_credentials".to_owned()),
                ("client_id", o.client_id.clone()),
                ("client_secret", secret.trim().to_owned()),
            ];
            if let Some(s) = &o.scope {
                form.push(("scope", s.clone()));
            }
            let resp = self
                .inner
                .http
                .post(&o.token_url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form_urlencode(&form))
                .send()
                .await
                .with_context(|| format!("token endpoint {}", o.token_url))?;
            let status = resp.status();
            let body = read_capped(resp, self.max_body())
                .await
                .with_context(|| format!("token endpoint {} (upstream.max_body)", o.token_url))?;
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if !status.is_success() {
                bail!(
                    "token endpoint {} refused the client credentials: {status} {body}",
                    o.token_url
                );
            }
            let t = body
                .get("access_token")
                .and_then(Value::as_str)
                .context("token endpoint answered no access_token")?
                .to_owned();
            let ttl = body
                .get("expires_in")
                .and_then(Value::as_u64)
                .unwrap_or(300);
            let until =
                std::time::Instant::now() + Duration::from_secs(ttl.saturating_sub(30).max(1));
            cache.oauth = Some((t.clone(), until));
            return Ok(Some(t));
        }
        Ok(None)
    }

    /// Sends a request with auth; a 401 gets one retry with a fresh token, then a clear error.
    pub(super) async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        for attempt in 0..2 {
            let mut rb = build(&self.inner.http);
            if let Some(t) = self.token(attempt > 0).await? {
                rb = rb.bearer_auth(t);
            }
            let resp = rb.send().await?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
                if attempt == 0 {
                    continue;
                }
                let url = resp.url().to_string();
                let body = read_prefix(resp, 200).await;
                let how = match (&self.inner.cfg.token_file, &self.inner.cfg.oauth2) {
                    (Some(f), _) => format!("the token in upstream.token_file {} was refused (expired or revoked?): replace it", f.display()),
                    (_, Some(_)) => "the OAuth2 token was refused even after a refresh".to_owned(),
                    _ => "no upstream credentials are configured (upstream.token_file or upstream.oauth2)".to_owned(),
                };
                bail!(
                    "{url}: 401 Unauthorized: {how}; upstream said: {}",
                    body.chars().take(200).collect::<String>()
                );
            }
            return Ok(resp);
        }
        bail!("unreachable")
    }

    /// GET a JSON document; OpenCHAMI's 404 for "empty" is `None`.
    pub(super) async fn get_json(&self, url: &str) -> anyhow::Result<Option<Value>> {
        let resp = self.send(|h| h.get(url)).await?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let body = read_prefix(resp, 200).await;
            bail!(
                "GET {url}: {status}: {}",
                body.chars().take(200).collect::<String>()
            );
        }
        let body = read_capped(resp, self.max_body())
            .await
            .with_context(|| format!("GET {url} (upstream.max_body)"))?;
        Ok(Some(
            serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))?,
        ))
    }

    pub(super) async fn get_list<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        key: &str,
    ) -> anyhow::Result<Vec<T>> {
        let v = self.get_json(url).await?.unwrap_or(Value::Null);
        let mut out = Vec::new();
        for item in list(v, key) {
            match serde_json::from_value::<T>(item) {
                Ok(t) => out.push(t),
                Err(e) => {
                    tracing::warn!(url, error = %e, "skipping an upstream object that does not parse")
                }
            }
        }
        Ok(out)
    }
}
