//! Model test of the dynamic pool over random operation sequences: an address bound to one client
//! is never handed to another before its lease ends, reserved addresses are never handed out,
//! quarantined ones stay out, and a client keeps its address. The heap-backed `Pool` and the
//! fixed-storage `FixedPool` are held to the same model.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::net::Ipv4Addr;

use proptest::prelude::*;
use pxe_core::dhcp::fixed_pool::FixedPool;
use pxe_core::dhcp::pool::{AddressPool, Pool, SlotState};
use pxe_core::{Duration, Instant, MacAddr};

#[derive(Debug, Clone)]
enum Op {
    Allocate { client: u8, requested: Option<u8> },
    Bind { client: u8 },
    Release { client: u8 },
    Decline { client: u8 },
    Wait { secs: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, proptest::option::of(0u8..10)).prop_map(|(client, requested)| Op::Allocate { client, requested }),
        4 => (0u8..12).prop_map(|client| Op::Bind { client }),
        1 => (0u8..12).prop_map(|client| Op::Release { client }),
        1 => (0u8..12).prop_map(|client| Op::Decline { client }),
        1 => (0u16..120).prop_map(|secs| Op::Wait { secs }),
    ]
}

fn mac(c: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, c])
}

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 100 + n)
}

const RESERVED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 103);
const HOLD: Duration = Duration::from_secs(30);
const LEASE: Duration = Duration::from_secs(60);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn bound_addresses_are_never_shared(ops in proptest::collection::vec(op(), 1..200)) {
        check::<Pool>(&ops)?;
    }

    #[test]
    fn fixed_pool_follows_the_same_model(ops in proptest::collection::vec(op(), 1..200)) {
        check::<FixedPool<16>>(&ops)?;
    }
}

fn check<P: AddressPool>(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut pool = P::for_range(ip(0), ip(9));
    let mut now = Instant::from_secs(1000);
    // Model: address → (client, lease end) for bound leases; client → last offered address.
    let mut bound: HashMap<Ipv4Addr, (u8, Instant)> = HashMap::new();
    let mut offered: HashMap<u8, Ipv4Addr> = HashMap::new();
    let mut quarantined: HashMap<Ipv4Addr, Instant> = HashMap::new();
    for op in ops.iter().cloned() {
        match op {
            Op::Allocate { client, requested } => {
                let got =
                    pool.allocate(mac(client), requested.map(ip), now, HOLD, |a| a == RESERVED);
                if got.is_err() {
                    // Exhausted only if every unreserved address is held live by someone else
                    // (or quarantined).
                    for a in (0..10).map(ip).filter(|a| *a != RESERVED) {
                        let slot = pool.held(a).filter(|s| s.expires > now);
                        prop_assert!(
                            slot.is_some_and(
                                |s| s.mac != mac(client) || s.state == SlotState::Declined
                            ),
                            "exhausted for {} while {} is {:?}",
                            client,
                            a,
                            slot
                        );
                    }
                }
                if let Ok(a) = got {
                    prop_assert_ne!(a, RESERVED, "reserved address handed out");
                    if let Some((owner, end)) = bound.get(&a) {
                        prop_assert!(
                            *owner == client || *end <= now,
                            "{a} bound to {owner} until {end}, offered to {client}"
                        );
                    }
                    if let Some(until) = quarantined.get(&a) {
                        prop_assert!(*until <= now, "{a} quarantined until {until}");
                    }
                    // A client with a live binding keeps its address.
                    for (addr, (owner, end)) in &bound {
                        if *owner == client && *end > now {
                            prop_assert_eq!(
                                a,
                                *addr,
                                "client {} moved off its bound address",
                                client
                            );
                        }
                    }
                    offered.insert(client, a);
                }
            }
            Op::Bind { client } => {
                if let Some(a) = offered.get(&client).copied()
                    && pool.bind(mac(client), a, now + LEASE, now).is_ok()
                {
                    if let Some((owner, end)) = bound.get(&a) {
                        prop_assert!(
                            *owner == client || *end <= now,
                            "bind stole {a} from {owner}"
                        );
                    }
                    bound.retain(|_, (o, _)| *o != client);
                    bound.insert(a, (client, now + LEASE));
                }
            }
            Op::Release { client } => {
                if let Some((addr, _)) = bound
                    .iter()
                    .find(|(_, (o, _))| *o == client)
                    .map(|(a, v)| (*a, *v))
                {
                    pool.release(mac(client), addr);
                    bound.remove(&addr);
                }
            }
            Op::Decline { client } => {
                if let Some(a) = offered.remove(&client) {
                    pool.decline(mac(client), a, now + Duration::from_secs(300), now);
                    quarantined.insert(a, now + Duration::from_secs(300));
                    bound.remove(&a);
                }
            }
            Op::Wait { secs } => now = now + Duration::from_secs(u64::from(secs)),
        }
        // No address is held live by two clients.
        let mut holders: HashMap<Ipv4Addr, MacAddr> = HashMap::new();
        for a in (0..10).map(ip) {
            if let Some(slot) = pool.held(a).filter(|s| s.expires > now) {
                prop_assert!(holders.insert(a, slot.mac).is_none());
            }
        }
    }
    Ok(())
}
