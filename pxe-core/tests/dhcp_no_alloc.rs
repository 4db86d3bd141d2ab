//! The DISCOVER → OFFER path for an inventory node allocates nothing on the heap.
#![allow(clippy::unwrap_used)]

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
