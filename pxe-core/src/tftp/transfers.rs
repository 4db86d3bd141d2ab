//! Which read requests start a transfer: a fixed-capacity table of the active transfers, keyed
//! by the client's transfer ID (its IPv4 address and UDP port, RFC 1350 §4).
//!
//! Clients retransmit their RRQ when the first OACK or DATA is slow to come (EDK2's MTFTP, iPXE,
//! PXE ROMs and curl all do), which is exactly what happens at the start of a boot storm. Every
//! RRQ used to start a transfer from a new server port, so the retransmission started a second
//! transfer of the same file to the same client from a TID it does not know: curl aborts
//! ("unknown transfer ID"), firmware ignores it while the server sends the file twice. The rules:
//!
//! - **Same client address and port, same file, transfer still active: the RRQ is ignored**
//!   ([`Admit::Duplicate`]). The active session already retransmits its OACK or unacknowledged
//!   window when its own timer fires, so a lost first packet costs at most one timeout. Answering
//!   the duplicate by resending from the session's TID would instead tie retransmissions to
//!   request arrivals: a duplicate that sat in a queue while the transfer moved on would trigger
//!   a spurious resend, and every queued copy another one — the doubling of the Sorcerer's
//!   Apprentice bug (RFC 1123 §4.2.3.1) that the session avoids for duplicate ACKs.
//! - **Same address, new port: a new transfer.** The client restarted (new socket, new TID).
//! - **Same address and port, another file, while active: the old transfer is abandoned and the
//!   new one starts** ([`Admit::Replaced`]). The client has moved on (tftp-hpa's interactive
//!   client keeps one port for successive `get`s); the old session's DATA would only be noise the
//!   client answers with ERROR 5. Refusing instead would stall a client that did nothing wrong
//!   until the old session timed out.
//! - **The table is full: [`Admit::Busy`]**: `N` slots, or the lower limit the driver set
//!   ([`Transfers::set_limit`]), are taken. The driver either answers "server busy" or, better
//!   for firmware whose download ends on any ERROR, sends nothing, so the client's own RRQ
//!   retransmission asks again later. The table is the only bound on concurrent transfers.
//!
//! A transfer leaves the table through [`Transfers::finish`] with the [`TransferId`] it was
//! admitted with, however it ends (done, failed, timed out, abandoned). Ids carry a generation, so
//! finishing a transfer that was already replaced never removes its successor. An RRQ that
//! arrives after its transfer ended cannot be told from a new request and starts one; the client
//! answers that TID with ERROR 5, which ends it at once ([`super::Session::handle`]).
//!
//! Files are compared by a 64-bit FNV-1a digest of the normalised name, so entries need no
//! allocation and fixed, small storage. A collision needs one client asking for two files at
//! once; its only effect would be that the second request is taken for a retransmission.

use core::net::SocketAddrV4;

/// A transfer admitted into a [`Transfers`] table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransferId {
    slot: u32,
    generation: u32,
}

/// What to do with a read request.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admit<T> {
    /// Start a transfer; call [`Transfers::finish`] with this id when it ends.
    Start(TransferId),
    /// Start a transfer (this id) after ending the one the same client TID had running for
    /// another file; its value is handed back so the driver can stop it.
    Replaced {
        /// The new transfer.
        id: TransferId,
        /// The value stored with the abandoned transfer.
        old: T,
    },
    /// A retransmission of the RRQ of this active transfer: send nothing.
    Duplicate(TransferId),
    /// The table is full (see [`Transfers::set_limit`]): no transfer starts.
    Busy,
}

/// Active transfers, at most `N`, each with a value `T` the driver keeps with it (a handle to
/// stop it, or `()`).
#[derive(Debug)]
pub struct Transfers<T, const N: usize> {
    slots: [Option<Entry<T>>; N],
    generation: u32,
    len: usize,
    limit: usize,
}

#[derive(Debug)]
struct Entry<T> {
    client: SocketAddrV4,
    file: u64,
    generation: u32,
    value: T,
}

impl<T, const N: usize> Default for Transfers<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> Transfers<T, N> {
    /// An empty table.
    pub const fn new() -> Self {
        Self {
            slots: [const { None }; N],
            generation: 0,
            len: 0,
            limit: N,
        }
    }

    /// Admits at most `limit` concurrent transfers (at least 1, at most `N`); transfers already
    /// running above a lowered limit run to their end.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.clamp(1, N);
    }

    /// Decides what an RRQ from `client` for the normalised name `file` does, and records the
    /// transfer (with `value`) when one starts. On `Duplicate` and `Busy`, `value` is dropped.
    pub fn admit(&mut self, client: SocketAddrV4, file: &[u8], value: T) -> Admit<T> {
        let digest = fnv1a(file);
        let generation = self.generation.wrapping_add(1);
        let mut free = None;
        for (slot, s) in self.slots.iter_mut().enumerate() {
            let Some(entry) = s else {
                free = free.or(Some(slot));
                continue;
            };
            if entry.client != client {
                continue;
            }
            let slot = slot as u32;
            if entry.file == digest {
                return Admit::Duplicate(TransferId {
                    slot,
                    generation: entry.generation,
                });
            }
            entry.file = digest;
            entry.generation = generation;
            let old = core::mem::replace(&mut entry.value, value);
            self.generation = generation;
            return Admit::Replaced {
                id: TransferId { slot, generation },
                old,
            };
        }
        if self.len >= self.limit {
            return Admit::Busy;
        }
        let Some((slot, s)) = free.and_then(|i| Some((i, self.slots.get_mut(i)?))) else {
            return Admit::Busy;
        };
        *s = Some(Entry {
            client,
            file: digest,
            generation,
            value,
        });
        self.generation = generation;
        self.len += 1;
        Admit::Start(TransferId {
            slot: slot as u32,
            generation,
        })
    }

    /// Removes the transfer `id` (it ended) and returns its value; `None` if it had already
    /// left or been replaced.
    pub fn finish(&mut self, id: TransferId) -> Option<T> {
        let slot = self.slots.get_mut(id.slot as usize)?;
        if slot.as_ref()?.generation != id.generation {
            return None;
        }
        self.len = self.len.saturating_sub(1);
        slot.take().map(|e| e.value)
    }

    /// Active transfers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no transfer is active.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The capacity `N`.
    pub const fn capacity(&self) -> usize {
        N
    }
}

/// FNV-1a, 64 bits: tiny, no tables, and good enough to tell file names apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
