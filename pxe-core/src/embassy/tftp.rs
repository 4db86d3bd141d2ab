//! The TFTP loop: port 69 plus `N` transfer slots, each with its own UDP socket, in one task.

use core::convert::Infallible;
use core::future::{Future, poll_fn};
use core::net::SocketAddrV4;
use core::pin::pin;
use core::task::Poll;

use embassy_net::udp::{BindError, RecvError, UdpSocket};
use embassy_net::{IpEndpoint, Stack};

use super::{MAX_DATAGRAM, UdpBuffers, endpoint, now, v4_endpoint};
use crate::Duration;
use crate::tftp::frontend::{self, Decision, MAX_NAME, Refusal, Unopened};
use crate::tftp::{
    self, ErrorCode, FileSource, Session, SessionConfig, State, TransferId, Transfers,
};

/// The files the TFTP loop serves.
pub trait Files {
    /// An open file.
    type File: FileSource;
    /// Opens the normalised, relative `path` and returns it with its size.
    fn open(&mut self, path: &str) -> Option<(Self::File, u64)>;
}

/// What the TFTP loop reports (for logs and counters; every method defaults to nothing).
pub trait TftpEvents {
    /// A transfer of `file` to `client` started.
    fn started(&mut self, _client: SocketAddrV4, _file: &str) {}
    /// A transfer ended: done or failed.
    fn ended(&mut self, _client: SocketAddrV4, _state: State) {}
    /// A transfer was abandoned: its client TID asked for another file.
    fn abandoned(&mut self, _client: SocketAddrV4) {}
    /// A request got an ERROR.
    fn refused(&mut self, _client: SocketAddrV4, _why: Refusal) {}
}

impl TftpEvents for () {}

/// Serves read-only TFTP on port 69 of `stack`, up to `N` transfers at once (one per buffer of
/// `transfers`), until port 69 fails to bind.
///
/// Requests are decided by [`frontend::accept`] against a table of the running transfers: a
/// retransmitted RRQ starts nothing, another file from a running transfer's client TID
/// replaces that transfer, and a request past `N` running transfers gets "server busy". Each
/// transfer is sent from its slot's socket, bound to a fresh ephemeral port, and driven by its
/// own [`Session`] timers, so a stalled client delays nobody else.
pub async fn serve_tftp<
    F,
    E,
    const N: usize,
    const M1: usize,
    const B1: usize,
    const M2: usize,
    const B2: usize,
>(
    stack: Stack<'_>,
    listen: &mut UdpBuffers<M1, B1>,
    transfers: &mut [UdpBuffers<M2, B2>; N],
    files: &mut F,
    config: &SessionConfig,
    events: &mut E,
) -> Result<Infallible, BindError>
where
    F: Files,
    E: TftpEvents,
{
    let mut listen = listen.socket(stack);
    listen.bind(69)?;
    let mut sockets: heapless::Vec<UdpSocket<'_>, N> = heapless::Vec::new();
    for b in transfers.iter_mut() {
        // Same capacity as `transfers`: never full.
        let _ = sockets.push(b.socket(stack));
    }
    let mut slots: [Option<Slot<F::File>>; N] = core::array::from_fn(|_| None);
    let mut table: Transfers<(), N> = Transfers::new();
    let mut rx = [0u8; MAX_DATAGRAM];
    let mut req = [0u8; MAX_DATAGRAM];
    let mut tx = [0u8; MAX_DATAGRAM];
    loop {
        // Send what every session has to send; retire those that ended.
        for (slot, socket) in slots.iter_mut().zip(sockets.iter_mut()) {
            let Some(s) = slot else { continue };
            let peer = endpoint(s.client);
            while let Some(len) = s.session.poll_transmit(now(), &mut s.file, &mut tx) {
                let _ = socket
                    .send_to(tx.get(..len).unwrap_or_default(), peer)
                    .await;
            }
            let state = s.session.state();
            if state != State::Running {
                table.finish(s.id);
                events.ended(s.client, state);
                socket.close();
                *slot = None;
            }
        }
        let deadline = slots
            .iter()
            .flatten()
            .filter_map(|s| s.session.poll_timeout())
            .min();
        let wait = deadline.map_or(Duration::from_secs(3600), |t| {
            t.saturating_duration_since(now())
        });
        let mut timer = pin!(embassy_time::Timer::after_millis(wait.millis()));
        let event = poll_fn(|cx| {
            if let Poll::Ready(r) = listen.poll_recv_from(&mut req, cx) {
                return Poll::Ready(Event::Request(r.map(|(n, m)| (n, m.endpoint))));
            }
            for (i, socket) in sockets.iter().enumerate() {
                if let Poll::Ready(r) = socket.poll_recv_from(&mut rx, cx) {
                    return Poll::Ready(Event::Transfer(i, r.map(|(n, m)| (n, m.endpoint))));
                }
            }
            timer.as_mut().poll(cx).map(|()| Event::Timeout)
        })
        .await;
        match event {
            Event::Request(Ok((n, from))) => {
                let Some(client) = v4_endpoint(from) else {
                    continue;
                };
                let datagram = req.get(..n).unwrap_or_default();
                let mut name = [0u8; MAX_NAME];
                let decision = frontend::accept(&mut table, client, datagram, &mut name, (), |p| {
                    files.open(p).ok_or(Unopened::NotFound)
                });
                let refusal = match decision {
                    Decision::Start(start) => {
                        // The replaced transfer's slot (same client TID), else a free one: the
                        // table holds at most N transfers, so one is free.
                        let replaced = start.replaced.is_some();
                        let i = if replaced {
                            slots
                                .iter()
                                .position(|s| s.as_ref().is_some_and(|s| s.client == client))
                        } else {
                            slots.iter().position(Option::is_none)
                        };
                        match i.and_then(|i| Some((slots.get_mut(i)?, sockets.get_mut(i)?))) {
                            None => {
                                table.finish(start.id);
                                Some(Refusal::Busy)
                            }
                            Some((slot, socket)) => {
                                if replaced {
                                    events.abandoned(client);
                                }
                                socket.close();
                                // A fresh ephemeral port per transfer: its transfer ID.
                                if socket.bind(0).is_err() {
                                    *slot = None;
                                    table.finish(start.id);
                                    Some(Refusal::Busy)
                                } else {
                                    events.started(client, start.file);
                                    *slot = Some(Slot {
                                        id: start.id,
                                        client,
                                        session: start.session(now(), config),
                                        file: start.opened.0,
                                    });
                                    None
                                }
                            }
                        }
                    }
                    Decision::Refuse { why, replaced, .. } => {
                        if replaced.is_some() {
                            // The client moved on to a file we refuse: its old transfer ends.
                            for (slot, socket) in slots.iter_mut().zip(sockets.iter_mut()) {
                                if slot.as_ref().is_some_and(|s| s.client == client) {
                                    events.abandoned(client);
                                    socket.close();
                                    *slot = None;
                                }
                            }
                        }
                        Some(why)
                    }
                    _ => None, // not a request, or a retransmitted one
                };
                if let Some(why) = refusal {
                    events.refused(client, why);
                    let (code, msg) = why.code();
                    let len = tftp::error_packet(code, msg, &mut tx);
                    let _ = listen
                        .send_to(tx.get(..len).unwrap_or_default(), endpoint(client))
                        .await;
                }
            }
            Event::Transfer(i, Ok((n, from))) => {
                let (Some(Some(s)), Some(socket)) = (slots.get_mut(i), sockets.get(i)) else {
                    continue;
                };
                if from == endpoint(s.client) {
                    s.session.handle(now(), rx.get(..n).unwrap_or_default());
                } else {
                    // RFC 1350: a packet from another TID gets an ERROR; the transfer goes on.
                    let len = tftp::error_packet(ErrorCode::UnknownTid, "unknown TID", &mut tx);
                    let _ = socket
                        .send_to(tx.get(..len).unwrap_or_default(), from)
                        .await;
                }
            }
            Event::Timeout => {
                let t = now();
                for s in slots.iter_mut().flatten() {
                    s.session.handle_timeout(t);
                }
            }
            Event::Request(Err(_)) | Event::Transfer(_, Err(_)) => {}
        }
    }
}

/// A running transfer.
struct Slot<F> {
    id: TransferId,
    client: SocketAddrV4,
    session: Session,
    file: F,
}

/// What woke the loop.
enum Event {
    /// A datagram on port 69.
    Request(Result<(usize, IpEndpoint), RecvError>),
    /// A datagram on slot `0`'s socket.
    Transfer(usize, Result<(usize, IpEndpoint), RecvError>),
    /// A session's timer.
    Timeout,
}
