//! Federation with an upstream OpenCHAMI management API (SMD + BSS): pull this rack's share of
//! the inventory and boot parameters, push what the rack learns through a durable outbox, and
//! keep booting from the local copy when the upstream is gone.
//!
//! - **Pull** every `upstream.interval`: Components, EthernetInterfaces, groups and boot
//!   parameters, filtered to the rack's scope (an xname prefix or an upstream group), applied
//!   as a diff (`Store::apply_upstream`): unchanged data costs no write; objects are marked
//!   upstream-owned and the upstream wins for them.
//! - **On demand**: a bootscript request for a MAC the store does not know asks the upstream
//!   (within `lookup_deadline`) before falling back to the unknown-node script.
//! - **Push**: RedfishEndpoint writes queue an outbox row in the same transaction; the
//!   deliverer sends them in order (POST, and PUT on 409, so a resend after a crash is
//!   harmless), retrying with backoff, deleting a row only after the upstream accepted it.

pub mod cli;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::Upstream;
use crate::store::{
    ApplyStats, BootParameters, Component, EthernetInterface, OutboxItem, Store, UpstreamSnapshot,
};

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
    /// MACs looked up on demand recently (no upstream storm from one retrying node).
    recent: Mutex<std::collections::HashMap<String, std::time::Instant>>,
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

/// `application/x-www-form-urlencoded` (reqwest's form feature is not built in).
fn form_urlencode(pairs: &[(&str, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}

/// Whether `id` is inside the xname `prefix` (`x1000c0` holds `x1000c0s0b0n0`, not `x1000c01`).
pub fn in_prefix(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// The elements of a list answer, bare (`[…]`) or wrapped (`{"Components": […]}`).
fn list(v: Value, key: &str) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove(key) {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn normalize_ei(mut ei: EthernetInterface) -> Option<EthernetInterface> {
    let mac = pxe_core_mac(&ei.mac_address)?;
    ei.mac_address = mac.clone();
    ei.id = mac.replace(':', "");
    Some(ei)
}

fn pxe_core_mac(m: &str) -> Option<String> {
    pxe_core::MacAddr::parse_nic(m).ok().map(|m| m.to_string())
}

impl Federation {
    pub fn new(cfg: Upstream, store: Store) -> anyhow::Result<Federation> {
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
                cfg,
                store,
                tokens: Default::default(),
                status: Mutex::new(status),
                recent: Default::default(),
                wake: tokio::sync::Notify::new(),
            }),
        })
    }

    fn smd(&self, path: &str) -> String {
        format!("{}/hsm/v2{path}", self.inner.cfg.smd.trim_end_matches('/'))
    }

    fn bss(&self, path: &str) -> String {
        let base = self.inner.cfg.bss.as_deref().unwrap_or(&self.inner.cfg.smd);
        format!("{}/boot/v1{path}", base.trim_end_matches('/'))
    }

    fn set_error(&self, e: &anyhow::Error, reachable: bool) {
        let mut s = self.inner.status.lock().unwrap_or_else(|p| p.into_inner());
        s.last_error = Some(format!("{e:#}"));
        s.last_error_at = Some(rfc3339_now());
        s.reachable = reachable;
    }

    /// The bearer token, if auth is configured: the token file (re-read when it changes) or an
    /// OAuth2 client-credentials token (cached until shortly before it expires).
    async fn token(&self, fresh: bool) -> anyhow::Result<Option<String>> {
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
            let body: Value = resp.json().await.unwrap_or(Value::Null);
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
    async fn send(
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
                let body = resp.text().await.unwrap_or_default();
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
    async fn get_json(&self, url: &str) -> anyhow::Result<Option<Value>> {
        let resp = self.send(|h| h.get(url)).await?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = resp.bytes().await?;
        if !status.is_success() {
            bail!(
                "GET {url}: {status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            );
        }
        Ok(Some(
            serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))?,
        ))
    }

    async fn get_list<T: serde::de::DeserializeOwned>(
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

    /// The rack's share of what the upstream holds.
    async fn fetch(&self) -> anyhow::Result<UpstreamSnapshot> {
        let comps: Vec<Component> = self
            .get_list(&self.smd("/State/Components"), "Components")
            .await?;
        let eis: Vec<EthernetInterface> = self
            .get_list(
                &self.smd("/Inventory/EthernetInterfaces"),
                "EthernetInterfaces",
            )
            .await?;
        let groups: Vec<crate::store::Group> =
            self.get_list(&self.smd("/groups"), "groups").await?;
        let bps: Vec<BootParameters> = self
            .get_list(&self.bss("/bootparameters"), "bootparameters")
            .await?;
        Ok(self.scope(comps, eis, groups, bps))
    }

    fn scope(
        &self,
        comps: Vec<Component>,
        eis: Vec<EthernetInterface>,
        groups: Vec<crate::store::Group>,
        bps: Vec<BootParameters>,
    ) -> UpstreamSnapshot {
        let cfg = &self.inner.cfg;
        let members: Option<BTreeSet<String>> = cfg.group.as_ref().map(|g| {
            groups
                .iter()
                .filter(|x| &x.label == g)
                .flat_map(|x| x.members.ids.iter().cloned())
                .collect()
        });
        let in_scope = |id: &str| match (&cfg.xname_prefix, &members) {
            (Some(p), _) => in_prefix(id, p),
            (_, Some(m)) => m.contains(id),
            _ => false,
        };
        let components: Vec<Component> = comps.into_iter().filter(|c| in_scope(&c.id)).collect();
        let interfaces: Vec<EthernetInterface> = eis
            .into_iter()
            .filter(|e| e.component_id.as_deref().is_some_and(in_scope))
            .filter_map(normalize_ei)
            .collect();
        let macs: BTreeSet<&str> = interfaces.iter().map(|e| e.mac_address.as_str()).collect();
        let nids: BTreeSet<i64> = components.iter().filter_map(|c| c.nid).collect();
        let boot_parameters = bps
            .into_iter()
            .filter_map(|mut bp| {
                bp.hosts.retain(|h| in_scope(h));
                bp.macs = bp
                    .macs
                    .iter()
                    .filter_map(|m| pxe_core_mac(m))
                    .filter(|m| macs.contains(m.as_str()))
                    .collect();
                bp.nids.retain(|n| nids.contains(n));
                (!bp.hosts.is_empty() || !bp.macs.is_empty() || !bp.nids.is_empty()).then_some(bp)
            })
            .collect();
        let groups = groups
            .into_iter()
            .filter_map(|mut g| {
                g.members.ids.retain(|m| in_scope(m));
                (!g.members.ids.is_empty()).then_some(g)
            })
            .collect();
        UpstreamSnapshot {
            components,
            interfaces,
            groups,
            boot_parameters,
        }
    }

    /// One full pull.
    pub async fn pull(&self) -> anyhow::Result<ApplyStats> {
        let snap = match self.fetch().await {
            Ok(s) => s,
            Err(e) => {
                let reachable = !e.chain().any(|c| {
                    c.downcast_ref::<reqwest::Error>()
                        .is_some_and(|r| r.is_connect() || r.is_timeout())
                });
                self.set_error(&e, reachable);
                return Err(e);
            }
        };
        let nodes: Vec<String> = snap
            .components
            .iter()
            .filter(|c| c.kind.as_deref() == Some("Node"))
            .map(|c| c.id.clone())
            .collect();
        let labels: Vec<String> = snap.groups.iter().map(|g| g.label.clone()).collect();
        let mut stats = self.inner.store.apply_upstream(snap, true).await?;
        match self.pull_cloud_init(&nodes, &labels).await {
            Ok((written, unchanged)) => {
                stats.written += written;
                stats.unchanged += unchanged;
            }
            Err(e) => {
                self.set_error(&e, true);
                return Err(e);
            }
        }
        let mut s = self.inner.status.lock().unwrap_or_else(|p| p.into_inner());
        s.reachable = true;
        s.last_pull = Some(rfc3339_now());
        s.last_pull_stats = Some(stats);
        s.last_error = None;
        Ok(stats)
    }

    fn cloud_init_url(&self, path: &str) -> String {
        let base = self
            .inner
            .cfg
            .cloud_init
            .as_deref()
            .unwrap_or(&self.inner.cfg.smd);
        format!("{}/cloud-init/admin{path}", base.trim_end_matches('/'))
    }

    /// cloud-init data for the rack: the cluster defaults, the groups of the rack's SMD groups,
    /// and each in-scope node's instance-info; written only where it changed. An upstream
    /// without a cloud-init service (404) has nothing to give. (written, unchanged)
    async fn pull_cloud_init(
        &self,
        nodes: &[String],
        labels: &[String],
    ) -> anyhow::Result<(usize, usize)> {
        use crate::store::CiKind;
        let mut want: Vec<(CiKind, String, Value)> = Vec::new();
        if let Some(d) = self
            .get_json(&self.cloud_init_url("/cluster-defaults"))
            .await?
        {
            want.push((
                CiKind::Defaults,
                crate::store::CLOUD_INIT_DEFAULTS_KEY.to_owned(),
                d,
            ));
        }
        if let Some(v) = self.get_json(&self.cloud_init_url("/groups")).await? {
            for g in list(v, "groups") {
                if let Some(name) = g.get("name").and_then(Value::as_str)
                    && labels.iter().any(|l| l == name)
                {
                    want.push((CiKind::Group, name.to_owned(), g.clone()));
                }
            }
        }
        for x in nodes {
            if let Some(d) = self
                .get_json(&self.cloud_init_url(&format!("/instance-info/{x}")))
                .await?
            {
                want.push((CiKind::Node, x.clone(), d));
            }
        }
        let (mut written, mut unchanged) = (0, 0);
        for (kind, key, doc) in want {
            if self.inner.store.get_cloud_init(kind, key.clone()).await? == Some(doc.clone()) {
                unchanged += 1;
            } else {
                self.inner.store.put_cloud_init(kind, key, doc).await?;
                written += 1;
            }
        }
        Ok((written, unchanged))
    }

    /// On demand: asks the upstream about `mac` (within the lookup deadline) and stores what
    /// is in this rack's scope. True if something was stored.
    pub async fn lookup_mac(&self, mac: &str) -> bool {
        {
            let mut recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            recent.retain(|_, t| now.duration_since(*t) < Duration::from_secs(30));
            if recent.contains_key(mac) {
                return false;
            }
            recent.insert(mac.to_owned(), now);
        }
        let work = async {
            let eis: Vec<EthernetInterface> = self
                .get_list(
                    &self.smd(&format!("/Inventory/EthernetInterfaces?MACAddress={mac}")),
                    "EthernetInterfaces",
                )
                .await?;
            let Some(xname) = eis.iter().find_map(|e| e.component_id.clone()) else {
                return Ok::<_, anyhow::Error>(false);
            };
            let comps: Vec<Component> = self
                .get_list(
                    &self.smd(&format!("/State/Components?id={xname}")),
                    "Components",
                )
                .await?;
            let bps: Vec<BootParameters> = self
                .get_list(
                    &self.bss(&format!("/bootparameters?mac={mac}")),
                    "bootparameters",
                )
                .await?;
            let snap = self.scope(comps, eis, Vec::new(), bps);
            if snap.components.is_empty() {
                return Ok(false);
            }
            self.inner.store.apply_upstream(snap, false).await?;
            Ok(true)
        };
        match tokio::time::timeout(self.inner.cfg.lookup_deadline, work).await {
            Ok(Ok(found)) => {
                tracing::info!(mac, found, "upstream lookup for an unknown MAC");
                found
            }
            Ok(Err(e)) => {
                tracing::warn!(mac, error = %format!("{e:#}"), "upstream lookup failed");
                false
            }
            Err(_) => {
                tracing::warn!(mac, deadline = ?self.inner.cfg.lookup_deadline, "upstream lookup timed out");
                false
            }
        }
    }

    /// Delivers one outbox item; Ok when the upstream holds it.
    async fn deliver(&self, item: &OutboxItem) -> anyhow::Result<()> {
        match item.kind.as_str() {
            "RedfishEndpoint" => {
                let url = self.smd("/Inventory/RedfishEndpoints");
                let resp = self.send(|h| h.post(&url).json(&item.body)).await?;
                let status = resp.status();
                if status.is_success() {
                    return Ok(());
                }
                if status == reqwest::StatusCode::CONFLICT {
                    let put = self.smd(&format!("/Inventory/RedfishEndpoints/{}", item.key));
                    let resp = self.send(|h| h.put(&put).json(&item.body)).await?;
                    if resp.status().is_success() {
                        return Ok(());
                    }
                    bail!("PUT {put}: {}", resp.status());
                }
                let body = resp.text().await.unwrap_or_default();
                bail!(
                    "POST {url}: {status}: {}",
                    body.chars().take(200).collect::<String>()
                )
            }
            "ComponentState" => {
                let url = self.smd(&format!("/State/Components/{}/StateData", item.key));
                let resp = self.send(|h| h.patch(&url).json(&item.body)).await?;
                let status = resp.status();
                if status.is_success() {
                    return Ok(());
                }
                if status == reqwest::StatusCode::NOT_FOUND {
                    // Not a component the upstream knows: nothing to update, nothing to retry.
                    tracing::warn!(xname = %item.key, "upstream has no such component; state not pushed");
                    return Ok(());
                }
                bail!("PATCH {url}: {status}")
            }
            "ComponentFlag" => {
                let url = self.smd(&format!("/State/Components/{}/FlagOnly", item.key));
                let resp = self.send(|h| h.patch(&url).json(&item.body)).await?;
                let status = resp.status();
                if status.is_success() {
                    return Ok(());
                }
                if status == reqwest::StatusCode::NOT_FOUND {
                    tracing::warn!(xname = %item.key, "upstream has no such component; flag not pushed");
                    return Ok(());
                }
                bail!("PATCH {url}: {status}")
            }
            other => {
                tracing::error!(kind = other, "outbox item of an unknown kind dropped");
                Ok(())
            }
        }
    }

    /// Sends the outbox in order until it is empty; stops at the first failure.
    pub async fn drain(&self) -> anyhow::Result<usize> {
        let mut sent = 0;
        loop {
            let head = self.inner.store.outbox_head(256).await?;
            if head.is_empty() {
                return Ok(sent);
            }
            let mut done = Vec::new();
            let mut failed = None;
            for item in &head {
                match self.deliver(item).await {
                    Ok(()) => done.push(item.id),
                    Err(e) => {
                        failed = Some((item.id, e));
                        break;
                    }
                }
            }
            sent += done.len();
            let batch = u64::try_from(done.len()).unwrap_or(0);
            if !done.is_empty() {
                self.inner.store.outbox_done(done).await?;
            }
            self.inner
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pushed += batch;
            if let Some((id, e)) = failed {
                self.inner.store.outbox_failed(id, format!("{e:#}")).await?;
                return Err(e);
            }
        }
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

    /// For the DHCP service: looks an unknown client up upstream (within the lookup deadline).
    pub fn unknown_lookup(&self) -> crate::timeline::UnknownLookup {
        let me = self.clone();
        Arc::new(move |mac: pxe_core::MacAddr| {
            let me = me.clone();
            Box::pin(async move { me.lookup_mac(&mac.to_string()).await })
        })
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
