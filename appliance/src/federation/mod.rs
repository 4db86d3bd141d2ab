//! Federation with an upstream OpenCHAMI management API (SMD + BSS): pull this rack's share of
//! the inventory and boot parameters, push what the rack learns through a durable outbox, and
//! keep booting from the local copy when the upstream is gone.
//!
//! - **Pull** every `upstream.interval`: Components, EthernetInterfaces, groups and boot
//!   parameters, filtered to the rack's scope (an xname prefix or an upstream group), applied
//!   as a diff (`Store::apply_upstream`): unchanged data costs no write; objects are marked
//!   upstream-owned and the upstream wins for them.
//! - **On demand**: a bootscript request or a DHCP DISCOVER for a MAC the store does not know
//!   asks the upstream (within `lookup_deadline`) before falling back to the unknown-node
//!   answer. Bounded (`lookup.rs`): `lookup_concurrency` at once, `lookup_rate` a second, one
//!   per MAC at a time, unknown MACs not asked again within `lookup_negative_ttl`; a lookup
//!   refused by a limit is answered as unknown at once and counted in
//!   `rackboot_upstream_lookups_total{outcome}`.
//! - **Push**: RedfishEndpoint writes queue an outbox row in the same transaction; the
//!   deliverer sends them in order (POST, and PUT on 409, so a resend after a crash is
//!   harmless), retrying with backoff, deleting a row only after the upstream accepted it.
//!
//! Owns: pull loop, outbox deliverer, on-demand lookups, `/rackboot/v1/upstream`, `rackboot
//! upstream`. May call: `client`, `config`, `http`, `metrics`, `output`, `store`, `timeline`.

pub mod cli;
mod lookup;
mod pull;
mod push;
mod upstream_http;

pub use lookup::Outcome as LookupOutcome;
pub use pull::in_prefix;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::Upstream;
use crate::metrics::Metrics;
use crate::store::{ApplyStats, Store};

/// What `/rackboot/v1/upstream` and `rackboot upstream` show.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub smd: String,
    pub scope: String,
    pub reachable: bool,
    pub last_pull: Option<String>,
    pub last_pull_stats: Option<ApplyStats>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub outbox_depth: i64,
    pub outbox_oldest_age_s: Option<i64>,
    pub pushed: u64,
    pub upstream_owned: std::collections::BTreeMap<String, i64>,
}

#[derive(Default)]
struct TokenCache {
    /// (token, when the file was modified) for token_file.
    file: Option<(String, SystemTime)>,
    /// (token, valid until) for OAuth2.
    oauth: Option<(String, std::time::Instant)>,
}

struct Inner {
    cfg: Upstream,
    store: Store,
    http: reqwest::Client,
    tokens: tokio::sync::Mutex<TokenCache>,
    status: Mutex<Status>,
    /// Admission for on-demand lookups (no upstream storm from a MAC flood).
    lookups: Arc<lookup::Limits>,
    metrics: Arc<Metrics>,
    wake: tokio::sync::Notify,
}

/// The federation client. Cheap to clone.
#[derive(Clone)]
pub struct Federation {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Federation(..)")
    }
}

fn rfc3339_now() -> String {
    crate::timeline::routes::rfc3339(crate::store::now_ms())
}

impl Federation {
    /// A client whose counters go to a metrics registry of its own (tests, the CLI).
    pub fn new(cfg: Upstream, store: Store) -> anyhow::Result<Federation> {
        Self::with_metrics(cfg, store, Arc::new(Metrics::new()))
    }

    pub fn with_metrics(
        cfg: Upstream,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Federation> {
        let mut b = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .no_proxy();
        if let Some(ca) = &cfg.ca_bundle {
            let pem = std::fs::read(ca)
                .with_context(|| format!("upstream.ca_bundle {}", ca.display()))?;
            b = b.tls_certs_only(
                reqwest::Certificate::from_pem_bundle(&pem)
                    .with_context(|| format!("upstream.ca_bundle {} is not PEM", ca.display()))?,
            );
        }
        if let (Some(c), Some(k)) = (&cfg.client_cert, &cfg.client_key) {
            let mut pem =
                std::fs::read(k).with_context(|| format!("upstream.client_key {}", k.display()))?;
            pem.extend(
                std::fs::read(c)
                    .with_context(|| format!("upstream.client_cert {}", c.display()))?,
            );
            b = b.identity(
                reqwest::Identity::from_pem(&pem).context("upstream client certificate")?,
            );
        }
        let status = Status {
            smd: cfg.smd.clone(),
            scope: match (&cfg.xname_prefix, &cfg.group) {
                (Some(p), _) => format!("xname prefix {p}"),
                (_, Some(g)) => format!("group {g}"),
                _ => String::new(),
            },
            ..Default::default()
        };
        store.set_push_upstream(true);
        Ok(Federation {
            inner: Arc::new(Inner {
                http: b.build().context("cannot build the upstream HTTP client")?,
                lookups: Arc::new(lookup::Limits::new(&cfg, metrics.clone())),
                metrics,
                cfg,
                store,
                tokens: Default::default(),
                status: Mutex::new(status),
                wake: tokio::sync::Notify::new(),
            }),
        })
    }

    /// Runs the pull loop and the outbox deliverer until `shutdown`.
    pub fn spawn(&self, tasks: &mut tokio::task::JoinSet<()>, shutdown: CancellationToken) {
        let me = self.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            loop {
                match me.pull().await {
                    Ok(s) => tracing::debug!(written = s.written, deleted = s.deleted, unchanged = s.unchanged, "upstream pull"),
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "upstream pull failed; serving the local copy"),
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(me.inner.cfg.interval) => {}
                }
            }
        });
        let me = self.clone();
        tasks.spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                let wait = match me.drain().await {
                    Ok(n) => {
                        if n > 0 {
                            tracing::info!(pushed = n, "outbox drained to the upstream");
                        }
                        backoff = Duration::from_millis(500);
                        // A cheap look at the outbox each second: a new push goes up at once.
                        me.inner.cfg.interval.min(Duration::from_secs(1))
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "outbox delivery failed; keeping it");
                        me.set_error(&e, false);
                        let w = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        w
                    }
                };
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                    () = me.inner.wake.notified() => {}
                }
            }
        });
    }

    /// For the DHCP service and the bootscript: admits a lookup of an unknown client at once
    /// (refusals counted), whose future asks the upstream within the lookup deadline.
    pub fn unknown_lookup(&self) -> crate::timeline::UnknownLookup {
        use crate::timeline::Admission;
        let me = self.clone();
        Arc::new(move |mac: pxe_core::MacAddr| match me.admit(mac) {
            Ok(lookup) => Admission::Asking(Box::pin(lookup)),
            Err(lookup::Outcome::CachedNegative) => Admission::Unknown,
            Err(_) => Admission::Deferred,
        })
    }

    /// On-demand lookups running now.
    pub fn lookups_in_flight(&self) -> usize {
        self.inner.lookups.in_flight()
    }

    /// Whether inventory and boot data may also be created here (`upstream.allow_local`).
    pub fn allows_local(&self) -> bool {
        self.inner.cfg.allow_local
    }

    /// Wakes the deliverer (something was queued).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    pub async fn status(&self) -> anyhow::Result<Status> {
        let (depth, oldest) = self.inner.store.outbox_depth().await?;
        let owned = self.inner.store.upstream_counts().await?;
        let mut s = self
            .inner
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        s.outbox_depth = depth;
        s.outbox_oldest_age_s = oldest.map(|t| (crate::store::now_ms() - t) / 1000);
        s.upstream_owned = owned;
        Ok(s)
    }
}

/// `/rackboot/v1/upstream` (wrap with the `status` scope).
pub fn router(f: Option<Federation>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/rackboot/v1/upstream", get(status))
        .with_state(f)
}

async fn status(
    axum::extract::State(f): axum::extract::State<Option<Federation>>,
) -> Result<crate::http::Json<Value>, crate::http::Problem> {
    match f {
        None => Ok(crate::http::Json(serde_json::json!({"configured": false}))),
        Some(f) => {
            let s = f.status().await.map_err(crate::http::Problem::internal)?;
            let mut v = serde_json::to_value(s).map_err(crate::http::Problem::internal)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("configured".into(), Value::Bool(true));
            }
            Ok(crate::http::Json(v))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::upstream_http::{form_urlencode, list};
    use super::*;

    #[test]
    fn xname_prefix_scope() {
        assert!(in_prefix("x1000c0s0b0n0", "x1000c0"));
        assert!(in_prefix("x1000c0", "x1000c0"));
        assert!(!in_prefix("x1000c01s0b0n0", "x1000c0"));
        assert!(!in_prefix("x1000c1s0b0n0", "x1000c0"));
        assert!(!in_prefix("x2000c0s0b0n0", "x1000c0"));
    }

    #[test]
    fn form_encoding() {
        assert_eq!(
            form_urlencode(&[
                ("grant_type", "client_credentials".into()),
                ("client_secret", "a b&c=d/é".into())
            ]),
            "grant_type=client_credentials&client_secret=a+b%26c%3Dd%2F%C3%A9"
        );
    }

    #[test]
    fn bare_and_wrapped_lists() {
        let v = serde_json::json!({"Components": [{"ID": "a"}]});
        assert_eq!(list(v, "Components").len(), 1);
        assert_eq!(list(serde_json::json!([1, 2]), "x").len(), 2);
        assert!(list(serde_json::json!({"message": "no"}), "Components").is_empty());
    }
}
