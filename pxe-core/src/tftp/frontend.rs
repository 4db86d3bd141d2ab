//! The request front-end every driver shares: what a datagram on port 69 does.
//!
//! [`accept`] parses the RRQ, normalises its file name, asks the [`Transfers`] table whether it
//! starts a transfer, and opens the file through the driver's `open`; the driver then only
//! moves bytes: it sends the ERROR of a [`Decision::Refuse`], stops the transfer a
//! [`Decision::Start`] replaced, and runs the new one from its own port. The tokio appliance
//! (`appliance/src/tftp/mod.rs`) and the embassy loop ([`crate::embassy::serve_tftp`]) both
//! call it, so both answer every request the same way.

use core::net::SocketAddrV4;

use super::path::{PathError, normalize_path};
use super::transfers::{Admit, TransferId, Transfers};
use super::wire::{ErrorCode, Request, RequestError, TftpOptions, parse_request};
use super::{Session, SessionConfig};
use crate::Instant;

/// Longest normalised file name (the driver's name buffer).
pub const MAX_NAME: usize = 256;

/// What to do with a datagram that arrived on port 69.
#[derive(Debug)]
#[non_exhaustive]
pub enum Decision<'n, T, F> {
    /// Not a request (DATA, ACK, ERROR, OACK): send nothing (RFC 1350 §7: an ERROR is never
    /// answered with an ERROR).
    Ignore,
    /// Send the ERROR of [`Refusal::code`] to the client. `file` is the normalised name when the
    /// request got that far; `replaced` is the value of a transfer the request ended.
    Refuse {
        /// Why.
        why: Refusal,
        /// The normalised name, if it was valid.
        file: Option<&'n str>,
        /// The transfer this client TID had running for another file, now ended: stop it.
        replaced: Option<T>,
    },
    /// A retransmitted RRQ of a running transfer: send nothing (its session retransmits).
    Duplicate {
        /// The normalised name.
        file: &'n str,
    },
    /// Start a transfer from a new port; call [`Transfers::finish`] with `id` when it ends.
    Start(Start<'n, T, F>),
}

/// A transfer to start.
#[derive(Debug)]
pub struct Start<'n, T, F> {
    /// Its entry in the table.
    pub id: TransferId,
    /// The normalised name.
    pub file: &'n str,
    /// The options the client asked for.
    pub options: TftpOptions,
    /// What `open` returned: the file and its size.
    pub opened: (F, u64),
    /// The transfer this client TID had running for another file, now ended: stop it.
    pub replaced: Option<T>,
}

impl<T, F> Start<'_, T, F> {
    /// The session that serves it.
    pub fn session(&self, now: Instant, config: &SessionConfig) -> Session {
        let request = Request {
            filename: self.file.as_bytes(),
            options: self.options,
        };
        Session::new(now, &request, self.opened.1, config)
    }
}

/// Why a request gets an ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Not a valid read request (a write, a bad mode or option, malformed).
    Request(RequestError),
    /// The file name is not a relative path inside the root.
    Path(PathError),
    /// Every transfer slot is taken.
    Busy,
    /// No such file.
    NotFound,
    /// The file exists but cannot be read.
    Unreadable,
}

impl Refusal {
    /// The ERROR code and message to send.
    pub fn code(self) -> (ErrorCode, &'static str) {
        match self {
            Refusal::Request(e) => e.code(),
            Refusal::Path(_) => (ErrorCode::AccessViolation, "invalid file name"),
            Refusal::Busy => (ErrorCode::NotDefined, "server busy, retry"),
            Refusal::NotFound => (ErrorCode::FileNotFound, "file not found"),
            Refusal::Unreadable => (ErrorCode::AccessViolation, "cannot open file"),
        }
    }
}

/// Why `open` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unopened {
    /// No such file.
    NotFound,
    /// It exists but cannot be read.
    Unreadable,
}

/// Decides what `datagram` from `client` does (see the module docs). `name` receives the
/// normalised file name; `value` is kept in `table` with a transfer that starts; `open` is
/// called only for a request that starts one.
pub fn accept<'n, T, F, const N: usize>(
    table: &mut Transfers<T, N>,
    client: SocketAddrV4,
    datagram: &[u8],
    name: &'n mut [u8; MAX_NAME],
    value: T,
    open: impl FnOnce(&str) -> Result<(F, u64), Unopened>,
) -> Decision<'n, T, F> {
    let req = match parse_request(datagram) {
        Ok(r) => r,
        Err(RequestError::NotARequest) => return Decision::Ignore,
        Err(e) => return refuse(Refusal::Request(e), None, None),
    };
    let file: &'n str = match normalize_path(req.filename, name) {
        Ok(f) => f,
        Err(e) => return refuse(Refusal::Path(e), None, None),
    };
    let (id, replaced) = match table.admit(client, file.as_bytes(), value) {
        Admit::Start(id) => (id, None),
        Admit::Replaced { id, old } => (id, Some(old)),
        Admit::Duplicate(_) => return Decision::Duplicate { file },
        // Busy, and any decision added later: the client retries.
        _ => return refuse(Refusal::Busy, Some(file), None),
    };
    match open(file) {
        Ok(opened) => Decision::Start(Start {
            id,
            file,
            options: req.options,
            opened,
            replaced,
        }),
        Err(e) => {
            table.finish(id);
            let why = match e {
                Unopened::NotFound => Refusal::NotFound,
                Unopened::Unreadable => Refusal::Unreadable,
            };
            refuse(why, Some(file), replaced)
        }
    }
}

fn refuse<'n, T, F>(
    why: Refusal,
    file: Option<&'n str>,
    replaced: Option<T>,
) -> Decision<'n, T, F> {
    Decision::Refuse {
        why,
        file,
        replaced,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use core::net::Ipv4Addr;

    use super::*;

    fn rrq(name: &str) -> heapless::Vec<u8, 128> {
        let mut v = heapless::Vec::new();
        v.extend_from_slice(&[0, 1]).unwrap();
        v.extend_from_slice(name.as_bytes()).unwrap();
        v.extend_from_slice(b"\0octet\0").unwrap();
        v
    }

    const A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 50), 2000);
    const B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 51), 2000);

    fn found(_: &str) -> Result<((), u64), Unopened> {
        Ok(((), 1000))
    }

    #[test]
    fn decisions() {
        let mut table: Transfers<u8, 1> = Transfers::new();
        let mut name = [0u8; MAX_NAME];
        let id = match accept(&mut table, A, &rrq("a/./b.efi"), &mut name, 1, found) {
            Decision::Start(s) => {
                assert_eq!(s.file, "a/b.efi");
                assert_eq!(s.opened.1, 1000);
                assert!(s.replaced.is_none());
                s.id
            }
            d => panic!("{d:?}"),
        };
        let mut name = [0u8; MAX_NAME];
        assert!(matches!(
            accept(&mut table, A, &rrq("a/b.efi"), &mut name, 2, found),
            Decision::Duplicate { file: "a/b.efi" }
        ));
        let mut name = [0u8; MAX_NAME];
        assert!(matches!(
            accept(&mut table, B, &rrq("x"), &mut name, 3, found),
            Decision::Refuse {
                why: Refusal::Busy,
                file: Some("x"),
                ..
            }
        ));
        // Another file from A: the old transfer is handed back, even when the new one fails.
        let mut name = [0u8; MAX_NAME];
        match accept(&mut table, A, &rrq("nope"), &mut name, 4, |_| {
            Err::<((), u64), _>(Unopened::NotFound)
        }) {
            Decision::Refuse {
                why: Refusal::NotFound,
                replaced: Some(1),
                ..
            } => {}
            d => panic!("{d:?}"),
        }
        assert!(table.is_empty(), "a refused request leaves nothing behind");
        assert!(table.finish(id).is_none());
        let mut name = [0u8; MAX_NAME];
        assert!(matches!(
            accept(&mut table, A, &rrq("../etc/passwd"), &mut name, 5, found),
            Decision::Refuse {
                why: Refusal::Path(PathError::Traversal),
                ..
            }
        ));
        let mut name = [0u8; MAX_NAME];
        assert!(matches!(
            accept(&mut table, A, &[0, 4, 0, 1], &mut name, 6, found),
            Decision::Ignore
        ));
        let mut name = [0u8; MAX_NAME];
        assert!(matches!(
            accept(
                &mut table,
                A,
                &[0, 2, b'a', 0, b'o', 0],
                &mut name,
                7,
                found
            ),
            Decision::Refuse {
                why: Refusal::Request(_),
                ..
            }
        ));
    }
}
