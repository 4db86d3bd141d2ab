//! Join tokens on the boot path: which boot-script request gets one.
//!
//! `/boot/v1/bootscript` is open (firmware calls it) and xnames are predictable, so a token goes
//! only to a request that looks like the node itself, once per boot:
//!
//! 1. the source address has budget left (a token bucket per address: [`BURST`] requests, then
//!    one per [`REFILL`]); past it the script is served without a token and the refusal is only
//!    counted and logged, not audited, because an audit row is a write and the limit is what
//!    bounds the writes an unauthenticated client can cause;
//! 2. the request carries the node's MAC (`?mac=`, as the DHCP-supplied URL does); by `?name=`
//!    or `?nid=` it never gets a token;
//! 3. that MAC is one of the node's EthernetInterfaces, with an address;
//! 4. the request comes from that address (the TCP peer; `X-Forwarded-For` is not believed here);
//! 5. the MAC holds a current DHCP lease for that address;
//! 6. no token was issued to the node since its latest *boot*: the DHCP ACK of boot firmware
//!    (PXE vendor class or iPXE user class) for that MAC and address, which the DHCP committer
//!    notes (`Timeline::boot_acked`) after storing the lease and before sending the ACK. iPXE
//!    does DHCP and then fetches its script once, so the first fetch after that ACK is the
//!    node's own; a second fetch in the same boot (a retry chain, or anyone else) gets no
//!    token. The installed system's own DHCP (udhcpc, dhclient, renewals) is no boot: it opens
//!    no new window once the node has enrolled. (The lease row's `updated_ms` changes on every
//!    ACK, renewals included, so it is not the signal.) The note is in memory: after a restart
//!    a node gets a token at its next boot. The check and the mint are one store write, which
//!    also supersedes the node's unused token (at most one live token per node) and appends
//!    the audit row.
//!
//! Every refusal is logged with its reason and counted in
//! `rackboot_identity_token_refusals_total{reason}`; all but `rate_limited` are also an
//! `identity_audit` row (`join-token`, ok = false) the administrator reads with
//! `rackboot cert audit`. What this does not stop (a host that spoofs the node's MAC and address
//! and wins the race to the first fetch) is in docs/threat-model.md.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pxe_core::MacAddr;

use super::Identity;
use crate::metrics::Metrics;
use crate::store::Audit;

/// Requests a source address may make at once before the limit applies.
pub const BURST: u32 = 6;
/// One more request per this long.
pub const REFILL: Duration = Duration::from_secs(10);
/// Source addresses tracked at most; idle ones (a full bucket) are forgotten first.
const MAX_SOURCES: usize = 4096;

/// A boot-script request for a known node.
#[derive(Debug, Clone)]
pub struct BootRequest<'a> {
    pub xname: &'a str,
    /// The `?mac=` of the request, if it had one.
    pub mac: Option<MacAddr>,
    /// The TCP peer (None when the server was not told it).
    pub peer: Option<Ipv4Addr>,
}

/// Why a boot script went out without a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Stable label (metric and log): `rate_limited`, `no_source`, `no_mac`, `mac_not_node`,
    /// `wrong_source`, `no_lease`, `no_boot`, `already_issued`, `error`.
    pub reason: &'static str,
    pub detail: String,
}

fn refusal(reason: &'static str, detail: String) -> Refusal {
    Refusal { reason, detail }
}

/// Decides and hands out join tokens on the boot path. Shared as `Arc<BootTokens>`.
pub struct BootTokens {
    id: Identity,
    /// The HTTPS URL nodes enroll at.
    url: String,
    limits: Mutex<Buckets>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for BootTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootTokens")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl BootTokens {
    pub fn new(id: Identity, url: String, metrics: Option<Arc<Metrics>>) -> BootTokens {
        BootTokens {
            id,
            url,
            limits: Mutex::new(Buckets::new(BURST, REFILL)),
            metrics,
        }
    }

    /// The kernel parameters for `req`'s boot script: `rackboot.join=… rackboot.ca=…
    /// rackboot.url=…`, or nothing (the refusal logged, counted and, but for rate limiting,
    /// audited).
    pub async fn kernel_params(&self, req: &BootRequest<'_>) -> String {
        // Policy tpm: the node proves itself with its TPM, so no token is minted (one would be
        // refused at enrollment anyway); the agent needs only where to enroll.
        if matches!(
            self.id.policy_for(req.xname).await,
            Ok(crate::config::EnrollPolicy::Tpm)
        ) {
            return format!(
                "rackboot.ca={} rackboot.url={}",
                self.id.ca().fingerprint(),
                self.url
            );
        }
        match self.decide(req, Instant::now()).await {
            Ok(token) => format!(
                "rackboot.join={token} rackboot.ca={} rackboot.url={}",
                self.id.ca().fingerprint(),
                self.url
            ),
            Err(r) => {
                self.refused(req, &r).await;
                String::new()
            }
        }
    }

    /// A token for `req`, or why not (nothing is logged or audited here but the mint and the
    /// `already_issued` refusal, which share one write).
    pub async fn decide(&self, req: &BootRequest<'_>, now: Instant) -> Result<String, Refusal> {
        let x = req.xname;
        let Some(peer) = req.peer else {
            return Err(refusal(
                "no_source",
                "the request's source address is unknown".into(),
            ));
        };
        if !self
            .limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(peer, now)
        {
            return Err(refusal(
                "rate_limited",
                format!(
                    "{peer} asked for boot scripts of known nodes more than {BURST} times at once (one more every {})",
                    humantime::format_duration(REFILL)
                ),
            ));
        }
        let Some(mac) = req.mac else {
            return Err(refusal(
                "no_mac",
                format!(
                    "the request from {peer} names {x} by name or NID: a join token goes only to a request with the node's MAC (?mac=), from its own address"
                ),
            ));
        };
        let store = self.id.store();
        let info = store.node_info(x.to_owned()).await.map_err(error)?;
        let ip = info
            .as_ref()
            .and_then(|n| {
                n.interfaces
                    .iter()
                    .find(|(m, _)| m.parse::<MacAddr>().is_ok_and(|m| m == mac))
            })
            .map(|(_, ip)| *ip);
        let ip = match ip {
            None => {
                return Err(refusal(
                    "mac_not_node",
                    format!("{mac} (from {peer}) is not an EthernetInterface of {x}"),
                ));
            }
            Some(None) => {
                return Err(refusal(
                    "mac_not_node",
                    format!(
                        "{x}'s interface {mac} has no inventory address to bind a token to (from {peer})"
                    ),
                ));
            }
            Some(Some(ip)) => ip,
        };
        if peer != ip {
            return Err(refusal(
                "wrong_source",
                format!(
                    "the request for {x} ({mac}) came from {peer}, not from its inventory address {ip}"
                ),
            ));
        }
        let lease = store
            .lease_ack(mac)
            .await
            .map_err(error)?
            .filter(|l| l.ip == ip && l.expires_ms > crate::store::now_ms());
        if lease.is_none() {
            return Err(refusal(
                "no_lease",
                format!(
                    "{mac} holds no current DHCP lease for {ip}: a token follows a boot's DHCP ACK"
                ),
            ));
        }
        let Some((_, acked_ms)) = self
            .id
            .inner
            .timeline
            .boot_ack(mac)
            .filter(|(acked, _)| *acked == ip)
        else {
            return Err(refusal(
                "no_boot",
                format!(
                    "no boot of {mac} at {ip} since rackboot started: a token follows the DHCP ACK of boot firmware (PXE or iPXE), not of an installed system"
                ),
            ));
        };
        let acked = crate::timeline::routes::rfc3339(acked_ms);
        let (token, at) = self
            .id
            .mint_since(
                x,
                ip,
                Some(acked_ms),
                format!("to {ip} ({mac}), first boot script after the DHCP ACK of {acked}"),
                format!(
                    "already issued: {x}'s token for this boot (DHCP ACK of {acked}) was handed out; {ip} ({mac}) asked again"
                ),
            )
            .await
            .map_err(|e| refusal("error", format!("cannot mint a join token: {e}")))?;
        token.ok_or_else(|| {
            refusal(
                "already_issued",
                format!(
                    "{x}'s token for this boot was handed out at {} (after the DHCP ACK of {acked}); {ip} ({mac}) asked again",
                    crate::timeline::routes::rfc3339(at)
                ),
            )
        })
    }

    async fn refused(&self, req: &BootRequest<'_>, r: &Refusal) {
        if let Some(m) = &self.metrics {
            m.identity_token_refusal(r.reason);
        }
        let x = req.xname;
        match r.reason {
            "rate_limited" => {
                tracing::debug!(xname = x, reason = r.reason, detail = %r.detail, "boot script served without a join token");
                return;
            }
            "error" => {
                tracing::error!(xname = x, reason = r.reason, detail = %r.detail, "boot script served without a join token");
            }
            _ => {
                tracing::warn!(xname = x, reason = r.reason, detail = %r.detail, "boot script served without a join token");
            }
        }
        if r.reason == "already_issued" {
            return;
        }
        let audit = Audit {
            xname: Some(x.to_owned()),
            action: "join-token",
            serial: None,
            ok: false,
            detail: format!("{}: {}", r.reason.replace('_', " "), r.detail),
        };
        if let Err(e) = self.id.store().audit(audit).await {
            tracing::error!(error = %e, "could not write the identity audit");
        }
    }
}

/// How long a join token's row outlives its expiry (or its replacement): a replay within it is
/// refused naming the node ("already used", "expired", "replaced") rather than as unknown.
pub const TOKEN_RETENTION: Duration = Duration::from_secs(86_400);
/// How often expired join tokens are pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Deletes the join tokens that expired (or were replaced) more than `retention` before
/// `now_ms`; how many.
pub async fn prune(
    store: &crate::store::Store,
    now_ms: i64,
    retention: Duration,
) -> Result<usize, crate::store::StoreError> {
    let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 4);
    store.prune_join_tokens(now_ms.saturating_sub(keep)).await
}

/// Prunes expired join tokens every [`PRUNE_EVERY`] until `stop`.
pub fn spawn_pruner(
    tasks: &mut tokio::task::JoinSet<()>,
    store: crate::store::Store,
    stop: tokio_util::sync::CancellationToken,
) {
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            match prune(&store, crate::store::now_ms(), TOKEN_RETENTION).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "identity: removed expired join tokens"),
                Err(e) => tracing::warn!(error = %e, "identity: cannot prune join tokens"),
            }
        }
    });
}

fn error(e: crate::store::StoreError) -> Refusal {
    refusal("error", e.to_string())
}

/// Token buckets per source address.
#[derive(Debug)]
pub struct Buckets {
    burst: f64,
    refill: Duration,
    map: HashMap<Ipv4Addr, (f64, Instant)>,
}

impl Buckets {
    pub fn new(burst: u32, refill: Duration) -> Buckets {
        Buckets {
            burst: f64::from(burst),
            refill,
            map: HashMap::new(),
        }
    }

    fn level(&self, tokens: f64, at: Instant, now: Instant) -> f64 {
        let gained = now.saturating_duration_since(at).as_secs_f64()
            / self.refill.as_secs_f64().max(f64::MIN_POSITIVE);
        (tokens + gained).min(self.burst)
    }

    /// Takes one request's worth from `ip`'s bucket at `now`; false when it is empty.
    pub fn take(&mut self, ip: Ipv4Addr, now: Instant) -> bool {
        if !self.map.contains_key(&ip) && self.map.len() >= MAX_SOURCES {
            let full: Vec<Ipv4Addr> = self
                .map
                .iter()
                .filter(|(_, (t, at))| self.level(*t, *at, now) >= self.burst)
                .map(|(ip, _)| *ip)
                .collect();
            for ip in full {
                self.map.remove(&ip);
            }
            if self.map.len() >= MAX_SOURCES {
                return false;
            }
        }
        let (tokens, at) = self.map.get(&ip).copied().unwrap_or((self.burst, now));
        let level = self.level(tokens, at, now);
        if level < 1.0 {
            return false;
        }
        self.map.insert(ip, (level - 1.0, now));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_from_one_source_is_limited_and_others_are_not() {
        let mut b = Buckets::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let a: Ipv4Addr = "192.0.2.50".parse().unwrap_or(Ipv4Addr::LOCALHOST);
        let c: Ipv4Addr = "192.0.2.51".parse().unwrap_or(Ipv4Addr::LOCALHOST);
        let served = (0..100).filter(|_| b.take(a, t0)).count();
        assert_eq!(served, 3);
        assert!(b.take(c, t0), "another source is served");
        assert!(!b.take(a, t0 + Duration::from_secs(9)));
        assert!(b.take(a, t0 + Duration::from_secs(10)), "refilled");
        assert!(!b.take(a, t0 + Duration::from_secs(10)));
    }

    #[test]
    fn the_table_of_sources_is_bounded() {
        let mut b = Buckets::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..MAX_SOURCES as u32 {
            assert!(b.take(Ipv4Addr::from(0x0a00_0000 + i), t0));
        }
        // Every tracked source is busy: a new one waits.
        assert!(!b.take(Ipv4Addr::new(192, 0, 2, 9), t0));
        // Once they have refilled they are forgotten and the new one is served.
        assert!(b.take(Ipv4Addr::new(192, 0, 2, 9), t0 + Duration::from_secs(10)));
        assert!(b.map.len() <= MAX_SOURCES);
    }
}
