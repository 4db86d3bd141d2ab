//! The UDP listener: one OS thread per core (at most [`MAX_THREADS`]), all reading one blocking
//! socket (bound to the rack address and device) in batches with recvmmsg and answering each
//! batch with one sendmmsg.
//!
//! Each thread keeps its own pointer to the current zones and swaps it when the zones'
//! generation moves (one atomic load per batch, no lock per query); it answers what it can from
//! the zones' pre-encoded answers (`fast.rs`) and the rest through [`server::answer`], and
//! counts its fast answers per batch. Forwarded queries wait on the tokio runtime, capped as
//! before. A read wakes at least every [`WAKE`] so the threads see the shutdown token; the
//! threads run on the runtime's blocking pool and are joined with the other tasks.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, sendmmsg, sendto,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::server::{self, Outcome};
use super::zone::Zones;

/// The most reader threads, whatever the core count.
pub const MAX_THREADS: usize = 4;
/// How long a read waits before its thread looks at the shutdown token again.
pub const WAKE: Duration = Duration::from_millis(200);
/// Datagrams per recvmmsg / sendmmsg.
const BATCH: usize = 32;
/// The largest request read (longer datagrams are cut, and then malformed).
const MAX_REQUEST: usize = 4096;

/// How many reader threads to run here.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(MAX_THREADS))
}

/// One thread's view of the zones.
struct Current {
    generation: u64,
    zones: Arc<Zones>,
}

impl Current {
    fn new(shared: &Shared) -> Self {
        let generation = shared.generation.load(Ordering::Acquire);
        Current {
            generation,
            zones: shared.zones(),
        }
    }

    fn refresh(&mut self, shared: &Shared) {
        let g = shared.generation.load(Ordering::Acquire);
        if g != self.generation {
            *self = Current {
                generation: g,
                zones: shared.zones(),
            };
        }
    }
}

/// Where a reply's bytes are.
enum Slot {
    /// `fast[i]`, rewritten every batch.
    Fast(usize),
    /// `slow[i]`, built by `server::answer`.
    Slow(usize),
}

/// Reads, answers and sends until `shutdown`. Several threads run this on one socket.
pub fn serve(
    sock: Arc<UdpSocket>,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
) {
    let fd = sock.as_raw_fd();
    let mut bufs = vec![vec![0u8; MAX_REQUEST]; BATCH];
    let mut rx = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let mut tx = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let mut got: Vec<(usize, Option<SockaddrIn>)> = Vec::with_capacity(BATCH);
    let mut fast: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
    let mut slow: Vec<Vec<u8>> = Vec::new();
    let mut sends: Vec<(Slot, SockaddrIn)> = Vec::with_capacity(BATCH);
    let mut current = Current::new(&shared);
    while !shutdown.is_cancelled() {
        got.clear();
        {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
                .iter_mut()
                .map(|b| [IoSliceMut::new(b.as_mut_slice())])
                .collect();
            match recvmmsg(fd, &mut rx, &mut iovs, MsgFlags::MSG_WAITFORONE, None) {
                Ok(msgs) => got.extend(msgs.map(|m| (m.bytes, m.address))),
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(err) => {
                    tracing::debug!(error = %err, "DNS: UDP receive failed");
                    // A persistent error (ENOMEM) must not spin a core.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        current.refresh(&shared);
        let zones = &current.zones;
        let (mut answered, mut dropped) = (0u64, 0u64);
        slow.clear();
        sends.clear();
        for (i, &(n, addr)) in got.iter().enumerate() {
            let (Some(bytes), Some(addr)) = (bufs.get(i).and_then(|b| b.get(..n)), addr) else {
                continue;
            };
            if addr.port() == 0 {
                // Nobody listens on port 0 (and a send to it fails the rest of the batch).
                dropped += 1;
                continue;
            }
            if let Some(out) = fast.get_mut(i)
                && zones.fast.answer(bytes, out)
            {
                answered += 1;
                sends.push((Slot::Fast(i), addr));
                continue;
            }
            let src = SocketAddr::V4(SocketAddrV4::from(addr));
            match server::answer(&shared, bytes, src, false) {
                Outcome::Reply(msgs) => {
                    for m in msgs {
                        sends.push((Slot::Slow(slow.len()), addr));
                        slow.push(m);
                    }
                }
                Outcome::Forward(req) => forward(&sock, &shared, &limit, &runtime, req, addr),
                Outcome::Drop => {}
            }
        }
        // Counted before they leave: whoever sees an answer sees it counted.
        if answered > 0 {
            shared.metrics.dns_responses("udp", "NOERROR", answered);
        }
        if dropped > 0 {
            shared.metrics.dns_responses("udp", "dropped", dropped);
        }
        send(fd, &mut tx, &sends, &fast, &slow);
    }
}

/// Sends the batch's replies, in order, with sendmmsg (as many calls as the batch needs).
fn send(
    fd: i32,
    tx: &mut MultiHeaders<SockaddrIn>,
    sends: &[(Slot, SockaddrIn)],
    fast: &[Vec<u8>],
    slow: &[Vec<u8>],
) {
    for chunk in sends.chunks(BATCH) {
        let iovs: Vec<[IoSlice<'_>; 1]> = chunk
            .iter()
            .map(|(slot, _)| {
                let bytes = match slot {
                    Slot::Fast(i) => fast.get(*i),
                    Slot::Slow(i) => slow.get(*i),
                };
                [IoSlice::new(bytes.map_or(&[][..], Vec::as_slice))]
            })
            .collect();
        let addrs: Vec<Option<SockaddrIn>> = chunk.iter().map(|(_, a)| Some(*a)).collect();
        // The count sent is not read back: nix reads uninitialised source addresses when
        // iterating a sendmmsg result. A blocking socket sends the whole batch unless one
        // datagram fails, and then the rest of that batch is lost like any UDP answer.
        if let Err(err) = sendmmsg(
            fd,
            tx,
            &iovs,
            &addrs,
            [] as [ControlMessage<'_>; 0],
            MsgFlags::empty(),
        ) {
            tracing::debug!(error = %err, "DNS: UDP send failed");
        }
    }
}

/// Hands a query for the forwarders to the runtime, within `limit`.
fn forward(
    sock: &Arc<UdpSocket>,
    shared: &Arc<Shared>,
    limit: &Arc<Semaphore>,
    runtime: &tokio::runtime::Handle,
    req: hickory_proto::op::Message,
    to: SockaddrIn,
) {
    let Ok(permit) = limit.clone().try_acquire_owned() else {
        shared.metrics.dns_response("udp", "dropped");
        return;
    };
    let (sock, shared) = (sock.clone(), shared.clone());
    runtime.spawn(async move {
        if let Some(b) = super::forward::resolve(&shared, &req, false).await {
            // Never blocks the runtime: a full send buffer drops the answer.
            let _ = sendto(sock.as_raw_fd(), &b, &to, MsgFlags::MSG_DONTWAIT);
        }
        drop(permit);
    });
}

#[cfg(test)]
#[path = "udp_tests.rs"]
mod tests;
