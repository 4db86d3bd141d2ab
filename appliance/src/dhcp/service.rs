//! The DHCP service: socket → drop-oldest queue → engine → (durable lease) → reply.
//!
//! Three tasks:
//! - the reader drains the socket into the [`DropOldestQueue`] as fast as it can, putting the
//!   datagrams of clients the inventory knows in the lane the engine empties first;
//! - the engine task answers datagrams in order with `pxe_core`'s [`DhcpServer`]. Replies that
//!   change no lease (OFFER, NAK, INFORM) go out at once; the others go to
//! - the committer, which writes every pending lease change in one store transaction (group
//!   commit), and only after it is durable sends the ACKs (ARCHITECTURE invariant 3).

use std::net::SocketAddrV4;
use std::sync::{Arc, RwLock};

use pxe_core::dhcp::server::{
    DhcpServer, Drop, Event, Inventory, Lease, LeaseKind, Reservation, RxInfo, ServerConfig,
};
use pxe_core::dhcp::wire::MessageType;
use pxe_core::{Instant, MacAddr};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::commit::{Committer, Pending};
use super::inventory::{InventoryView, StaticLease};
use super::queue::{DropOldestQueue, Lane};
use super::socket::DhcpSocket;
use crate::metrics::Metrics;
use crate::store::{LeaseRecordKind, Store, now_ms};
use crate::timeline::{Admission, Observers, Subject, Timeline, stage};

/// Datagrams waiting for the engine before the oldest are dropped.
const QUEUE_DEPTH: usize = 8192;

/// Largest datagram read (DHCP over Ethernet fits in 1500; relays may add a little).
const MAX_DATAGRAM: usize = 4096;

/// How long an expired dynamic lease is kept (listed, and preferred for its client) before the
/// pruner deletes it.
pub const LEASE_RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
/// How long a DISCOVER whose lookup found the node waits for the inventory reload that has
/// it; past this it is dropped (counted `inventory_pending`) and the client's retransmission
/// is answered.
const VIEW_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The running engine's self-test (part of `rackboot serve`'s start, so of an appliance
/// update's health check): a probe goes through the same queue and the same engine as a
/// client's datagram, and must come back answered. An INFORM (a DISCOVER with the PXE vendor
/// class for a proxyDHCP) changes no lease and takes no pool address; the answer is not sent,
/// counted or put on the timeline.
#[derive(Clone)]
pub struct Probe {
    queue: Arc<DropOldestQueue<Datagram>>,
    subnet: Option<std::net::Ipv4Addr>,
    proxy: bool,
}

/// The probe's client: a locally administered MAC no NIC ships with.
const PROBE_MAC: [u8; 6] = [0x02, 0x72, 0x62, 0x73, 0x74, 0x00];

impl Probe {
    /// Sends the probe and waits for the engine's answer.
    pub async fn run(&self, within: std::time::Duration) -> Result<String, String> {
        let Some(subnet) = self.subnet else {
            return Err("no subnet is configured: the engine has nobody to answer".into());
        };
        let (done, answer) = tokio::sync::oneshot::channel();
        let bytes = probe_packet(subnet, self.proxy);
        let d = Datagram {
            src: SocketAddrV4::new(subnet, 67),
            bytes,
            looked_up: true,
            probe: Some(done),
        };
        // The known lane: the health check must pass during a storm of unknown clients.
        if self.queue.push(d, Lane::Known).is_some() {
            return Err("the engine's queue is full".into());
        }
        match tokio::time::timeout(within, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the engine dropped the probe unanswered".into()),
            Err(_) => Err(format!("the engine did not answer within {within:?}")),
        }
    }
}

/// A relayed (giaddr = the subnet's network address) INFORM, or a PXE DISCOVER for a proxy.
fn probe_packet(subnet: std::net::Ipv4Addr, proxy: bool) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(dst) = p.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    put(0, &[1, 1, 6, 1]); // BOOTREQUEST, Ethernet, 6-byte MAC, one hop (relayed)
    put(4, &0x7262_7374u32.to_be_bytes()); // xid
    if !proxy {
        put(12, &subnet.octets()); // ciaddr
    }
    put(24, &subnet.octets()); // giaddr
    put(28, &PROBE_MAC);
    p.extend_from_slice(&[99, 130, 83, 99]);
    if proxy {
        p.extend_from_slice(&[53, 1, 1]);
        p.extend_from_slice(&[60, 9]);
        p.extend_from_slice(b"PXEClient");
    } else {
        p.extend_from_slice(&[53, 1, 8]);
    }
    p.push(255);
    p
}

/// Starts the DHCP service on `iface`:`port`; the [`Probe`] tests the running engine.
///
/// The socket and the tasks that touch it (reader, engine, committer) run on `packets`, the
/// runtime of the boot path's UDP services, so that HTTP traffic (a storm's images) on the
/// main runtime cannot delay a DHCP answer; the pruner and the inventory refresher, which only
/// talk to the store, stay on the caller's runtime.
#[allow(clippy::too_many_arguments)]
pub async fn spawn(
    tasks: &mut JoinSet<()>,
    packets: &tokio::runtime::Handle,
    iface: &str,
    port: u16,
    config: ServerConfig,
    store: Store,
    obs: Observers,
    shutdown: CancellationToken,
) -> anyhow::Result<Probe> {
    let Observers {
        metrics,
        timeline,
        on_lease,
        on_unknown,
    } = obs;
    let sock = {
        // Registered with the packet runtime's reactor, which the tasks using it run on.
        let _packets = packets.enter();
        Arc::new(DhcpSocket::bind(iface, port)?)
    };
    let local_ip = crate::netif::ipv4_of(iface)?.addr;
    let queue = Arc::new(DropOldestQueue::<Datagram>::new(QUEUE_DEPTH));

    let probe = Probe {
        queue: queue.clone(),
        subnet: config.subnets.first().map(|s| s.network),
        proxy: config.mode == pxe_core::dhcp::server::Mode::Proxy,
    };
    let mut server = DhcpServer::new(config);
    let now = Instant::from_millis(u64::try_from(now_ms()).unwrap_or(0));
    let mut restored = 0;
    // Expired leases are restored too (until pruned): a returning client gets its old address.
    for l in store.list_leases().await? {
        if l.kind == LeaseRecordKind::Dynamic {
            let expires = Instant::from_millis(u64::try_from(l.expires_ms).unwrap_or(0));
            server.restore(
                &Lease {
                    mac: l.mac,
                    ip: l.ip,
                    expires,
                    kind: LeaseKind::Dynamic,
                },
                now,
            );
            restored += 1;
        }
    }
    tracing::info!(restored, "DHCP: restored dynamic leases from the store");

    // Pruner: dynamic leases expired for longer than LEASE_RETENTION leave the store.
    {
        let (store, stop) = (store.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let retention = i64::try_from(LEASE_RETENTION.as_millis()).unwrap_or(i64::MAX);
                match store.prune_leases(now_ms().saturating_sub(retention)).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        pruned = n,
                        "DHCP: removed dynamic leases expired for over a day"
                    ),
                    Err(err) => tracing::warn!(error = %err, "DHCP: cannot prune expired leases"),
                }
            }
        });
    }

    // Subscribed before the first load, so a change made while it loads is reloaded.
    let mut inventory_changes = store.subscribe_inventory();
    let loaded = *inventory_changes.borrow_and_update();
    let view = Arc::new(RwLock::new(Arc::new(load_view(&store).await?)));
    // The store's inventory version the published view was loaded at (it only grows): the
    // engine reindexes when it changes, and a DISCOVER held for a lookup waits for the version
    // the lookup stored.
    let generation = Arc::new(tokio::sync::watch::Sender::new(loaded));

    // Reader.
    {
        let (sock, queue, metrics, view, stop) = (
            sock.clone(),
            queue.clone(),
            metrics.clone(),
            view.clone(),
            shutdown.clone(),
        );
        tasks.spawn_on(
            async move {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                loop {
                    let got = tokio::select! {
                        () = stop.cancelled() => break,
                        r = sock.recv(&mut buf) => r,
                    };
                    match got {
                        Ok(meta) => {
                            let bytes = buf.get(..meta.len).unwrap_or(&[]).to_vec();
                            let known = client_mac(&bytes).is_some_and(|mac| {
                                view.read()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .get(&mac)
                                    .is_some()
                            });
                            let lane = if known { Lane::Known } else { Lane::Other };
                            let d = Datagram {
                                src: meta.src,
                                bytes,
                                looked_up: false,
                                probe: None,
                            };
                            if queue.push(d, lane).is_some() {
                                metrics.dhcp_drop("overload");
                            }
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "DHCP: receive failed");
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        }
                    }
                }
            },
            packets,
        );
    }

    // Inventory refresher.
    {
        let (store, view, generation, stop) = (
            store.clone(),
            view.clone(),
            generation.clone(),
            shutdown.clone(),
        );
        let mut changes = inventory_changes;
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    r = changes.changed() => if r.is_err() { break },
                }
                let version = *changes.borrow_and_update();
                match load_view(&store).await {
                    Ok(v) => {
                        tracing::debug!(reservations = v.len(), version, "DHCP: inventory reloaded");
                        *view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(v);
                        generation.send_replace(version);
                    }
                    Err(err) => tracing::error!(error = %err, "DHCP: cannot reload reservations; keeping the old ones"),
                }
            }
        });
    }

    // Committer.
    let (commit_tx, commit_rx) = mpsc::channel::<Pending>(QUEUE_DEPTH);
    tasks.spawn_on(
        Committer {
            sock: sock.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            timeline: timeline.clone(),
            on_lease: on_lease.clone(),
        }
        .run(commit_rx),
        packets,
    );

    // Engine.
    {
        let (sock, queue, stop) = (sock.clone(), queue.clone(), shutdown.clone());
        tasks.spawn_on(async move {
            let mut out = vec![0u8; 1500];
            let mut seen_generation = 0;
            let mut pool_warning = Occasional::default();
            loop {
                let Datagram { src, bytes, looked_up, probe } = tokio::select! {
                    () = stop.cancelled() => break,
                    item = queue.pop() => item,
                };
                let current = view.read().unwrap_or_else(|p| p.into_inner()).clone();
                if let Some(done) = probe {
                    let now = Instant::from_millis(u64::try_from(now_ms()).unwrap_or(0));
                    let rx = RxInfo { src, local_ip };
                    let answer = match server.handle(now, &rx, &bytes, &ViewRef(&current), &mut out) {
                        Ok(h) if h.lease_change.is_none() && h.reply.is_some() => Ok(format!(
                            "the engine answered a probe {} with {} ({} reservations)",
                            h.event.received.as_str().to_uppercase(),
                            h.event.sent.map_or("nothing", MessageType::as_str).to_uppercase(),
                            current.len()
                        )),
                        Ok(h) => Err(format!(
                            "the engine answered a probe {} with {} and a lease change",
                            h.event.received.as_str().to_uppercase(),
                            h.event.sent.map_or("nothing", MessageType::as_str).to_uppercase()
                        )),
                        Err(drop) => Err(format!("the engine dropped the probe: {}", drop.as_str())),
                    };
                    let _ = done.send(answer);
                    continue;
                }
                // Federated: a DISCOVER from a client the inventory does not know waits (off
                // this loop) for an upstream lookup, then goes round again, so a node the
                // upstream knows gets its static lease on its very first DISCOVER. The lookup
                // is admitted or refused at once (federation's limits: concurrency, rate,
                // negative cache), so a flood of new MACs spawns at most `lookup_concurrency`
                // tasks and never holds a DISCOVER without bound. A client known to be unknown
                // is answered as any unknown client is (a pool address when there is a pool).
                // One refused by a limit is dropped (counted `lookup_deferred`), not given a
                // pool address: it may be a node the upstream knows, and its retransmission is
                // asked about first.
                let admission = if !looked_up
                    && let Some(lookup) = &on_unknown
                    && let Ok(req) = pxe_core::dhcp::wire::Request::parse(&bytes)
                    && req.message_type == MessageType::Discover
                    && current.get(&req.mac).is_none()
                {
                    lookup(req.mac)
                } else {
                    Admission::Unknown
                };
                if matches!(admission, Admission::Deferred) {
                    metrics.dhcp_packet(MessageType::Discover.as_str(), "dropped");
                    metrics.dhcp_drop("lookup_deferred");
                    continue;
                }
                if let Admission::Asking(found) = admission {
                    let (queue, mut published, store, metrics) =
                        (queue.clone(), generation.subscribe(), store.clone(), metrics.clone());
                    tokio::spawn(async move {
                        let lane = if found.await {
                            // Answer from a view that has what the lookup stored: one loaded at
                            // or after the store's version now. Answering from an older one
                            // would offer a node the upstream knows a pool address (seen in CI
                            // under a flood, when the reload took longer than a fixed wait).
                            let stored = *store.subscribe_inventory().borrow();
                            if !view_reaches(&mut published, stored, VIEW_WAIT).await {
                                // The client retransmits; by then the view has the node.
                                metrics.dhcp_packet(MessageType::Discover.as_str(), "dropped");
                                metrics.dhcp_drop("inventory_pending");
                                return;
                            }
                            Lane::Known
                        } else {
                            Lane::Other
                        };
                        let _ = queue.push(Datagram { src, bytes, looked_up: true, probe: None }, lane);
                    });
                    continue;
                }
                let g = *generation.borrow();
                if g != seen_generation {
                    server.inventory_changed(&ViewRef(&current));
                    seen_generation = g;
                }
                let now = Instant::from_millis(u64::try_from(now_ms()).unwrap_or(0));
                let rx = RxInfo { src, local_ip };
                match server.handle(now, &rx, &bytes, &ViewRef(&current), &mut out) {
                    Ok(h) => {
                        let e = h.event;
                        let xname = current.get(&e.mac).map(|s| s.xname.as_str()).unwrap_or("");
                        tracing::debug!(
                            mac = %e.mac, ip = ?e.ip, xid = format_args!("{:#010x}", e.xid), xname,
                            received = e.received.as_str(), sent = e.sent.map(MessageType::as_str).unwrap_or("-"),
                            ipxe = e.ipxe, r#static = e.is_static, "DHCP"
                        );
                        if e.received == MessageType::Discover && (e.ipxe || e.firmware) {
                            let stage = if e.ipxe { stage::IPXE_DHCP_DISCOVER } else { stage::DHCP_DISCOVER };
                            timeline.record(Subject::Mac(e.mac), stage, true, serde_json::json!({"xid": e.xid}));
                        }
                        let reply = h.reply.map(|t| (t.dst, out.get(..t.len).unwrap_or(&[]).to_vec()));
                        match h.lease_change {
                            Some(change) => {
                                let hostname = current.get(&e.mac).map(|s| s.hostname.clone());
                                // The switch port (option 82) of a lease the BMC hook wants.
                                let relay_port = match (&on_lease, e.ip, e.sent) {
                                    (Some(hook), Some(ip), Some(MessageType::Ack)) if hook.wants(ip) => {
                                        pxe_core::dhcp::wire::Request::parse(&bytes)
                                            .ok()
                                            .and_then(|r| crate::timeline::relay_port(&r.relay_agent_info))
                                    }
                                    _ => None,
                                };
                                let pending = Pending { change, hostname, reply, event: e, relay_port };
                                // Never wait on the store here: a committer that has fallen
                                // behind (a slow or busy disk) turns into counted drops, which
                                // the client's retransmission repairs.
                                match commit_tx.try_send(pending) {
                                    Ok(()) => {}
                                    Err(mpsc::error::TrySendError::Full(p)) => {
                                        metrics.dhcp_packet(p.event.received.as_str(), "dropped");
                                        metrics.dhcp_drop("store_busy");
                                    }
                                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                                }
                            }
                            None => {
                                if let Some((dst, bytes)) = reply {
                                    send(&sock, &bytes, dst).await;
                                }
                                sent(&metrics, &timeline, &e);
                            }
                        }
                    }
                    Err(drop) => {
                        metrics.dhcp_drop(drop.as_str());
                        match drop {
                            Drop::Malformed(err) => tracing::debug!(peer = %src, error = %err, "DHCP: malformed datagram dropped"),
                            // Once a minute at most: a flood of new MACs must not become a
                            // flood of log lines (each drop is counted in the metrics).
                            Drop::PoolExhausted => if let Some(since) = pool_warning.due() {
                                tracing::warn!(peer = %src, dropped_since_last_warning = since, "DHCP: dynamic pool exhausted; requests from new clients dropped (counted in rackboot_dhcp_drops_total)");
                            },
                            other => tracing::debug!(peer = %src, reason = ?other, "DHCP: no reply"),
                        }
                    }
                }
            }
        }, packets);
    }
    Ok(probe)
}

/// Counts a handled message and puts what was sent on the boot timeline.
pub(super) fn sent(metrics: &Metrics, timeline: &Timeline, e: &Event) {
    metrics.dhcp_packet(
        e.received.as_str(),
        e.sent.map_or("silent", MessageType::as_str),
    );
    let ip = e.ip.map(|a| a.to_string());
    let (stage, ok) = match (e.sent, e.ipxe, e.firmware) {
        (Some(MessageType::Offer), false, true) => (stage::DHCP_OFFER, true),
        (Some(MessageType::Ack), true, _) => (stage::IPXE_DHCP, true),
        (Some(MessageType::Ack), false, true) => (stage::DHCP_ACK, true),
        (Some(MessageType::Ack), false, false) => (stage::OS_DHCP, true),
        (Some(MessageType::Nak), true, _) => (stage::IPXE_DHCP_NAK, false),
        (Some(MessageType::Nak), false, _) => (stage::DHCP_NAK, false),
        _ => return,
    };
    let detail = serde_json::json!({ "ip": ip, "xid": e.xid, "static": e.is_static });
    timeline.record(Subject::Mac(e.mac), stage, ok, detail);
}

/// The client hardware address of a BOOTREQUEST on Ethernet (`op` 1, `htype` 1, `hlen` 6),
/// read without parsing the rest: the reader only needs it to pick a lane.
fn client_mac(bytes: &[u8]) -> Option<MacAddr> {
    match bytes.get(..3)? {
        [1, 1, 6] => Some(MacAddr(bytes.get(28..34)?.try_into().ok()?)),
        _ => None,
    }
}

/// A warning given at most once a minute, counting what it held back.
#[derive(Default)]
struct Occasional {
    last: Option<std::time::Instant>,
    held_back: u64,
}

impl Occasional {
    /// `Some(held back since the last warning)` when a warning is due.
    fn due(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(60))
        {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

/// A received datagram on its way to the engine.
struct Datagram {
    src: SocketAddrV4,
    bytes: Vec<u8>,
    /// Back from an upstream lookup: answered now, whatever the inventory says.
    looked_up: bool,
    /// A [`Probe`]'s: answered here, never on the wire.
    probe: Option<tokio::sync::oneshot::Sender<Result<String, String>>>,
}

pub(super) async fn send(sock: &DhcpSocket, bytes: &[u8], dst: SocketAddrV4) {
    if let Err(err) = sock.send_to(bytes, dst).await {
        tracing::warn!(%dst, error = %err, "DHCP: send failed");
    }
}

/// Whether the view published on `published` reaches the store's inventory `version` within
/// `within` (false also when the refresher has stopped).
async fn view_reaches(
    published: &mut tokio::sync::watch::Receiver<u64>,
    version: u64,
    within: std::time::Duration,
) -> bool {
    let reached = published.wait_for(|v| *v >= version);
    matches!(tokio::time::timeout(within, reached).await, Ok(Ok(_)))
}

async fn load_view(store: &Store) -> Result<InventoryView, crate::store::StoreError> {
    let res = store.reservations().await?;
    Ok(InventoryView::new(res.into_iter().map(|r| StaticLease {
        mac: r.mac,
        ip: r.ip,
        hostname: r.hostname,
        xname: r.xname,
        boot_file: None,
    })))
}

struct ViewRef<'a>(&'a InventoryView);

impl Inventory for ViewRef<'_> {
    fn reservation(&self, mac: MacAddr) -> Option<Reservation<'_>> {
        self.0.get(&mac).map(|s| Reservation {
            ip: s.ip,
            hostname: Some(s.hostname.as_str()),
            boot_file: s.boot_file.as_deref(),
        })
    }

    fn is_reserved(&self, ip: std::net::Ipv4Addr) -> bool {
        self.0.is_reserved(ip)
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
