//! The DISCOVER → OFFER path for an inventory node allocates nothing on the heap, and neither
//! does a whole DORA from the fixed-storage pool (the engine as an embassy-net task runs it).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[path = "../benches/common.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Only the measuring thread counts: the test harness allocates on its own threads.
    static MEASURING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

// SAFETY: forwards to the system allocator; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if MEASURING.with(std::cell::Cell::get) {
            ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn static_discover_offer_allocates_nothing() {
    let mut s = common::server();
    let pkt = common::discover();
    let mut out = [0u8; 1500];
    // Warm up, then count.
    s.handle(
        pxe_core::Instant::from_secs(1),
        &common::RX,
        &pkt,
        &common::OneNode,
        &mut out,
    )
    .unwrap();
    let mut replies = 0;
    MEASURING.with(|m| m.set(true));
    for i in 0..1000 {
        let h = s.handle(
            pxe_core::Instant::from_secs(2 + i),
            &common::RX,
            &pkt,
            &common::OneNode,
            &mut out,
        );
        replies += usize::from(h.is_ok_and(|h| h.reply.is_some()));
    }
    MEASURING.with(|m| m.set(false));
    assert_eq!(replies, 1000);
    assert_eq!(
        ALLOCS.load(Ordering::SeqCst),
        0,
        "heap allocations on the DISCOVER→OFFER path"
    );
}

/// A DISCOVER (or, with `requested`, a SELECTING REQUEST) from an unknown client `n`.
fn from_unknown(n: u16, requested: Option<std::net::Ipv4Addr>) -> Vec<u8> {
    let mut v = common::discover();
    let [hi, lo] = n.to_be_bytes();
    v[32] = hi;
    v[33] = lo;
    if let Some(ip) = requested {
        // Message type REQUEST, then 50 and 54 before the END option.
        // The fixture's options start with 53 (message type) right after the cookie.
        assert_eq!(v[240..242], [53, 1]);
        v[242] = 3;
        v.pop();
        v.extend_from_slice(&[50, 4]);
        v.extend_from_slice(&ip.octets());
        v.extend_from_slice(&[54, 4, 192, 0, 2, 1, 255]);
    }
    v
}

#[test]
fn dynamic_dora_from_the_fixed_pool_allocates_nothing() {
    use pxe_core::dhcp::fixed_pool::FixedPool;
    use pxe_core::dhcp::server::{DhcpServer, LeaseChange};
    use pxe_core::dhcp::wire::Packet;

    let mut s: DhcpServer<FixedPool<128>> = DhcpServer::fixed(common::server().config().clone());
    let discovers: Vec<Vec<u8>> = (256..356).map(|n| from_unknown(n, None)).collect();
    // Offers are deterministic (lowest free first): learn them on a twin engine, unmeasured.
    let mut twin: DhcpServer<FixedPool<128>> = DhcpServer::fixed(s.config().clone());
    let mut out = [0u8; 1500];
    let now = pxe_core::Instant::from_secs(5);
    let mut requests = Vec::new();
    for (n, d) in discovers.iter().enumerate() {
        let h = twin
            .handle(now, &common::RX, d, &common::OneNode, &mut out)
            .unwrap();
        let len = h.reply.unwrap().len;
        let yiaddr = Packet::new_checked(&out[..len]).unwrap().yiaddr();
        requests.push(from_unknown(256 + u16::try_from(n).unwrap(), Some(yiaddr)));
    }
    let mut acks = 0;
    MEASURING.with(|m| m.set(true));
    for (d, r) in discovers.iter().zip(&requests) {
        let offer = s.handle(now, &common::RX, d, &common::OneNode, &mut out);
        let ack = s.handle(now, &common::RX, r, &common::OneNode, &mut out);
        if offer.is_ok_and(|h| h.reply.is_some())
            && ack.is_ok_and(|h| matches!(h.lease_change, Some(LeaseChange::Bound(_))))
        {
            acks += 1;
        }
    }
    MEASURING.with(|m| m.set(false));
    assert_eq!(acks, 100, "every unknown client completes DORA");
    assert_eq!(
        ALLOCS.load(Ordering::SeqCst),
        0,
        "heap allocations on the dynamic DORA path"
    );
}
