//! DISCOVER → OFFER: decode, decide (inventory + boot policy), encode. Target ≥ 1,000,000/s.

#![allow(clippy::indexing_slicing, clippy::unwrap_used)]

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pxe_core::Instant;

fn discover_offer(c: &mut Criterion) {
    let mut s = common::server();
    let pkt = common::discover();
    let mut out = [0u8; 1500];
    let mut g = c.benchmark_group("dhcp");
    g.throughput(Throughput::Elements(1));
    g.bench_function("discover_offer_static", |b| {
        b.iter(|| {
            let h = s.handle(
                Instant::from_secs(1),
                &common::RX,
                std::hint::black_box(&pkt),
                &common::OneNode,
                &mut out,
            );
            std::hint::black_box(h.ok().and_then(|h| h.reply).map(|t| t.len))
        })
    });
    let mut dynamic = pkt.clone();
    dynamic[33] = 0x77;
    g.bench_function("discover_offer_pool", |b| {
        b.iter(|| {
            let h = s.handle(
                Instant::from_secs(1),
                &common::RX,
                std::hint::black_box(&dynamic),
                &common::OneNode,
                &mut out,
            );
            std::hint::black_box(h.ok().and_then(|h| h.reply).map(|t| t.len))
        })
    });
    g.finish();
}

criterion_group!(benches, discover_offer);
criterion_main!(benches);
