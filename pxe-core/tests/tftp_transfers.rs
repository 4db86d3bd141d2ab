//! Which RRQs start a transfer (`tftp::Transfers`), and how a client's ERROR ends a session.
//! Issue 20: a retransmitted RRQ must not start a second transfer to the same client.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use proptest::prelude::*;
use pxe_core::Instant;
use pxe_core::tftp::{
    Admit, Failure, Session, SessionConfig, State, TransferId, Transfers, parse_request,
};

fn client(last: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, last), port)
}

fn started<T: std::fmt::Debug>(a: Admit<T>) -> TransferId {
    match a {
        Admit::Start(id) => id,
        other => panic!("expected Start, got {other:?}"),
    }
}

#[test]
fn retransmitted_rrq_is_a_duplicate_while_active_and_new_after() {
    let mut t: Transfers<(), 4> = Transfers::new();
    let c = client(10, 2070);
    let id = started(t.admit(c, b"snponly.efi", ()));
    assert_eq!(t.admit(c, b"snponly.efi", ()), Admit::Duplicate(id));
    assert_eq!(t.admit(c, b"snponly.efi", ()), Admit::Duplicate(id));
    assert_eq!(t.len(), 1, "a duplicate takes no slot");
    assert_eq!(t.finish(id), Some(()));
    assert!(t.is_empty());
    // Once the transfer has ended, the same request is a new transfer (the client asked again).
    let again = started(t.admit(c, b"snponly.efi", ()));
    assert_ne!(again, id);
}

#[test]
fn new_port_is_a_new_transfer_and_other_clients_are_independent() {
    let mut t: Transfers<(), 4> = Transfers::new();
    let a = started(t.admit(client(10, 2070), b"f", ()));
    // Same address, new port: the client restarted with a new socket.
    let b = started(t.admit(client(10, 2071), b"f", ()));
    // Another client, same port number.
    let c = started(t.admit(client(11, 2070), b"f", ()));
    assert_eq!(t.len(), 3);
    assert!(a != b && b != c && a != c);
}

#[test]
fn another_file_from_the_same_tid_replaces_the_active_transfer() {
    let mut t: Transfers<&str, 4> = Transfers::new();
    let c = client(10, 2070);
    let first = started(t.admit(c, b"undionly.kpxe", "first"));
    let second = match t.admit(c, b"snponly.efi", "second") {
        Admit::Replaced { id, old } => {
            assert_eq!(
                old, "first",
                "the abandoned transfer's value comes back to stop it"
            );
            id
        }
        other => panic!("expected Replaced, got {other:?}"),
    };
    assert_eq!(t.len(), 1);
    // The abandoned transfer's end must not remove its successor.
    assert_eq!(t.finish(first), None);
    assert_eq!(t.len(), 1);
    assert_eq!(t.admit(c, b"snponly.efi", "dup"), Admit::Duplicate(second));
    assert_eq!(t.finish(second), Some("second"));
    assert!(t.is_empty());
}

#[test]
fn full_table_is_busy_and_a_finished_slot_is_reused() {
    let mut t: Transfers<u32, 2> = Transfers::new();
    let a = started(t.admit(client(1, 1000), b"f", 1));
    let _b = started(t.admit(client(2, 1000), b"f", 2));
    assert_eq!(t.admit(client(3, 1000), b"f", 3), Admit::Busy);
    // A duplicate of an active transfer is still recognised when the table is full.
    assert!(matches!(
        t.admit(client(1, 1000), b"f", 9),
        Admit::Duplicate(_)
    ));
    assert_eq!(t.finish(a), Some(1));
    assert_eq!(t.finish(a), None, "finishing twice is harmless");
    let c = started(t.admit(client(3, 1000), b"f", 3));
    assert_ne!(c, a, "a reused slot gets a new generation");
    assert_eq!(t.len(), 2);
    assert_eq!(t.capacity(), 2);
}

#[test]
fn a_lower_limit_is_busy_sooner_and_duplicates_and_replacements_still_pass() {
    let mut t: Transfers<u32, 8> = Transfers::new();
    t.set_limit(2);
    let a = started(t.admit(client(1, 1000), b"f", 1));
    let _b = started(t.admit(client(2, 1000), b"f", 2));
    assert_eq!(t.admit(client(3, 1000), b"f", 3), Admit::Busy);
    assert!(matches!(
        t.admit(client(1, 1000), b"f", 9),
        Admit::Duplicate(_)
    ));
    // A client that moves on to another file keeps its place: no new slot is taken.
    assert!(matches!(
        t.admit(client(2, 1000), b"g", 4),
        Admit::Replaced { old: 2, .. }
    ));
    t.finish(a);
    started(t.admit(client(3, 1000), b"f", 3));
    // Lowering the limit below the running count stops new transfers, not running ones.
    t.set_limit(1);
    assert_eq!(t.len(), 2);
    assert_eq!(t.admit(client(4, 1000), b"f", 5), Admit::Busy);
    // Out of range: clamped to 1..=N.
    t.set_limit(0);
    assert_eq!(t.admit(client(4, 1000), b"f", 5), Admit::Busy);
    t.set_limit(100);
    started(t.admit(client(4, 1000), b"f", 5));
}

#[derive(Debug, Clone)]
enum Op {
    Admit { client: u8, port: u8, file: u8 },
    Finish(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, 0u8..3, 0u8..3).prop_map(|(client, port, file)| Op::Admit { client, port, file }),
        (0usize..16).prop_map(Op::Finish),
    ]
}

proptest! {
    /// The table against a plain map model: (addr, port) → (file, id). It never holds more than
    /// its capacity, never two transfers for one client TID, and an id, once finished or
    /// replaced, never removes anything again.
    #[test]
    fn table_matches_a_map_model(ops in proptest::collection::vec(op(), 0..200)) {
        const N: usize = 3;
        let mut t: Transfers<u64, N> = Transfers::new();
        let mut model: HashMap<SocketAddrV4, (u8, TransferId, u64)> = HashMap::new();
        let mut ids: Vec<TransferId> = Vec::new();
        let mut next_value = 0u64;
        for op in ops {
            match op {
                Op::Admit { client: c, port, file } => {
                    let addr = client(c, 1000 + u16::from(port));
                    next_value += 1;
                    let got = t.admit(addr, &[b'f', file], next_value);
                    match model.get(&addr).copied() {
                        Some((f, id, _)) if f == file => prop_assert_eq!(got, Admit::Duplicate(id)),
                        Some((_, old_id, old_value)) => {
                            let Admit::Replaced { id, old } = got else {
                                return Err(TestCaseError::fail(format!("expected Replaced: {got:?}")));
                            };
                            prop_assert_eq!(old, old_value);
                            prop_assert_ne!(id, old_id);
                            model.insert(addr, (file, id, next_value));
                            ids.push(id);
                        }
                        None if model.len() == N => prop_assert_eq!(got, Admit::Busy),
                        None => {
                            let Admit::Start(id) = got else {
                                return Err(TestCaseError::fail(format!("expected Start: {got:?}")));
                            };
                            model.insert(addr, (file, id, next_value));
                            ids.push(id);
                        }
                    }
                }
                Op::Finish(i) => {
                    let Some(id) = ids.get(i % ids.len().max(1)).copied() else { continue };
                    let live = model.iter().find(|(_, v)| v.1 == id).map(|(k, v)| (*k, v.2));
                    let got = t.finish(id);
                    match live {
                        Some((addr, value)) => {
                            prop_assert_eq!(got, Some(value));
                            model.remove(&addr);
                        }
                        None => prop_assert_eq!(got, None),
                    }
                }
            }
            prop_assert_eq!(t.len(), model.len());
        }
    }
}

/// RFC 1350 §4: a client that gets DATA from a TID it does not know answers ERROR 5. The
/// session that sent it must stop at once, not keep sending the file until its retries run out.
#[test]
fn error_5_from_the_client_ends_a_running_session() {
    let req_bytes = b"\0\x01f\0octet\0blksize\x00512\0";
    let req = parse_request(req_bytes).unwrap();
    let file = vec![7u8; 512 * 40];
    let mut src: &[u8] = &file;
    let mut s = Session::new(
        Instant::ZERO,
        &req,
        file.len() as u64,
        &SessionConfig::default(),
    );
    let mut out = [0u8; 1024];
    let n = s.poll_transmit(Instant::ZERO, &mut src, &mut out).unwrap();
    assert_eq!(&out[..2], b"\0\x06", "OACK first: {:?}", &out[..n]);
    s.handle(Instant::ZERO, b"\0\x04\0\0");
    let n = s.poll_transmit(Instant::ZERO, &mut src, &mut out).unwrap();
    assert_eq!(&out[..4], b"\0\x03\0\x01", "DATA 1: {:?}", &out[..n]);
    s.handle(Instant::ZERO, b"\0\x05\0\x05unknown transfer ID\0");
    assert_eq!(s.state(), State::Failed(Failure::ClientError(5)));
    assert_eq!(s.poll_timeout(), None, "no timer: nothing will be resent");
    // Not on a later poll, nor after what would have been every retransmission timeout.
    for secs in [0, 1, 2, 5, 60] {
        let now = Instant::from_secs(secs);
        s.handle_timeout(now);
        assert!(
            s.poll_transmit(now, &mut src, &mut out).is_none(),
            "{secs} s"
        );
    }
    // Later datagrams (a late ACK) do not revive it.
    s.handle(Instant::from_secs(61), b"\0\x04\0\x01");
    assert!(
        s.poll_transmit(Instant::from_secs(61), &mut src, &mut out)
            .is_none()
    );
}

/// Any ERROR code, even one the client makes up, ends the session; so does an ERROR while the
/// OACK is still unacknowledged.
#[test]
fn any_error_ends_the_session_even_before_the_oack_is_acked() {
    let req = parse_request(b"\0\x01f\0octet\0tsize\x000\0").unwrap();
    for code in [0u16, 1, 4, 5, 8, 0xffff] {
        let mut src: &[u8] = &[1u8; 2000];
        let mut s = Session::new(Instant::ZERO, &req, 2000, &SessionConfig::default());
        let mut out = [0u8; 1024];
        assert!(s.poll_transmit(Instant::ZERO, &mut src, &mut out).is_some());
        let [hi, lo] = code.to_be_bytes();
        s.handle(Instant::ZERO, &[0, 5, hi, lo, 0]);
        assert_eq!(s.state(), State::Failed(Failure::ClientError(code)));
        s.handle_timeout(Instant::from_secs(10));
        assert!(
            s.poll_transmit(Instant::from_secs(10), &mut src, &mut out)
                .is_none()
        );
    }
}
