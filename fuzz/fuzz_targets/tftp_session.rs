//! Arbitrary requests, client datagrams and clock jumps never panic a TFTP session, and the
//! session always ends (no datagram larger than it announced).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pxe_core::tftp::{self, Session, SessionConfig, State};
use pxe_core::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let mut path = [0u8; 64];
    let _ = tftp::normalize_path(data, &mut path);
    let Some((&split, rest)) = data.split_first() else { return };
    let (req_bytes, events) = rest.split_at((split as usize).min(rest.len()));
    let Ok(req) = tftp::parse_request(req_bytes) else { return };
    let file = vec![0xa5u8; 5000];
    let mut src: &[u8] = &file;
    let mut s = Session::new(Instant::ZERO, &req, file.len() as u64, &SessionConfig::default());
    let mut out = vec![0u8; s.max_datagram()];
    let mut now = Instant::ZERO;
    for ev in events.chunks(5) {
        while let Some(n) = s.poll_transmit(now, &mut src, &mut out) {
            assert!(n <= out.len());
        }
        match ev {
            [0, rest @ ..] => s.handle(now, rest),
            [1, ms, ..] => {
                now = now + Duration::from_millis(u64::from(*ms) * 50);
                s.handle_timeout(now);
            }
            [_, a, b, ..] => s.handle(now, &[0, 4, *a, *b]),
            _ => {}
        }
        if s.state() != State::Running {
            break;
        }
    }
});
