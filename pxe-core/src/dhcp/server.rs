//! The DHCP server engine (RFC 2131), sans-IO.
//!
//! [`DhcpServer::handle`] takes one datagram, where it arrived and `now`; it returns the reply
//! (written into the caller's buffer), where to send it (§4.1), and the [`LeaseChange`] the
//! driver must make durable *before* it transmits. Static reservations come from the caller's
//! [`Inventory`]; unknown clients get addresses from a dynamic pool per subnet: any
//! [`AddressPool`], by default the heap-backed [`Pool`](super::pool::Pool) with the `alloc`
//! feature and [`FixedPool<256>`] without it.

use core::net::{Ipv4Addr, SocketAddrV4};

use heapless::Vec as HVec;

use super::fixed_pool::FixedPool;
use super::pool::{AddressPool, PoolError};
use super::respond::{destination, write_reply};
use super::wire::{self, MessageType, Request, WireError};
use crate::boot::{self, BootDecision, BootPolicy, ClientInfo};
use crate::{Duration, Instant, MacAddr};

/// DHCP server port.
pub const SERVER_PORT: u16 = 67;
/// DHCP client port.
pub const CLIENT_PORT: u16 = 68;

/// The inventory as the engine sees it (the appliance implements it over its store).
pub trait Inventory {
    /// The static reservation for `mac`, if the inventory has one.
    fn reservation(&self, mac: MacAddr) -> Option<Reservation<'_>>;
    /// Whether `ip` is reserved for some inventory node (never handed out dynamically).
    fn is_reserved(&self, ip: Ipv4Addr) -> bool;
}

/// A static reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation<'a> {
    /// The node's address.
    pub ip: Ipv4Addr,
    /// Option 12.
    pub hostname: Option<&'a str>,
    /// Per-node firmware boot file override.
    pub boot_file: Option<&'a str>,
}

/// Address assignment mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Assign addresses and boot information.
    Authoritative,
    /// proxyDHCP: boot information only; another server assigns addresses.
    Proxy,
}

/// One served subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetConfig {
    /// Network address.
    pub network: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Our address as clients of this subnet reach us (option 54, siaddr).
    pub server_ip: Ipv4Addr,
    /// Option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 6.
    pub dns: HVec<Ipv4Addr, 4>,
    /// Option 15.
    pub domain: heapless::String<64>,
    /// Option 51.
    pub lease_time: Duration,
    /// Dynamic pool (inclusive), if any.
    pub pool: Option<(Ipv4Addr, Ipv4Addr)>,
}

impl SubnetConfig {
    /// Whether `ip` is inside this subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = self.mask();
        u32::from(ip) & mask == u32::from(self.network) & mask
    }

    fn mask(&self) -> u32 {
        match self.prefix {
            0 => 0,
            p => u32::MAX << (32 - u32::from(p.min(32))),
        }
    }

    pub(super) fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }
}

/// How many subnets (the local one plus relayed ones) one engine serves.
pub const MAX_SUBNETS: usize = 16;

/// The pool [`DhcpServer::new`] uses: heap-backed with the `alloc` feature, else fixed storage.
#[cfg(feature = "alloc")]
pub type DefaultPool = super::pool::Pool;
/// The pool [`DhcpServer::new`] uses: heap-backed with the `alloc` feature, else fixed storage.
#[cfg(not(feature = "alloc"))]
pub type DefaultPool = FixedPool<256>;

/// Engine configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Subnets (at most [`MAX_SUBNETS`]); chosen by giaddr (relays) or by the receiving
    /// interface address.
    pub subnets: HVec<SubnetConfig, MAX_SUBNETS>,
    /// Authoritative or proxy.
    pub mode: Mode,
    /// Boot-file policy.
    pub boot: BootPolicy,
    /// How long an OFFERed address is held for its client.
    pub offer_hold: Duration,
    /// How long a DECLINEd address stays out of the pool.
    pub decline_quarantine: Duration,
}

/// Where a datagram arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxInfo {
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Our address on the receiving interface.
    pub local_ip: Ipv4Addr,
}

/// A lease record to persist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Client.
    pub mac: MacAddr,
    /// Address.
    pub ip: Ipv4Addr,
    /// End of the lease.
    pub expires: Instant,
    /// Static or dynamic.
    pub kind: LeaseKind,
}

/// Where a lease's address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseKind {
    /// Inventory reservation.
    Static,
    /// Dynamic pool.
    Dynamic,
}

/// A change the driver makes durable before transmitting the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseChange {
    /// ACKed.
    Bound(Lease),
    /// RELEASEd by the client.
    Released {
        /// Client.
        mac: MacAddr,
        /// Address.
        ip: Ipv4Addr,
    },
    /// DECLINEd: quarantined.
    Declined {
        /// Client.
        mac: MacAddr,
        /// Address.
        ip: Ipv4Addr,
        /// End of the quarantine.
        quarantined_until: Instant,
    },
}

/// The reply to transmit: `out[..len]` to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub dst: SocketAddrV4,
    /// Bytes written into the caller's buffer.
    pub len: usize,
}

/// What happened, for logs, metrics and the boot timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Message received.
    pub received: MessageType,
    /// Message sent, if any.
    pub sent: Option<MessageType>,
    /// Client.
    pub mac: MacAddr,
    /// Address offered/acked/released.
    pub ip: Option<Ipv4Addr>,
    /// Transaction id.
    pub xid: u32,
    /// The address came from the inventory.
    pub is_static: bool,
    /// The client is iPXE (second DHCP of a PXE boot).
    pub ipxe: bool,
    /// The client is boot firmware (vendor class `PXEClient` or `HTTPClient`), not an OS.
    pub firmware: bool,
}

/// The result of a handled datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handled {
    /// The reply, if any.
    pub reply: Option<Transmit>,
    /// Make this durable before sending the reply.
    pub lease_change: Option<LeaseChange>,
    /// What happened.
    pub event: Event,
}

/// Why a datagram got no reply. Each reason is counted by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Drop {
    /// Not parseable.
    Malformed(WireError),
    /// A BOOTREPLY or other non-request.
    NotBootRequest,
    /// No configured subnet for giaddr / the receiving interface.
    NoSubnet,
    /// REQUEST for another server (SELECTING), or DECLINE naming another server.
    NotForUs,
    /// No free address.
    PoolExhausted,
    /// A valid message we deliberately do not answer.
    Ignored(&'static str),
    /// The reply could not be written (boot URL too long, buffer too small).
    Encode,
}

impl Drop {
    /// A stable short name for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Drop::Malformed(_) => "malformed",
            Drop::NotBootRequest => "not_boot_request",
            Drop::NoSubnet => "no_subnet",
            Drop::NotForUs => "not_for_us",
            Drop::PoolExhausted => "pool_exhausted",
            Drop::Ignored(_) => "ignored",
            Drop::Encode => "encode",
        }
    }
}

/// The engine, over dynamic pools of type `P`.
#[derive(Debug, Clone)]
pub struct DhcpServer<P = DefaultPool> {
    config: ServerConfig,
    pools: HVec<Option<P>, MAX_SUBNETS>,
}

impl DhcpServer<DefaultPool> {
    /// Creates the engine with empty pools of the [`DefaultPool`] type.
    pub fn new(config: ServerConfig) -> Self {
        Self::with_pools(config)
    }
}

impl<const N: usize> DhcpServer<FixedPool<N>> {
    /// Creates the engine with empty [`FixedPool`]s of `N` addresses each (no allocator).
    pub fn fixed(config: ServerConfig) -> Self {
        Self::with_pools(config)
    }
}

impl<P: AddressPool> DhcpServer<P> {
    /// Creates the engine with empty pools of type `P`.
    pub fn with_pools(config: ServerConfig) -> Self {
        let mut pools = HVec::new();
        for s in &config.subnets {
            // Same capacity as `subnets`: never full.
            let _ = pools.push(s.pool.map(|(a, b)| P::for_range(a, b)));
        }
        Self { config, pools }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The pool of subnet `index`.
    pub fn pool(&self, index: usize) -> Option<&P> {
        self.pools.get(index).and_then(Option::as_ref)
    }

    /// Re-loads a persisted dynamic lease at start-up (static ones need no pool state).
    pub fn restore(&mut self, lease: &Lease, now: Instant) {
        if lease.kind != LeaseKind::Dynamic {
            return;
        }
        for p in self.pools.iter_mut().flatten() {
            if p.contains(lease.ip) {
                let _ = p.bind(lease.mac, lease.ip, lease.expires, now);
            }
        }
    }

    /// Returns parked addresses to the pools after the inventory changed.
    pub fn inventory_changed<I: Inventory>(&mut self, inv: &I) {
        for p in self.pools.iter_mut().flatten() {
            p.unpark(|ip| inv.is_reserved(ip));
        }
    }

    /// Handles one datagram. See the module docs.
    pub fn handle<I: Inventory>(
        &mut self,
        now: Instant,
        rx: &RxInfo,
        packet: &[u8],
        inv: &I,
        out: &mut [u8],
    ) -> Result<Handled, Drop> {
        let p = wire::Packet::new_checked(packet).map_err(Drop::Malformed)?;
        if p.op() != 1 {
            return Err(Drop::NotBootRequest);
        }
        let req = Request::parse(packet).map_err(Drop::Malformed)?;
        // RFC 2131 §4.3.1: the subnet is the relay's (giaddr) or the receiving interface's.
        let key = if req.giaddr.is_unspecified() {
            rx.local_ip
        } else {
            req.giaddr
        };
        let index = self
            .config
            .subnets
            .iter()
            .position(|s| s.contains(key))
            .ok_or(Drop::NoSubnet)?;
        let mut event = Event {
            received: req.message_type,
            sent: None,
            mac: req.mac,
            ip: None,
            xid: req.xid,
            is_static: false,
            ipxe: req.is_ipxe(),
            firmware: req.vendor_class.starts_with(b"PXEClient")
                || req.vendor_class.starts_with(b"HTTPClient"),
        };
        let reservation = inv.reservation(req.mac);
        let boot = boot::decide(
            &self.config.boot,
            &ClientInfo {
                arch: &req.client_arch,
                vendor_class: &req.vendor_class,
                ipxe: event.ipxe,
                mac: req.mac,
            },
            reservation.and_then(|r| r.boot_file),
        )
        .map_err(|_| Drop::Encode)?;

        if self.config.mode == Mode::Proxy {
            return self.proxy(&req, index, &boot, event, out);
        }
        let decision = self.decide(now, &req, index, reservation, inv)?;
        event.is_static = reservation.is_some();
        let subnet = self.config.subnets.get(index).ok_or(Drop::NoSubnet)?;
        let lease_time = subnet.lease_time;
        let (kind, ip, change) = match decision {
            Decision::Offer(ip) => (MessageType::Offer, ip, None),
            Decision::Ack(ip) => {
                let lease = Lease {
                    mac: req.mac,
                    ip,
                    expires: now + lease_time,
                    kind: if reservation.is_some() {
                        LeaseKind::Static
                    } else {
                        LeaseKind::Dynamic
                    },
                };
                (MessageType::Ack, ip, Some(LeaseChange::Bound(lease)))
            }
            Decision::InformAck => (MessageType::Ack, Ipv4Addr::UNSPECIFIED, None),
            Decision::Nak => (MessageType::Nak, Ipv4Addr::UNSPECIFIED, None),
            Decision::Silent(change) => {
                event.ip = match change {
                    LeaseChange::Released { ip, .. } | LeaseChange::Declined { ip, .. } => Some(ip),
                    LeaseChange::Bound(l) => Some(l.ip),
                };
                return Ok(Handled {
                    reply: None,
                    lease_change: Some(change),
                    event,
                });
            }
        };
        if !ip.is_unspecified() {
            event.ip = Some(ip);
        }
        let len = write_reply(
            out,
            &req,
            subnet,
            kind,
            ip,
            if kind == MessageType::Nak {
                &BootDecision::None
            } else {
                &boot
            },
            reservation.and_then(|r| r.hostname),
            decision_has_lease(&decision),
        )?;
        event.sent = Some(kind);
        Ok(Handled {
            reply: Some(Transmit {
                dst: destination(&req, kind),
                len,
            }),
            lease_change: change,
            event,
        })
    }

    fn decide<I: Inventory>(
        &mut self,
        now: Instant,
        req: &Request,
        index: usize,
        reservation: Option<Reservation<'_>>,
        inv: &I,
    ) -> Result<Decision, Drop> {
        let subnet = self.config.subnets.get(index).ok_or(Drop::NoSubnet)?;
        let server_ip = subnet.server_ip;
        let in_subnet = |ip: Ipv4Addr| subnet.contains(ip);
        let hold = self.config.offer_hold;
        let quarantine = self.config.decline_quarantine;
        let pool = self.pools.get_mut(index).and_then(Option::as_mut);
        match req.message_type {
            MessageType::Discover => match reservation {
                Some(r) => Ok(Decision::Offer(r.ip)),
                None => {
                    let pool = pool.ok_or(Drop::PoolExhausted)?;
                    let ip = pool
                        .allocate(req.mac, req.requested_ip, now, hold, |ip| {
                            inv.is_reserved(ip)
                        })
                        .map_err(|_| Drop::PoolExhausted)?;
                    Ok(Decision::Offer(ip))
                }
            },
            MessageType::Request => {
                // RFC 2131 §4.3.2: SELECTING carries option 54; INIT-REBOOT carries option 50
                // only; RENEWING/REBINDING carry ciaddr only.
                if let Some(sid) = req.server_id
                    && sid != server_ip
                {
                    return Err(Drop::NotForUs);
                }
                let Some(wanted) = req
                    .requested_ip
                    .or((!req.ciaddr.is_unspecified()).then_some(req.ciaddr))
                else {
                    return Err(Drop::Ignored("REQUEST without requested address or ciaddr"));
                };
                if let Some(r) = reservation {
                    return Ok(if r.ip == wanted {
                        Decision::Ack(wanted)
                    } else {
                        Decision::Nak
                    });
                }
                if !in_subnet(wanted) {
                    // INIT-REBOOT on the wrong network: NAK so it restarts (§4.3.2).
                    return Ok(Decision::Nak);
                }
                let Some(pool) = pool else {
                    return Ok(Decision::Nak);
                };
                if !pool.contains(wanted) || inv.is_reserved(wanted) {
                    return Ok(Decision::Nak);
                }
                match pool.bind(req.mac, wanted, now + subnet.lease_time, now) {
                    Ok(()) => Ok(Decision::Ack(wanted)),
                    Err(PoolError::Taken | PoolError::OutOfRange | PoolError::Exhausted) => {
                        Ok(Decision::Nak)
                    }
                }
            }
            MessageType::Decline => {
                if req.server_id.is_some_and(|s| s != server_ip) {
                    return Err(Drop::NotForUs);
                }
                let ip = req
                    .requested_ip
                    .ok_or(Drop::Ignored("DECLINE without requested address"))?;
                let pool = pool.ok_or(Drop::Ignored("DECLINE of a static address"))?;
                let until = now + quarantine;
                if pool.decline(req.mac, ip, until, now) {
                    Ok(Decision::Silent(LeaseChange::Declined {
                        mac: req.mac,
                        ip,
                        quarantined_until: until,
                    }))
                } else {
                    Err(Drop::Ignored("DECLINE of an address outside the pool"))
                }
            }
            MessageType::Release => {
                let ip = req.ciaddr;
                if let Some(pool) = pool {
                    pool.release(req.mac, ip);
                }
                Ok(Decision::Silent(LeaseChange::Released { mac: req.mac, ip }))
            }
            MessageType::Inform => Ok(Decision::InformAck),
            _ => Err(Drop::NotBootRequest),
        }
    }

    fn proxy(
        &self,
        req: &Request,
        index: usize,
        boot: &BootDecision,
        mut event: Event,
        out: &mut [u8],
    ) -> Result<Handled, Drop> {
        if req.message_type != MessageType::Discover {
            return Err(Drop::Ignored("proxyDHCP answers DISCOVER only"));
        }
        if matches!(boot, BootDecision::None) {
            return Err(Drop::Ignored("proxyDHCP: not a network-boot client"));
        }
        let subnet = self.config.subnets.get(index).ok_or(Drop::NoSubnet)?;
        let len = write_reply(
            out,
            req,
            subnet,
            MessageType::Offer,
            Ipv4Addr::UNSPECIFIED,
            boot,
            None,
            false,
        )?;
        event.sent = Some(MessageType::Offer);
        Ok(Handled {
            reply: Some(Transmit {
                dst: destination(req, MessageType::Offer),
                len,
            }),
            lease_change: None,
            event,
        })
    }
}

enum Decision {
    Offer(Ipv4Addr),
    Ack(Ipv4Addr),
    InformAck,
    Nak,
    Silent(LeaseChange),
}

fn decision_has_lease(d: &Decision) -> bool {
    matches!(d, Decision::Offer(_) | Decision::Ack(_))
}
