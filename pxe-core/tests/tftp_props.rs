//! Property tests for the TFTP codec and sessions: arbitrary bytes never panic, requests round
//! trip, and a session fed arbitrary client datagrams and clock jumps always ends.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use pxe_core::tftp::{Session, SessionConfig, State, normalize_path, parse_request};
use pxe_core::{Duration, Instant};

fn rrq(name: &[u8], opts: &[(String, String)]) -> Vec<u8> {
    let mut v = vec![0, 1];
    v.extend_from_slice(name);
    v.extend_from_slice(b"\0octet\0");
    for (k, val) in opts {
        v.extend_from_slice(k.as_bytes());
        v.push(0);
        v.extend_from_slice(val.as_bytes());
        v.push(0);
    }
    v
}

proptest! {
    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_request(&bytes);
        let mut out = [0u8; 64];
        let _ = normalize_path(&bytes, &mut out);
    }

    #[test]
    fn request_round_trip(
        name in "[a-zA-Z0-9_./-]{1,40}",
        blksize in proptest::option::of(8u16..=65464),
        timeout in proptest::option::of(1u8..=255),
        tsize in proptest::option::of(any::<u64>()),
        window in proptest::option::of(1u16..=65535),
    ) {
        let mut opts = Vec::new();
        if let Some(b) = blksize { opts.push(("blksize".to_string(), b.to_string())); }
        if let Some(t) = timeout { opts.push(("TIMEOUT".to_string(), t.to_string())); }
        if let Some(t) = tsize { opts.push(("tsize".to_string(), t.to_string())); }
        if let Some(w) = window { opts.push(("windowsize".to_string(), w.to_string())); }
        opts.push(("x-unknown".to_string(), "1".to_string()));
        let bytes = rrq(name.as_bytes(), &opts);
        let req = parse_request(&bytes).unwrap();
        prop_assert_eq!(req.filename, name.as_bytes());
        prop_assert_eq!(req.options.blksize, blksize);
        prop_assert_eq!(req.options.timeout, timeout);
        prop_assert_eq!(req.options.tsize, tsize);
        prop_assert_eq!(req.options.windowsize, window);
    }

    #[test]
    fn session_survives_arbitrary_client_datagrams(
        blksize in proptest::option::of(8u16..=2000),
        window in proptest::option::of(1u16..=64),
        size in 0usize..5000,
        events in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..8), 0u64..5000), 0..200),
    ) {
        let mut opts = Vec::new();
        if let Some(b) = blksize { opts.push(("blksize".to_string(), b.to_string())); }
        if let Some(w) = window { opts.push(("windowsize".to_string(), w.to_string())); }
        let bytes = rrq(b"f", &opts);
        let req = parse_request(&bytes).unwrap();
        let file = vec![7u8; size];
        let mut src: &[u8] = &file;
        let cfg = SessionConfig { max_retries: 3, ..SessionConfig::default() };
        let mut s = Session::new(Instant::ZERO, &req, size as u64, &cfg);
        let mut out = vec![0u8; s.max_datagram()];
        let mut now = Instant::ZERO;
        for (is_ack, payload, ms) in events {
            let mut sent = 0;
            while let Some(n) = s.poll_transmit(now, &mut src, &mut out) {
                prop_assert!(n <= out.len());
                sent += 1;
                prop_assert!(sent <= 65, "a window never exceeds 64 blocks + OACK");
            }
            if is_ack && payload.len() >= 2 {
                s.handle(now, &[0, 4, payload[0], payload[1]]);
            } else {
                s.handle(now, &payload);
            }
            now = now + Duration::from_millis(ms);
            s.handle_timeout(now);
        }
        // With no more client input the session must end by timeout, not hang.
        for _ in 0..1000 {
            if s.state() != State::Running { break; }
            while s.poll_transmit(now, &mut src, &mut out).is_some() {}
            match s.poll_timeout() {
                Some(t) => { now = t.max(now); s.handle_timeout(now); }
                None => break,
            }
        }
        prop_assert!(s.state() != State::Running);
    }
}
