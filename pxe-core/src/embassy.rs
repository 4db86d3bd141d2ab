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
//! TFTP transfers run one at a time from a second socket bound to an ephemeral port (the
//! transfer ID of RFC 1350), with windowing (RFC 7440) keeping a single transfer fast. Port 69
//! stays read during a transfer so that a [`tftp::Queue`] can drop clients' retransmitted RRQs
//! instead of letting each become a whole transfer later (issue 20).

use core::convert::Infallible;
use core::future::{Future, poll_fn};
use core::net::{Ipv4Addr, SocketAddrV4};
use core::pin::pin;
use core::task::Poll;

use embassy_net::udp::{BindError, PacketMetadata, RecvError, UdpSocket};
use embassy_net::{IpAddress, IpEndpoint, Stack};

use crate::dhcp::pool::AddressPool;
use crate::dhcp::server::{self, DhcpServer, Drop, Inventory, LeaseChange, RxInfo};
use crate::tftp::{
    self, Arrival, ErrorCode, FileSource, Queue, RequestError, Session, SessionConfig, State,
};
use crate::{Duration, Instant};

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

    fn socket<'a>(&'a mut self, stack: Stack<'a>) -> UdpSocket<'a> {
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

/// The files the TFTP loop serves.
pub trait Files {
    /// An open file.
    type File: FileSource;
    /// Opens the normalised, relative `path` and returns it with its size.
    fn open(&mut self, path: &str) -> Option<(Self::File, u64)>;
}

/// Serves read-only TFTP on port 69 of `stack`, one transfer at a time, until a socket fails
/// to bind. `listen` receives requests; `transfer` carries each transfer from its own port.
///
/// Requests that arrive during a transfer are decided by `queue` (see [`tftp::queue`]): a
/// client's retransmitted RRQ, for the running transfer or one that waits, starts nothing;
/// others wait their turn (up to `W - 1` of them), and past that get "server busy".
pub async fn serve_tftp<
    F,
    const M1: usize,
    const B1: usize,
    const M2: usize,
    const B2: usize,
    const W: usize,
>(
    stack: Stack<'_>,
    listen: &mut UdpBuffers<M1, B1>,
    transfer: &mut UdpBuffers<M2, B2>,
    queue: &mut Queue<W>,
    files: &mut F,
    config: &SessionConfig,
) -> Result<Infallible, BindError>
where
    F: Files,
{
    let mut socket = listen.socket(stack);
    socket.bind(69)?;
    let mut rx = [0u8; MAX_DATAGRAM];
    let mut tx = [0u8; MAX_DATAGRAM];
    let mut req = [0u8; MAX_DATAGRAM];
    let mut path_buf = [0u8; 256];
    // A request already admitted as the running one (replacing the transfer that just ended).
    let mut replacing: Option<(SocketAddrV4, usize)> = None;
    loop {
        let (client, n) = match replacing.take().or_else(|| queue.next(&mut req)) {
            Some(admitted) => admitted,
            None => {
                let Ok((n, meta)) = socket.recv_from(&mut req).await else {
                    continue;
                };
                let Some(client) = v4_endpoint(meta.endpoint) else {
                    continue;
                };
                match on_request(
                    &socket,
                    queue,
                    client,
                    req.get(..n).unwrap_or_default(),
                    &mut tx,
                )
                .await
                {
                    Some(Arrival::Start) => (client, n),
                    _ => continue,
                }
            }
        };
        // Admitted: from here every way out calls `queue.finish()`, unless a request replaces it.
        // Admitted requests were parsed on arrival, so only the file can be missing here.
        let opened = tftp::parse_request(req.get(..n).unwrap_or_default())
            .ok()
            .and_then(|r| Some((r, tftp::normalize_path(r.filename, &mut path_buf).ok()?)))
            .map(|(r, path)| (r.options, files.open(path)));
        let (options, (mut file, size)) = match opened {
            Some((options, Some(opened))) => (options, opened),
            _ => {
                queue.finish();
                let len = tftp::error_packet(ErrorCode::FileNotFound, "file not found", &mut tx);
                let _ = socket
                    .send_to(tx.get(..len).unwrap_or_default(), endpoint(client))
                    .await;
                continue;
            }
        };
        // The session reads only the options; the name's bytes stay in `req`, which the transfer
        // loop reuses for requests arriving meanwhile.
        let request = tftp::Request {
            filename: &[],
            options,
        };
        let mut session = Session::new(now(), &request, size, config);
        let mut data = transfer.socket(stack);
        data.bind(0)?;
        let end = run_transfer(
            &data,
            &socket,
            queue,
            client,
            &mut session,
            &mut file,
            &mut rx,
            &mut req,
            &mut tx,
        )
        .await;
        match end {
            Some(next) => replacing = Some(next),
            None => queue.finish(),
        }
    }
}

/// Parses, checks and admits a datagram that arrived on port 69, answering the requests refused
/// (`None`, as for datagrams that are no request).
async fn on_request<const W: usize>(
    socket: &UdpSocket<'_>,
    queue: &mut Queue<W>,
    client: SocketAddrV4,
    datagram: &[u8],
    tx: &mut [u8],
) -> Option<Arrival> {
    let mut path_buf = [0u8; 256];
    let refusal = match tftp::parse_request(datagram) {
        Ok(req) => match tftp::normalize_path(req.filename, &mut path_buf) {
            Ok(path) => match queue.arrive(client, path.as_bytes(), datagram) {
                Arrival::Busy => (ErrorCode::NotDefined, "server busy, retry"),
                decided => return Some(decided),
            },
            Err(_) => (ErrorCode::AccessViolation, "invalid path"),
        },
        Err(RequestError::NotARequest) => return None,
        Err(e) => e.code(),
    };
    let len = tftp::error_packet(refusal.0, refusal.1, tx);
    let _ = socket
        .send_to(tx.get(..len).unwrap_or_default(), endpoint(client))
        .await;
    None
}

/// What woke the transfer loop.
enum Event {
    /// A datagram on the transfer's socket.
    Transfer(Result<(usize, IpEndpoint), RecvError>),
    /// A datagram on port 69.
    Request(Result<(usize, IpEndpoint), RecvError>),
    /// The session's timer.
    Timeout,
}

/// Drives one transfer to its end (done, failed or timed out) while deciding the requests that
/// arrive meanwhile. Returns the client and length of a request (in `req`) that replaces the
/// transfer: its client asked for another file.
#[allow(clippy::too_many_arguments)]
async fn run_transfer<const W: usize>(
    socket: &UdpSocket<'_>,
    listen: &UdpSocket<'_>,
    queue: &mut Queue<W>,
    client: SocketAddrV4,
    session: &mut Session,
    file: &mut impl FileSource,
    rx: &mut [u8],
    req: &mut [u8],
    tx: &mut [u8],
) -> Option<(SocketAddrV4, usize)> {
    let peer = endpoint(client);
    loop {
        while let Some(len) = session.poll_transmit(now(), file, tx) {
            let _ = socket
                .send_to(tx.get(..len).unwrap_or_default(), peer)
                .await;
        }
        if session.state() != State::Running {
            return None;
        }
        let wait = session.poll_timeout().map_or(Duration::from_secs(5), |t| {
            t.saturating_duration_since(now())
        });
        let mut timer = pin!(embassy_time::Timer::after_millis(wait.millis()));
        let event = poll_fn(|cx| {
            if let Poll::Ready(r) = socket.poll_recv_from(rx, cx) {
                return Poll::Ready(Event::Transfer(r.map(|(n, m)| (n, m.endpoint))));
            }
            if let Poll::Ready(r) = listen.poll_recv_from(req, cx) {
                return Poll::Ready(Event::Request(r.map(|(n, m)| (n, m.endpoint))));
            }
            timer.as_mut().poll(cx).map(|()| Event::Timeout)
        })
        .await;
        match event {
            Event::Transfer(Ok((n, from))) if from == peer => {
                session.handle(now(), rx.get(..n).unwrap_or_default());
            }
            Event::Transfer(Ok((_, from))) => {
                // RFC 1350: a packet from another TID gets an ERROR; the transfer goes on.
                let len = tftp::error_packet(ErrorCode::UnknownTid, "unknown TID", tx);
                let _ = socket
                    .send_to(tx.get(..len).unwrap_or_default(), from)
                    .await;
            }
            Event::Request(Ok((n, from))) => {
                let Some(from) = v4_endpoint(from) else {
                    continue;
                };
                let datagram = req.get(..n).unwrap_or_default();
                if on_request(listen, queue, from, datagram, tx).await
                    == Some(Arrival::ReplacesRunning)
                {
                    return Some((from, n));
                }
            }
            Event::Transfer(Err(_)) | Event::Request(Err(_)) => {}
            Event::Timeout => session.handle_timeout(now()),
        }
    }
}

fn v4_endpoint(e: IpEndpoint) -> Option<SocketAddrV4> {
    #[allow(unreachable_patterns)] // only with proto-ipv6 enabled elsewhere
    match e.addr {
        IpAddress::Ipv4(a) => Some(SocketAddrV4::new(a, e.port)),
        _ => None,
    }
}

fn endpoint(dst: SocketAddrV4) -> IpEndpoint {
    IpEndpoint::new(IpAddress::Ipv4(*dst.ip()), dst.port())
}
