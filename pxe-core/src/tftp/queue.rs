//! Admission for a driver that runs one transfer at a time (the embassy loop): the running
//! transfer plus up to `N - 1` requests waiting their turn, all in one [`Transfers`] table so a
//! retransmitted RRQ is recognised whether its transfer runs or waits.
//!
//! Without this, RRQs that arrive during a transfer sit in the socket's queue; a client's
//! retransmissions sit there too, and each later became a whole transfer to a client that had
//! moved on, blocking everyone else until its retries ran out. The rules are [`Transfers`']: a
//! duplicate of a running or waiting request is dropped; another file from the running
//! transfer's client TID ends that transfer and starts the new request; another file from a
//! waiting client replaces its request in place; a full queue answers "server busy".

use core::net::SocketAddrV4;

use super::transfers::{Admit, TransferId, Transfers};

/// Longest RRQ kept while it waits. A request with every RFC 2347 option and a 256-byte name
/// fits; a longer one that would have to wait is answered "server busy".
pub const MAX_WAITING_RRQ: usize = 400;

/// What to do with an RRQ that arrived (see [`Queue::arrive`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Arrival {
    /// Nothing is running: start it now; call [`Queue::finish`] when it ends.
    Start,
    /// Kept; [`Queue::next`] hands it back when its turn comes.
    Queued,
    /// A retransmission of a running or waiting request: send nothing.
    Duplicate,
    /// The running transfer's client asked for another file: end the running transfer without
    /// calling [`Queue::finish`], and start this request in its place.
    ReplacesRunning,
    /// No room to wait: answer "server busy" so the client retries.
    Busy,
}

/// The running transfer and the requests waiting for it, at most `N` in all.
#[derive(Debug)]
pub struct Queue<const N: usize> {
    table: Transfers<(), N>,
    running: Option<(TransferId, SocketAddrV4)>,
    waiting: heapless::Deque<Waiting, N>,
}

#[derive(Debug)]
struct Waiting {
    id: TransferId,
    client: SocketAddrV4,
    len: usize,
    rrq: [u8; MAX_WAITING_RRQ],
}

impl<const N: usize> Default for Queue<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Queue<N> {
    /// Nothing running, nothing waiting.
    pub const fn new() -> Self {
        Self {
            table: Transfers::new(),
            running: None,
            waiting: heapless::Deque::new(),
        }
    }

    /// Decides what the RRQ `rrq` from `client`, for the normalised name `file`, does. Requests
    /// that wait are copied in; nothing else is kept.
    pub fn arrive(&mut self, client: SocketAddrV4, file: &[u8], rrq: &[u8]) -> Arrival {
        let idle = self.running.is_none() && self.waiting.is_empty();
        match self.table.admit(client, file, ()) {
            Admit::Duplicate(_) => Arrival::Duplicate,
            Admit::Start(id) if idle => {
                self.running = Some((id, client));
                Arrival::Start
            }
            Admit::Start(id) => {
                let queued =
                    Waiting::new(id, client, rrq).and_then(|w| self.waiting.push_back(w).ok());
                if queued.is_some() {
                    Arrival::Queued
                } else {
                    self.table.finish(id);
                    Arrival::Busy
                }
            }
            Admit::Replaced { id, .. } => {
                if let Some((running, c)) = self.running.as_mut()
                    && *c == client
                {
                    *running = id;
                    return Arrival::ReplacesRunning;
                }
                let Some(slot) = self.waiting.iter_mut().find(|w| w.client == client) else {
                    // The table and the queue always agree; refuse rather than lose track.
                    self.table.finish(id);
                    return Arrival::Busy;
                };
                match Waiting::new(id, client, rrq) {
                    Some(w) => {
                        *slot = w;
                        Arrival::Queued
                    }
                    None => {
                        // Too long to keep: the client's old request is gone too.
                        let old = slot.id;
                        self.waiting.retain(|w| w.id != old);
                        self.table.finish(id);
                        Arrival::Busy
                    }
                }
            }
            _ => Arrival::Busy,
        }
    }

    /// The running transfer ended (done, failed, timed out, or its file could not be opened).
    pub fn finish(&mut self) {
        if let Some((id, _)) = self.running.take() {
            self.table.finish(id);
        }
    }

    /// When nothing runs, the next waiting request: it becomes the running one, its bytes are
    /// copied to `out`, and its client and length are returned. Call [`Queue::finish`] when it
    /// ends. `None` while a transfer runs or when nothing waits. A request longer than `out` is
    /// dropped (a driver passes a buffer of at least [`MAX_WAITING_RRQ`] bytes).
    pub fn next(&mut self, out: &mut [u8]) -> Option<(SocketAddrV4, usize)> {
        if self.running.is_some() {
            return None;
        }
        while let Some(w) = self.waiting.pop_front() {
            let (Some(dst), Some(src)) = (out.get_mut(..w.len), w.rrq.get(..w.len)) else {
                self.table.finish(w.id);
                continue;
            };
            dst.copy_from_slice(src);
            self.running = Some((w.id, w.client));
            return Some((w.client, w.len));
        }
        None
    }

    /// Whether a transfer is running.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Requests waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

impl Waiting {
    fn new(id: TransferId, client: SocketAddrV4, bytes: &[u8]) -> Option<Waiting> {
        let mut rrq = [0u8; MAX_WAITING_RRQ];
        rrq.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Waiting {
            id,
            client,
            len: bytes.len(),
            rrq,
        })
    }
}
