//! DNS from the inventory: the rack's authoritative zone (`dns.domain`: every node and BMC by
//! xname and by hostname, aliases, the appliance as `ns` and `rackboot`) and the matching
//! `in-addr.arpa` zones, AXFR/IXFR to `dns.secondaries` only, NOTIFY to them on every serial
//! change, and everything else forwarded to `dns.forwarders` (cached) or REFUSED.
//!
//! The zones are rebuilt when the store reports an inventory change (the signal DHCP reloads
//! on: API writes, discovery, federation pulls) and swapped in whole; the SOA serial moves only
//! when their content does and is kept in the store (`dns_serial`), so it never goes back.
//! Listeners bind only to the rack interface's address and device (SO_BINDTODEVICE, UDP and
//! TCP): a packet for that address arriving on another interface is not answered, so this is
//! never an open resolver elsewhere.
//! UDP is read by one OS thread per core (`udp.rs`, recvmmsg/sendmmsg on one blocking socket);
//! plain queries for our names are answered from answers encoded at each zone build
//! (`fast.rs`), everything else by `server::answer`, which also serves TCP.
//! Malformed requests get FORMERR (or nothing, when too short or a response), counted in
//! `rackboot_dns_responses_total`.
//!
//! Owns: the DNS service (:53 UDP and TCP), `dns_serial`, NOTIFY. May call: `config`,
//! `metrics`, `netif`, `store`.

mod fast;
mod forward;
mod server;
mod tsig;
#[cfg(test)]
mod tsig_tests;
mod udp;
mod zone;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RecordType, TSigner};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::metrics::Metrics;
use crate::store::Store;
use zone::{ZoneConfig, Zones};

/// What every listener shares.
pub struct Shared {
    zones: RwLock<Arc<Zones>>,
    /// Moves after every swap of `zones`: the UDP threads re-read `zones` only then.
    generation: AtomicU64,
    secondaries: Vec<Ipv4Addr>,
    forwarders: Vec<SocketAddr>,
    cache: forward::Cache,
    tsig: tsig::Keys,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn zones(&self) -> Arc<Zones> {
        self.zones.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// No secondaries, forwarders or keys: what the fast path's tests answer from.
    #[cfg(test)]
    fn for_tests(zones: Zones) -> Self {
        Shared {
            zones: RwLock::new(Arc::new(zones)),
            generation: AtomicU64::new(0),
            secondaries: Vec::new(),
            forwarders: Vec::new(),
            cache: forward::Cache::new(4),
            tsig: tsig::Keys::default(),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Swaps in `zones`; returns the ones it replaces.
    fn swap(&self, zones: Arc<Zones>) -> Arc<Zones> {
        let old = std::mem::replace(
            &mut *self.zones.write().unwrap_or_else(|p| p.into_inner()),
            zones,
        );
        self.generation.fetch_add(1, Ordering::Release);
        old
    }
}

/// Binds :`dns.port` (UDP and TCP) on `addr` of `iface`, builds the zones, and spawns the
/// listeners and the reload task.
pub async fn spawn(
    tasks: &mut JoinSet<()>,
    cfg: &config::Dns,
    iface: &str,
    addr: Ipv4Addr,
    store: Store,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut domain = Name::from_ascii(&cfg.domain)
        .with_context(|| format!("dns.domain {:?} is not a domain name", cfg.domain))?;
    domain.set_fqdn(true);
    let zcfg = ZoneConfig {
        domain,
        ttl: u32::try_from(cfg.ttl.as_secs()).unwrap_or(u32::MAX),
        server: addr,
        aliases: cfg.aliases.clone(),
    };
    let tsig = tsig::Keys::load(&cfg.tsig_keys)?;
    let bind = SocketAddrV4::new(addr, cfg.port);
    let udp =
        crate::netif::udp_socket_blocking(Some(iface), bind, udp::WAKE).with_context(|| {
            format!("cannot listen for DNS on UDP {bind} (dns.port; or dns.enabled = false)")
        })?;
    let tcp = crate::netif::tcp_listener(Some(iface), bind.into()).with_context(|| {
        format!("cannot listen for DNS on TCP {bind} (dns.port; or dns.enabled = false)")
    })?;
    let shared = Arc::new(Shared {
        zones: RwLock::new(Arc::new(Zones::empty())),
        generation: AtomicU64::new(0),
        secondaries: cfg.secondaries.clone(),
        forwarders: cfg.forwarders.clone(),
        cache: forward::Cache::new(cfg.cache_size.max(1)),
        tsig,
        metrics,
    });
    // The first build before answering: a query never sees an empty zone after start-up.
    let notify = cfg.notify_targets();
    reload(&store, &zcfg, &shared, &notify).await;
    let udp = Arc::new(udp);
    let limit = Arc::new(Semaphore::new(cfg.max_concurrent.max(1)));
    let runtime = tokio::runtime::Handle::current();
    for _ in 0..udp::threads() {
        let (sock, shared, limit) = (udp.clone(), shared.clone(), limit.clone());
        let (runtime, stop) = (runtime.clone(), shutdown.clone());
        tasks.spawn_blocking(move || udp::serve(sock, shared, limit, runtime, stop));
    }
    let tcp_limit = Arc::new(Semaphore::new(cfg.max_concurrent.max(1)));
    tasks.spawn(server::tcp_loop(
        tcp,
        shared.clone(),
        tcp_limit,
        shutdown.clone(),
    ));
    let mut changes = store.subscribe_inventory();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                r = changes.changed() => if r.is_err() { return },
            }
            // A burst of inventory writes (an Ansible run, a thousand POSTs) rebuilds the
            // zones once per settle period, not once per write: each build is the whole zone.
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RELOAD_SETTLE) => {}
            }
            changes.borrow_and_update();
            reload(&store, &zcfg, &shared, &notify).await;
        }
    });
    tracing::info!(listen = %bind, domain = %cfg.domain, "DNS listening");
    Ok(())
}

/// How long the zones wait after an inventory change for the next one before rebuilding.
const RELOAD_SETTLE: std::time::Duration = std::time::Duration::from_millis(250);

/// Rebuilds the zones from the store and swaps them in; NOTIFY when the serial moved.
async fn reload(store: &Store, zcfg: &ZoneConfig, shared: &Shared, notify: &[SocketAddr]) {
    let hosts = match store.hosts().await {
        Ok(h) => h,
        Err(err) => {
            tracing::warn!(error = %err, "DNS: cannot read the inventory; zones unchanged");
            return;
        }
    };
    let digest = Zones::digest(zcfg, &hosts);
    let serial = match store.dns_serial(zcfg.domain.to_ascii(), digest).await {
        Ok(s) => s,
        Err(err) => {
            // Serving the new data under the old serial would hide it from secondaries; a
            // store that cannot write keeps the old zones until it can.
            tracing::warn!(error = %err, "DNS: cannot store the zone serial; zones unchanged");
            return;
        }
    };
    // Built off the runtime's workers: the fast path's answers are encoded here too.
    let (zcfg2, count) = (zcfg.clone(), hosts.len());
    let zones =
        match tokio::task::spawn_blocking(move || Zones::build(&zcfg2, &hosts, serial)).await {
            Ok(z) => Arc::new(z),
            Err(err) => {
                tracing::warn!(error = %err, "DNS: cannot build the zones; zones unchanged");
                return;
            }
        };
    let old = shared.swap(zones.clone());
    if old.serial == serial {
        return;
    }
    tracing::info!(
        serial,
        hosts = count,
        fast_answers = zones.fast.len(),
        "DNS: zones rebuilt"
    );
    if !notify.is_empty() {
        let targets: Vec<_> = notify
            .iter()
            .map(|t| {
                let key = match t.ip() {
                    std::net::IpAddr::V4(ip) => shared.tsig.for_peer(ip).cloned(),
                    std::net::IpAddr::V6(_) => None,
                };
                (*t, key)
            })
            .collect();
        tokio::spawn(send_notifies(zones, targets, zcfg.server));
    }
}

/// RFC 1996 §3.6: NOTIFY each secondary for each zone, retried a few times until answered;
/// signed with the secondary's TSIG key when it has one.
async fn send_notifies(
    zones: Arc<Zones>,
    targets: Vec<(SocketAddr, Option<TSigner>)>,
    from: Ipv4Addr,
) {
    for z in &zones.zones {
        let soa = z
            .transfer
            .first()
            .filter(|r| r.record_type() == RecordType::SOA);
        for (t, key) in &targets {
            let mut msg = server::notify_message(&z.origin, soa);
            if let Some(k) = key
                && let Err(err) = tsig::sign_request(&mut msg, k, tsig::now())
            {
                tracing::warn!(secondary = %t, error = %err, "DNS: cannot sign a NOTIFY");
                continue;
            }
            if !notify_one(from, *t, &msg).await {
                tracing::warn!(secondary = %t, zone = %z.origin, "DNS: NOTIFY not acknowledged");
            }
        }
    }
}

/// Sent from the rack address: secondaries accept NOTIFY only from the primary they know.
async fn notify_one(from: Ipv4Addr, target: SocketAddr, msg: &Message) -> bool {
    let Ok(bytes) = msg.to_vec() else {
        return false;
    };
    let Ok(sock) = tokio::net::UdpSocket::bind((from, 0)).await else {
        return false;
    };
    if sock.connect(target).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; 1024];
    for attempt in 0..5u32 {
        let _ = sock.send(&bytes).await;
        let wait = Duration::from_secs(1 << attempt.min(3));
        if let Ok(Ok(n)) = tokio::time::timeout(wait, sock.recv(&mut buf)).await
            && buf
                .get(..n)
                .and_then(|b| Message::from_vec(b).ok())
                .is_some_and(|m| m.metadata.id == msg.metadata.id)
        {
            return true;
        }
    }
    false
}
