//! Read-only TFTP server sessions (RFC 1350, options RFC 2347/2348/2349/7440), sans-IO.
//!
//! The driver owns one UDP socket per transfer (the server TID). It hands every datagram of port
//! 69 to [`frontend::accept`], which parses the RRQ ([`parse_request`]), normalises its name
//! ([`normalize_path`]), asks the driver's [`Transfers`] table whether it starts a transfer at all
//! (a retransmitted RRQ from the client TID of an active transfer is ignored; the rules and why
//! are in [`transfers`]) and opens the file. For a transfer that starts, the driver creates its
//! [`Session`] and loops: send what [`Session::poll_transmit`] yields, feed datagrams from the
//! client's TID to [`Session::handle`], and call [`Session::handle_timeout`] at
//! [`Session::poll_timeout`], until [`Session::state`] is no longer `Running`. Any ERROR the
//! client sends to a session's TID ends that session at once.
//!
//! Blocks are numbered absolutely inside the session (u64) and wrap to u16 on the wire, so files
//! of more than 65,535 blocks work (block-number rollover). Only a timeout, or an ACK showing a
//! gap inside a window (RFC 7440), retransmits; duplicate ACKs never do (the Sorcerer's
//! Apprentice bug, RFC 1123 §4.2.3.1).

pub mod frontend;
mod path;
pub mod transfers;
mod wire;

pub use path::{PathError, normalize_path};
pub use transfers::{Admit, TransferId, Transfers};
pub use wire::{
    ErrorCode, Opcode, Request, RequestError, TftpOptions, error_packet, parse_request,
};

use crate::{Duration, Instant};

/// Session limits the driver chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Largest block accepted in negotiation (Ethernet MTU 1500 → 1468 avoids IP fragments).
    pub max_blksize: u16,
    /// Retransmission timeout when the client does not ask for one.
    pub default_timeout: Duration,
    /// Retransmissions of one window before giving up.
    pub max_retries: u8,
    /// Largest window (RFC 7440; clients use ≤ 64).
    pub max_window: u16,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_blksize: 1468,
            default_timeout: Duration::from_secs(1),
            max_retries: 5,
            max_window: 64,
        }
    }
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Transfer in progress.
    Running,
    /// Every block acknowledged.
    Done {
        /// File bytes sent.
        bytes: u64,
        /// DATA/OACK packets sent more than once.
        retransmits: u64,
    },
    /// Gave up.
    Failed(Failure),
}

/// Why a session failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// No ACK after every retry.
    Timeout,
    /// The client sent an ERROR.
    ClientError(u16),
    /// The file could not be read.
    ReadError,
}

/// A file the session reads blocks from.
pub trait FileSource {
    /// Error type of the source.
    type Error;
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the file.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, Self::Error>;
}

impl FileSource for &[u8] {
    type Error = core::convert::Infallible;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let src = self.get(start..).unwrap_or(&[]);
        let n = src.len().min(buf.len());
        if let (Some(d), Some(s)) = (buf.get_mut(..n), src.get(..n)) {
            d.copy_from_slice(s);
        }
        Ok(n)
    }
}

/// One read transfer.
#[derive(Debug, Clone)]
pub struct Session {
    blksize: u16,
    window: u16,
    timeout: Duration,
    max_retries: u8,
    file_size: u64,
    /// The OACK to send (and resend until ACK 0), if options were accepted.
    oack: Option<TftpOptions>,
    oack_acked: bool,
    oack_sent: bool,
    /// Highest block the client acknowledged (absolute).
    acked: u64,
    /// Next block to send (absolute, from 1).
    next: u64,
    /// Last block of the file (absolute): a final short (possibly empty) block always ends it.
    last: u64,
    deadline: Option<Instant>,
    retries: u8,
    retransmits: u64,
    high_water: u64,
    state: State,
}

impl Session {
    /// Starts a transfer of a `file_size`-byte file for `req`.
    pub fn new(now: Instant, req: &Request<'_>, file_size: u64, cfg: &SessionConfig) -> Session {
        let mut accepted = TftpOptions::default();
        let mut blksize = 512u16;
        let mut window = 1u16;
        let mut timeout = cfg.default_timeout;
        let o = &req.options;
        if let Some(b) = o.blksize {
            // RFC 2348: 8..=65464; we may answer with a smaller value.
            blksize = b.clamp(8, cfg.max_blksize.clamp(8, 65464));
            accepted.blksize = Some(blksize);
        }
        if let Some(t) = o.timeout.filter(|t| (1..=255).contains(t)) {
            timeout = Duration::from_secs(u64::from(t));
            accepted.timeout = Some(t);
        }
        if o.tsize.is_some() {
            accepted.tsize = Some(file_size);
        }
        if let Some(w) = o.windowsize {
            window = w.clamp(1, cfg.max_window.max(1));
            accepted.windowsize = Some(window);
        }
        let any = accepted != TftpOptions::default();
        let last = file_size / u64::from(blksize) + 1;
        let _ = now;
        Session {
            blksize,
            window,
            timeout,
            max_retries: cfg.max_retries,
            file_size,
            oack: any.then_some(accepted),
            oack_acked: !any,
            oack_sent: false,
            acked: 0,
            next: 1,
            last,
            deadline: None,
            retries: 0,
            retransmits: 0,
            high_water: 0,
            state: State::Running,
        }
    }

    /// Negotiated block size.
    pub fn blksize(&self) -> u16 {
        self.blksize
    }

    /// Negotiated window size.
    pub fn window(&self) -> u16 {
        self.window
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Largest datagram this session emits (for sizing the driver's buffer).
    pub fn max_datagram(&self) -> usize {
        usize::from(self.blksize).max(512) + 4
    }

    /// Writes the next datagram to send into `out` and returns its length.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        file: &mut impl FileSource,
        out: &mut [u8],
    ) -> Option<usize> {
        if self.state != State::Running {
            return None;
        }
        if !self.oack_acked {
            if self.oack_sent {
                return None;
            }
            let oack = self.oack?;
            self.oack_sent = true;
            self.deadline = Some(now + self.current_timeout());
            return wire::emit_oack(&oack, out);
        }
        let window_end = self
            .acked
            .saturating_add(u64::from(self.window))
            .min(self.last);
        if self.next > window_end {
            return None;
        }
        let block = self.next;
        let need = usize::from(self.blksize) + 4;
        let buf = out.get_mut(..need)?;
        let offset = (block - 1).saturating_mul(u64::from(self.blksize));
        let data = buf.get_mut(4..)?;
        let mut n = 0;
        while n < data.len() {
            let rest = data.get_mut(n..)?;
            match file.read_at(offset + n as u64, rest) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(_) => {
                    self.state = State::Failed(Failure::ReadError);
                    return wire::emit_error(ErrorCode::NotDefined, "read error", out);
                }
            }
        }
        wire::put_header(buf, Opcode::Data, block as u16);
        if block <= self.high_water {
            self.retransmits += 1;
        }
        self.high_water = self.high_water.max(block);
        if block == self.acked + 1 || self.deadline.is_none() {
            self.deadline = Some(now + self.current_timeout());
        }
        self.next += 1;
        Some(4 + n)
    }

    /// Feeds a datagram from the client.
    pub fn handle(&mut self, now: Instant, datagram: &[u8]) {
        if self.state != State::Running {
            return;
        }
        match wire::parse_client(datagram) {
            Some(wire::ClientPacket::Ack(n)) => self.on_ack(now, n),
            Some(wire::ClientPacket::Error(code)) => {
                self.state = State::Failed(Failure::ClientError(code))
            }
            None => {}
        }
    }

    fn on_ack(&mut self, now: Instant, n: u16) {
        if !self.oack_acked {
            if n == 0 {
                self.oack_acked = true;
                self.retries = 0;
                self.deadline = None;
            }
            return;
        }
        // Map the wire number onto the absolute block inside what is in flight.
        let delta = u64::from(n.wrapping_sub(self.acked as u16));
        let in_flight = self.next.saturating_sub(self.acked + 1);
        if delta == 0 || delta > in_flight {
            // Duplicate or stale ACK: never retransmit on it (Sorcerer's Apprentice).
            return;
        }
        self.acked += delta;
        self.retries = 0;
        if self.acked >= self.last {
            let bytes = self.file_size;
            self.state = State::Done {
                bytes,
                retransmits: self.retransmits,
            };
            self.deadline = None;
            return;
        }
        if self.acked + 1 < self.next && self.window > 1 && delta < in_flight {
            // RFC 7440 §4: an ACK short of the window's end means the rest was lost.
            self.next = self.acked + 1;
        }
        self.deadline = if self.next > self.acked + 1 {
            Some(now + self.current_timeout())
        } else {
            None
        };
    }

    /// When [`Session::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Running {
            self.deadline
        } else {
            None
        }
    }

    /// Retransmits the unacknowledged window (or OACK) with backoff, or gives up.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.deadline else {
            return;
        };
        if self.state != State::Running || now < deadline {
            return;
        }
        self.retries = self.retries.saturating_add(1);
        if self.retries > self.max_retries {
            self.state = State::Failed(Failure::Timeout);
            self.deadline = None;
            return;
        }
        if self.oack_acked {
            self.next = self.acked + 1;
        } else {
            self.oack_sent = false;
            self.retransmits += 1;
        }
        self.deadline = None;
    }

    fn current_timeout(&self) -> Duration {
        // Exponential backoff, capped at 8×.
        self.timeout.saturating_mul(1u64 << self.retries.min(3))
    }
}

#[cfg(test)]
mod tests;
