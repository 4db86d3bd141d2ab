//! TFTP per-block cost: a session streams a 64 MiB in-memory file into a discarding sink,
//! ACKed at every window end as a client would. Target ≥ 1 GB/s of blocks.

#![allow(clippy::indexing_slicing, clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pxe_core::Instant;
use pxe_core::tftp::{Session, SessionConfig, State, parse_request};

const SIZE: usize = 64 << 20;

fn stream(c: &mut Criterion) {
    let file = vec![0x5au8; SIZE];
    let mut g = c.benchmark_group("tftp");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sample_size(10);
    for (blk, win) in [(1468u16, 16u16), (8192, 16)] {
        let mut rrq = b"\0\x01f\0octet\0blksize\0".to_vec();
        rrq.extend_from_slice(blk.to_string().as_bytes());
        rrq.extend_from_slice(b"\0windowsize\0");
        rrq.extend_from_slice(win.to_string().as_bytes());
        rrq.push(0);
        g.bench_function(format!("stream_blk{blk}_win{win}"), |b| {
            b.iter(|| {
                let req = parse_request(&rrq).unwrap_or_else(|_| unreachable!());
                let cfg = SessionConfig {
                    max_blksize: 65464,
                    ..SessionConfig::default()
                };
                let mut s = Session::new(Instant::ZERO, &req, SIZE as u64, &cfg);
                let mut out = vec![0u8; s.max_datagram()];
                let mut src: &[u8] = &file;
                s.handle(Instant::ZERO, b"\0\x04\0\0");
                let _ = s.poll_transmit(Instant::ZERO, &mut src, &mut out);
                s.handle(Instant::ZERO, b"\0\x04\0\0");
                let mut last = 0u16;
                while s.state() == State::Running {
                    while let Some(n) = s.poll_transmit(Instant::ZERO, &mut src, &mut out) {
                        std::hint::black_box(&out[..n]);
                        last = u16::from_be_bytes([out[2], out[3]]);
                    }
                    let [a, b2] = last.to_be_bytes();
                    s.handle(Instant::ZERO, &[0, 4, a, b2]);
                }
                assert!(matches!(s.state(), State::Done { .. }));
            })
        });
    }
    g.finish();
}

criterion_group!(benches, stream);
criterion_main!(benches);
