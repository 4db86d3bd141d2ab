//! Driving the engines from embassy-net tasks (feature `embassy`): no_std, no allocator.
//!
//! These are the loops a firmware profile spawns as embassy tasks. They own nothing but
//! caller-provided buffers, take time from `embassy_time`, and keep the engines' contract: a
//! lease change is made durable (by the caller's [`DhcpHooks::persist`]) before its reply
//! leaves. The tokio appliance (`appliance/src/dhcp/service.rs`, `appliance/src/tftp/`) drives
//! the same engines the same way.
//!
//! ```ignore
//! #[embassy_executor::task]
//! async fn dhcp(stack: Stack<'static>) -> ! {
//!     static BUFS: StaticCell<UdpBuffers<8, 4096>> = StaticCell::new();
//!     let bufs = BUFS.init(UdpBuffers::new());
//!     let mut server: DhcpServer<FixedPool<64>> = DhcpServer::fixed(config());
//!     let err = serve_dhcp(stack, bufs, &mut server, &Inventory, &mut Flash).await;
//!     panic!("DHCP socket: {err:?}");
//! }
//! ```
//!
//! TFTP ([`tftp::serve_tftp`]) serves up to `N` transfers at once, each from its own socket
//! bound to a fresh ephemeral port (the transfer ID of RFC 1350), while port 69 stays read: a
//! stalled client costs only its own slot, and a retransmitted RRQ starts nothing (issue 20).

mod tftp;

pub use tftp::{Files, TftpEvents, serve_tftp};

use core::convert::Infallible;
use core::net::{Ipv4Addr, SocketAddrV4};

use embassy_net::udp::{BindError, PacketMetadata, UdpSocket};
use embassy_net::{IpAddress, IpEndpoint, Stack};

use crate::Instant;
use crate::dhcp::pool::AddressPool;
use crate::dhcp::server::{self, DhcpServer, Drop, Inventory, LeaseChange, RxInfo};

/// Largest DHCP or TFTP datagram handled (Ethernet MTU minus IP and UDP headers).
pub const MAX_DATAGRAM: usize = 1472;

/// Engine time from the embassy clock.
pub fn now() -> Instant {
    Instant::from_millis(embassy_time::Instant::now().as_millis())
}

/// Socket buffers for one UDP socket: `META` queued datagrams and `BYTES` payload bytes in
/// each direction.
pub struct UdpBuffers<const META: usize, const BYTES: usize> {
    rx_meta: [PacketMetadata; META],
    rx: [u8; BYTES],
    tx_meta: [PacketMetadata; META],
    tx: [u8; BYTES],
}

impl<const META: usize, const BYTES: usize> UdpBuffers<META, BYTES> {
    /// Empty buffers.
    pub const fn new() -> Self {
        Self {
            rx_meta: [PacketMetadata::EMPTY; META],
            rx: [0; BYTES],
            tx_meta: [PacketMetadata::EMPTY; META],
            tx: [0; BYTES],
        }
    }

    pub(crate) fn socket<'a>(&'a mut self, stack: Stack<'a>) -> UdpSocket<'a> {
        UdpSocket::new(
            stack,
            &mut self.rx_meta,
            &mut self.rx,
            &mut self.tx_meta,
            &mut self.tx,
        )
    }
}

impl<const META: usize, const BYTES: usize> Default for UdpBuffers<META, BYTES> {
    fn default() -> Self {
        Self::new()
    }
}

/// What the DHCP loop asks of the firmware around the engine.
#[allow(async_fn_in_trait)] // embassy executors are single-threaded: no Send bound wanted.
pub trait DhcpHooks {
    /// Makes `change` durable (flash, FRAM…). The reply is sent only if this returns `true`.
    async fn persist(&mut self, change: &LeaseChange) -> bool;
    /// A datagram was dropped (count it; the default ignores it).
    fn dropped(&mut self, _why: &Drop) {}
}

/// Serves DHCP on port 67 of `stack` until the socket fails to bind.
pub async fn serve_dhcp<P, I, H, const META: usize, const BYTES: usize>(
    stack: Stack<'_>,
    buffers: &mut UdpBuffers<META, BYTES>,
    server: &mut DhcpServer<P>,
    inventory: &I,
    hooks: &mut H,
) -> Result<Infallible, BindError>
where
    P: AddressPool,
    I: Inventory,
    H: DhcpHooks,
{
    let mut socket = buffers.socket(stack);
    socket.bind(server::SERVER_PORT)?;
    let mut rx = [0u8; MAX_DATAGRAM];
    let mut tx = [0u8; MAX_DATAGRAM];
    loop {
        let Ok((n, meta)) = socket.recv_from(&mut rx).await else {
            continue; // truncated: larger than MAX_DATAGRAM
        };
        let Some(src) = v4_endpoint(meta.endpoint) else {
            continue;
        };
        // Broadcasts arrive for 255.255.255.255: the subnet is the interface's own.
        let local_ip = stack
            .config_v4()
            .map_or(Ipv4Addr::UNSPECIFIED, |c| c.address.address());
        let datagram = rx.get(..n).unwrap_or_default();
        let handled = match server.handle(
            now(),
            &RxInfo { src, local_ip },
            datagram,
            inventory,
            &mut tx,
        ) {
            Ok(h) => h,
            Err(why) => {
                hooks.dropped(&why);
                continue;
            }
        };
        if let Some(change) = &handled.lease_change
            && !hooks.persist(change).await
        {
            continue; // not durable: the client retries and gets a fresh answer
        }
        if let Some(t) = handled.reply {
            let reply = tx.get(..t.len).unwrap_or_default();
            let _ = socket.send_to(reply, endpoint(t.dst)).await;
        }
    }
}

pub(crate) fn v4_endpoint(e: IpEndpoint) -> Option<SocketAddrV4> {
    #[allow(unreachable_patterns)] // only with proto-ipv6 enabled elsewhere
    match e.addr {
        IpAddress::Ipv4(a) => Some(SocketAddrV4::new(a, e.port)),
        _ => None,
    }
}

pub(crate) fn endpoint(dst: SocketAddrV4) -> IpEndpoint {
    IpEndpoint::new(IpAddress::Ipv4(*dst.ip()), dst.port())
}
