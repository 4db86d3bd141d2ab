//! The boot timeline: every step of every node's boot, across DHCP, TFTP, HTTP and cloud-init.
//!
//! Services call [`Timeline::record`] (never blocks: a bounded queue, overflow counted). One
//! writer task resolves who the event is about (MAC, source IP via the lease table, or xname),
//! stores batches in the `boot_events` table (the last `timeline.boots_per_node` boots per MAC),
//! feeds the stage metrics and fans events out to `/rackboot/v1/events` subscribers.
//!
//! Owns: `boot_events` writer task, `/rackboot/v1/status`, `/nodes/*/timeline`, `/events`,
//! `rackboot status`. May call: `client`, `http`, `inventory`, `metrics`, `output`, `store`,
//! `version`.

pub mod cli;
pub mod routes;
pub mod stage;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pxe_core::MacAddr;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{BootEvent, Store, now_ms};

/// Events waiting for the writer; beyond this, new events are dropped (and counted).
const QUEUE: usize = 16 * 1024;

/// Who an event is about, as the recording service knows it.
#[derive(Debug, Clone)]
pub enum Subject {
    Mac(MacAddr),
    /// An HTTP or TFTP peer: resolved to a MAC through the lease table.
    Ip(Ipv4Addr),
    /// A node the request named (cloud-init): resolved to its first interface.
    Xname(String),
}

#[derive(Debug)]
struct Pending {
    subject: Subject,
    stage: &'static str,
    ok: bool,
    detail: serde_json::Value,
    ts_ms: i64,
}

/// What a service reports to: metrics and the boot timeline.
#[derive(Clone)]
pub struct Observers {
    pub metrics: Arc<Metrics>,
    pub timeline: Timeline,
    /// Told about every address DHCP hands out (BMC auto-discovery listens here).
    pub on_lease: Option<LeaseHook>,
    /// Asked about DHCP clients the inventory does not know (federation looks them up
    /// upstream); answers at once (see [`Admission`]).
    pub on_unknown: Option<UnknownLookup>,
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observers")
            .field("on_lease", &self.on_lease)
            .field("on_unknown", &self.on_unknown.is_some())
            .finish_non_exhaustive()
    }
}

/// See [`Observers::on_unknown`].
pub type UnknownLookup = Arc<dyn Fn(pxe_core::MacAddr) -> Admission + Send + Sync>;

/// Whether a client the inventory does not know is looked up upstream now.
pub enum Admission {
    /// Being asked: the future is true if the inventory now has the client.
    Asking(LookupFuture),
    /// Known to be unknown (asked lately, or the upstream failed): answer it as unknown.
    Unknown,
    /// Not asked now (a limit, or its lookup is already running): it may be known upstream,
    /// so DHCP leaves it to retransmit (and a retransmission is asked about first).
    Deferred,
}

impl Admission {
    /// The lookup, when one is being made.
    pub fn asking(self) -> Option<LookupFuture> {
        match self {
            Admission::Asking(f) => Some(f),
            Admission::Unknown | Admission::Deferred => None,
        }
    }
}

/// An admitted lookup: true if the inventory now has the client.
pub type LookupFuture = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

/// Addresses ACKed inside `first..=last` are sent to `tx` (never blocks; full = skipped).
#[derive(Debug, Clone)]
pub struct LeaseHook {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    pub tx: mpsc::Sender<Leased>,
}

/// An address handed out, with the switch port it came through when option 82 said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    pub ip: Ipv4Addr,
    /// (circuit-id, remote-id), printable text or `hex:…`.
    pub port: Option<(String, String)>,
}

impl LeaseHook {
    pub fn wants(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&ip)
    }

    pub fn leased(&self, lease: Leased) {
        if self.wants(lease.ip) {
            let _ = self.tx.try_send(lease);
        }
    }
}

/// Option 82's circuit-id and remote-id as text (`hex:…` when not printable); `None` without a
/// circuit-id.
pub fn relay_port(raw82: &[u8]) -> Option<(String, String)> {
    use pxe_core::dhcp::wire::relay_sub_option;
    let text = |b: &[u8]| {
        if b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
            String::from_utf8_lossy(b).trim().to_owned()
        } else {
            format!("hex:{}", hex::encode(b))
        }
    };
    let circuit = relay_sub_option(raw82, 1).filter(|c| !c.is_empty())?;
    Some((
        text(circuit),
        relay_sub_option(raw82, 2).map(text).unwrap_or_default(),
    ))
}

/// Handle for recording and watching boot events. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Timeline {
    tx: mpsc::Sender<Pending>,
    live: broadcast::Sender<BootEvent>,
    metrics: Arc<Metrics>,
    dropped: Arc<AtomicU64>,
    boot_acks: Arc<std::sync::Mutex<std::collections::HashMap<MacAddr, (Ipv4Addr, i64)>>>,
}

/// MACs whose latest boot-firmware ACK is remembered at most (a DHCP client is one entry).
const MAX_BOOT_ACKS: usize = 65_536;

impl Timeline {
    /// Notes that boot firmware (PXE, UEFI HTTP Boot or iPXE) with `mac` is being acknowledged
    /// `ip` now: the start of a boot, which is when a node may be handed a join token. Called by
    /// the DHCP committer after the lease is stored and before the ACK is sent; an installed
    /// system's DHCP (no PXE vendor class, no iPXE user class) is not a boot. In memory only:
    /// after a restart, a node gets a token at its next boot.
    pub fn boot_acked(&self, mac: MacAddr, ip: Ipv4Addr) {
        let mut acks = self.boot_acks.lock().unwrap_or_else(|p| p.into_inner());
        if acks.len() >= MAX_BOOT_ACKS && !acks.contains_key(&mac) {
            // The oldest half goes: those boots are long past their token's lifetime.
            let mut times: Vec<i64> = acks.values().map(|(_, t)| *t).collect();
            times.sort_unstable();
            let cut = times.get(times.len() / 2).copied().unwrap_or(i64::MAX);
            acks.retain(|_, (_, t)| *t > cut);
        }
        acks.insert(mac, (ip, now_ms()));
    }

    /// The address and time (Unix ms) of `mac`'s latest boot-firmware ACK since start.
    pub fn boot_ack(&self, mac: MacAddr) -> Option<(Ipv4Addr, i64)> {
        self.boot_acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&mac)
            .copied()
    }

    /// Starts the writer task.
    pub fn spawn(
        tasks: &mut JoinSet<()>,
        store: Store,
        metrics: Arc<Metrics>,
        boots_per_node: u32,
        shutdown: CancellationToken,
    ) -> Timeline {
        let (tx, mut rx) = mpsc::channel::<Pending>(QUEUE);
        let (live, _) = broadcast::channel(1024);
        let timeline = Timeline {
            tx,
            live: live.clone(),
            metrics: metrics.clone(),
            dropped: Arc::new(AtomicU64::new(0)),
            boot_acks: Arc::default(),
        };
        let dropped = timeline.dropped.clone();
        tasks.spawn(async move {
            let mut last_ts: std::collections::HashMap<String, i64> = Default::default();
            loop {
                let first = tokio::select! {
                    () = shutdown.cancelled() => break,
                    p = rx.recv() => match p { Some(p) => p, None => break },
                };
                let mut batch = vec![first];
                while batch.len() < 512 {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let mut events = Vec::with_capacity(batch.len());
                for p in batch {
                    match resolve(&store, &p.subject).await {
                        Ok(Some((mac, xname))) => events.push(BootEvent {
                            mac,
                            xname,
                            boot: 0,
                            ts_ms: p.ts_ms,
                            stage: p.stage.to_owned(),
                            ok: p.ok,
                            detail: p.detail,
                        }),
                        Ok(None) => {
                            metrics.timeline_unattributed();
                            tracing::debug!(subject = ?p.subject, stage = p.stage, "timeline: no node for this event; not stored");
                        }
                        Err(err) => {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            metrics.timeline_dropped();
                            tracing::debug!(subject = ?p.subject, stage = p.stage, error = %err, "timeline: cannot look up the event's node; dropped");
                        }
                    }
                }
                if events.is_empty() {
                    continue;
                }
                let n_events = events.len();
                match store
                    .record_boot_events(events, i64::from(boots_per_node), stage::starts_boot)
                    .await
                {
                    Ok(stored) => {
                        for e in stored {
                            let prev = last_ts.insert(e.mac.clone(), e.ts_ms);
                            if let Some(prev) = prev {
                                metrics.stage_duration(&e.stage, e.ts_ms.saturating_sub(prev));
                            }
                            metrics.stage_event(&e.stage, e.ok);
                            if e.ok {
                                tracing::info!(mac = %e.mac, xname = e.xname.as_deref().unwrap_or(""), boot = e.boot, stage = %e.stage, detail = %e.detail, "boot stage");
                            } else {
                                tracing::warn!(mac = %e.mac, xname = e.xname.as_deref().unwrap_or(""), boot = e.boot, stage = %e.stage, detail = %e.detail, "boot stage failed");
                            }
                            let _ = live.send(e);
                        }
                    }
                    Err(err) => {
                        // Never blocks a boot: the events are counted as dropped. A full
                        // partition is logged once by the store, not once per batch.
                        for _ in 0..n_events {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            metrics.timeline_dropped();
                        }
                        if matches!(err, crate::store::StoreError::Full { .. }) {
                            tracing::debug!(error = %err, events = n_events, "timeline: boot events dropped");
                        } else {
                            tracing::warn!(error = %err, events = n_events, "timeline: cannot store boot events; dropped");
                        }
                    }
                }
            }
        });
        timeline
    }

    /// Starts the retention task: at start and then hourly, events older than `max_age` and
    /// beyond the newest `max_events` are deleted (`boots_per_node` is kept on every write).
    pub fn spawn_pruner(
        tasks: &mut JoinSet<()>,
        store: Store,
        max_age: std::time::Duration,
        max_events: u64,
        shutdown: CancellationToken,
    ) {
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let age = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
                match store
                    .prune_boot_events(now_ms().saturating_sub(age), max_events)
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(pruned = n, "timeline: removed boot events past retention")
                    }
                    Err(err) => tracing::debug!(error = %err, "timeline: cannot prune boot events"),
                }
            }
        });
    }

    /// Records that `subject` reached `stage` (never blocks).
    pub fn record(
        &self,
        subject: Subject,
        stage: &'static str,
        ok: bool,
        detail: serde_json::Value,
    ) {
        let p = Pending {
            subject,
            stage,
            ok,
            detail,
            ts_ms: now_ms(),
        };
        if self.tx.try_send(p).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics.timeline_dropped();
        }
    }

    /// Live events, as they are stored.
    pub fn subscribe(&self) -> broadcast::Receiver<BootEvent> {
        self.live.subscribe()
    }

    /// Events dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The MAC (and xname) an event is about; `None` when no node matches (counted apart from
/// the events a failing store drops).
async fn resolve(
    store: &Store,
    subject: &Subject,
) -> Result<Option<(String, Option<String>)>, crate::store::StoreError> {
    Ok(match subject {
        Subject::Mac(m) => Some((m.to_string(), None)),
        Subject::Ip(ip) => store.mac_for_ip(*ip).await?.map(|m| (m, None)),
        Subject::Xname(x) => store
            .node_info(x.clone())
            .await?
            .and_then(|node| node.interfaces.into_iter().next())
            .map(|(mac, _)| (mac, Some(x.clone()))),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// An event no node matches is not stored and is counted apart from the dropped ones (a
    /// storm's "no event dropped" must not hide it, and must not be failed by it).
    #[tokio::test]
    async fn events_without_a_node_are_counted_not_dropped() {
        let (mut tasks, stop) = (JoinSet::new(), CancellationToken::new());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let timeline = Timeline::spawn(&mut tasks, store.clone(), metrics.clone(), 8, stop.clone());
        let mut live = timeline.subscribe();
        let detail = serde_json::Value::Null;
        timeline.record(
            Subject::Ip(Ipv4Addr::new(192, 0, 2, 99)),
            stage::BOOTSCRIPT,
            true,
            detail.clone(),
        );
        timeline.record(
            Subject::Xname("x9c0s0b0n0".into()),
            stage::CLOUD_INIT_META_DATA,
            true,
            detail.clone(),
        );
        let mac = pxe_core::MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        timeline.record(Subject::Mac(mac), stage::DHCP_DISCOVER, true, detail);
        // Events are handled in order: once the MAC's is stored, the two before it were seen.
        let stored = live.recv().await.unwrap();
        assert_eq!(stored.mac, mac.to_string());
        let text = metrics.encode();
        assert!(
            text.contains("rackboot_timeline_unattributed_events_total 2"),
            "{text}"
        );
        assert!(
            text.contains("rackboot_timeline_dropped_events_total 0"),
            "{text}"
        );
        assert_eq!(timeline.dropped(), 0);
        assert_eq!(store.boot_status().await.unwrap().len(), 1);
        stop.cancel();
    }
}
