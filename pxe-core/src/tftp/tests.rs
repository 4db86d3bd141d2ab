#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]

extern crate std;
use std::string::ToString;
use std::vec;
use std::vec::Vec;

use super::*;

fn rrq(name: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    let mut v = vec![0, 1];
    v.extend_from_slice(name.as_bytes());
    v.push(0);
    v.extend_from_slice(b"octet\0");
    for (k, val) in opts {
        v.extend_from_slice(k.as_bytes());
        v.push(0);
        v.extend_from_slice(val.as_bytes());
        v.push(0);
    }
    v
}

#[test]
fn request_parsing() {
    let b = rrq(
        "snponly.efi",
        &[
            ("blksize", "1468"),
            ("tsize", "0"),
            ("windowsize", "4"),
            ("x-unknown", "1"),
        ],
    );
    let r = parse_request(&b).unwrap();
    assert_eq!(r.filename, b"snponly.efi");
    assert_eq!(r.options.blksize, Some(1468));
    assert_eq!(r.options.tsize, Some(0));
    assert_eq!(r.options.windowsize, Some(4));
    let mut wrq = b.clone();
    wrq[1] = 2;
    assert_eq!(parse_request(&wrq), Err(RequestError::WriteRefused));
    assert_eq!(
        parse_request(b"\0\x01f\0netascii\0"),
        Err(RequestError::UnsupportedMode)
    );
    assert_eq!(
        parse_request(&rrq("f", &[("blksize", "7")])),
        Err(RequestError::BadOption)
    );
    assert_eq!(
        parse_request(&rrq("f", &[("blksize", "99999999999999999999999")])),
        Err(RequestError::BadOption)
    );
    for bad in [
        &b""[..],
        b"\0",
        b"\0\x01",
        b"\0\x01f",
        b"\0\x01f\0octet",
        b"\0\x03\0\x01",
        b"\0\x01\0octet\0",
    ] {
        assert!(parse_request(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn path_normalisation() {
    let mut buf = [0u8; 64];
    assert_eq!(normalize_path(b"a/./b\\c", &mut buf), Ok("a/b/c"));
    assert_eq!(
        normalize_path(b"../etc/passwd", &mut buf),
        Err(PathError::Traversal)
    );
    assert_eq!(
        normalize_path(b"a/../../x", &mut buf),
        Err(PathError::Traversal)
    );
    assert_eq!(
        normalize_path(b"/etc/passwd", &mut buf),
        Err(PathError::Absolute)
    );
    assert_eq!(normalize_path(b"\\x", &mut buf), Err(PathError::Absolute));
    assert_eq!(normalize_path(b"a\0b", &mut buf), Err(PathError::Nul));
    assert_eq!(
        normalize_path(&[0xff, 0xfe], &mut buf),
        Err(PathError::NotUtf8)
    );
    assert_eq!(normalize_path(b"./", &mut buf), Err(PathError::Empty));
    assert_eq!(
        normalize_path(&[b'a'; 100], &mut buf),
        Err(PathError::TooLong)
    );
}

#[test]
fn error_packets() {
    let mut out = [0u8; 64];
    let n = error_packet(ErrorCode::FileNotFound, "no such file", &mut out);
    assert_eq!(&out[..n], b"\0\x05\0\x01no such file\0");
    assert_eq!(error_packet(ErrorCode::FileNotFound, "x", &mut [0u8; 3]), 0);
}

/// A deterministic PRNG for fault schedules (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Link faults, in percent.
#[derive(Clone, Copy)]
struct Faults {
    loss: u64,
    dup: u64,
    reorder: u64,
}

/// A minimal RFC 1350/7440 client: writes in-order blocks, ACKs the last in-order block at the
/// end of each window or on a gap, and on its own timeout re-ACKs.
struct Client {
    blksize: usize,
    window: u64,
    got: Vec<u8>,
    expect: u64,
    since_ack: u64,
    done: bool,
    oack_seen: bool,
    wants_oack: bool,
}

impl Client {
    fn on_packet(&mut self, p: &[u8], out: &mut Vec<Vec<u8>>) {
        match p {
            [0, 6, ..] => {
                // OACK: read back the negotiated values, ACK 0.
                let mut it = p[2..].split(|b| *b == 0);
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    let v: usize = core::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    match k {
                        b"blksize" => self.blksize = v,
                        b"windowsize" => self.window = v as u64,
                        _ => {}
                    }
                }
                self.oack_seen = true;
                out.push(vec![0, 4, 0, 0]);
            }
            [0, 3, hi, lo, data @ ..] => {
                let n = u16::from_be_bytes([*hi, *lo]);
                if n == self.expect as u16 {
                    self.got.extend_from_slice(data);
                    self.since_ack += 1;
                    let last = data.len() < self.blksize;
                    if last {
                        self.done = true;
                    }
                    let ackn = self.expect as u16;
                    self.expect += 1;
                    if last || self.since_ack >= self.window {
                        self.since_ack = 0;
                        out.push(vec![0, 4, (ackn >> 8) as u8, ackn as u8]);
                    }
                } else if self.expect > 1 {
                    // Gap (or old duplicate): ACK the last in-order block.
                    let a = (self.expect - 1) as u16;
                    self.since_ack = 0;
                    out.push(vec![0, 4, (a >> 8) as u8, a as u8]);
                }
            }
            _ => {}
        }
    }
}

/// Runs a whole transfer over a faulty simulated link; returns (received bytes, state).
fn transfer(
    file: &[u8],
    opts: &[(&str, &str)],
    faults: Faults,
    seed: u64,
    link_alive: bool,
) -> (Vec<u8>, State) {
    let cfg = SessionConfig {
        max_blksize: 65464,
        ..SessionConfig::default()
    };
    let req_bytes = rrq("f", opts);
    let req = parse_request(&req_bytes).unwrap();
    let mut now = Instant::from_millis(0);
    let mut s = Session::new(now, &req, file.len() as u64, &cfg);
    let wants_oack = !opts.is_empty();
    let mut c = Client {
        blksize: 512,
        window: 1,
        got: Vec::new(),
        expect: 1,
        since_ack: 0,
        done: false,
        oack_seen: !wants_oack,
        wants_oack,
    };
    let mut rng = Rng(seed | 1);
    let mut to_client: Vec<Vec<u8>> = Vec::new();
    let mut to_server: Vec<Vec<u8>> = Vec::new();
    let mut out = vec![0u8; 65536];
    let mut src: &[u8] = file;
    let mut client_idle = 0u32;
    for _ in 0..5_000_000u64 {
        while let Some(n) = s.poll_transmit(now, &mut src, &mut out) {
            let pkt = out[..n].to_vec();
            if !link_alive || rng.chance(faults.loss) {
                continue;
            }
            if rng.chance(faults.dup) {
                to_client.push(pkt.clone());
            }
            if rng.chance(faults.reorder) && !to_client.is_empty() {
                to_client.insert(0, pkt);
            } else {
                to_client.push(pkt);
            }
        }
        if s.state() != State::Running {
            break;
        }
        let mut progressed = false;
        for p in core::mem::take(&mut to_client) {
            let mut acks = Vec::new();
            c.on_packet(&p, &mut acks);
            for a in acks {
                progressed = true;
                if rng.chance(faults.loss) {
                    continue;
                }
                if rng.chance(faults.dup) {
                    to_server.push(a.clone());
                }
                to_server.push(a);
            }
        }
        for a in core::mem::take(&mut to_server) {
            s.handle(now, &a);
        }
        if !progressed {
            // Nothing moving: let time pass to the session's timeout (the client's own
            // re-ACK timer fires less often).
            client_idle += 1;
            match s.poll_timeout() {
                Some(t) => {
                    now = if t > now {
                        t
                    } else {
                        now + Duration::from_millis(1)
                    }
                }
                None => now = now + Duration::from_millis(100),
            }
            s.handle_timeout(now);
            if client_idle.is_multiple_of(3) && c.expect > 1 && !c.done && link_alive {
                let a = (c.expect - 1) as u16;
                to_server.push(vec![0, 4, (a >> 8) as u8, a as u8]);
            }
            if c.wants_oack && !c.oack_seen && client_idle > 50 {
                break;
            }
        } else {
            client_idle = 0;
        }
    }
    (c.got, s.state())
}

fn file_of(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

#[test]
fn every_option_combination_completes_byte_exact_under_faults() {
    let faults = Faults {
        loss: 10,
        dup: 10,
        reorder: 10,
    };
    let mut seed = 7;
    for blksize in [512usize, 1428, 1468, 8192, 65464] {
        for window in [1u16, 4, 16, 64] {
            for tsize in [false, true] {
                for size in [
                    0usize,
                    1,
                    blksize - 1,
                    blksize,
                    blksize + 1,
                    3 * blksize,
                    20_000,
                ] {
                    let file = file_of(size);
                    let b = blksize.to_string();
                    let w = window.to_string();
                    let mut opts = vec![("blksize", b.as_str()), ("windowsize", w.as_str())];
                    if tsize {
                        opts.push(("tsize", "0"));
                    }
                    seed += 1;
                    let (got, state) = transfer(&file, &opts, faults, seed, true);
                    assert!(
                        matches!(state, State::Done { .. }),
                        "blk {blksize} win {window} size {size}: {state:?}"
                    );
                    assert_eq!(got, file, "blk {blksize} win {window} size {size}");
                }
            }
        }
    }
}

#[test]
fn plain_rfc1350_and_block_number_rollover() {
    let file = file_of(1500);
    let (got, state) = transfer(
        &file,
        &[],
        Faults {
            loss: 5,
            dup: 5,
            reorder: 0,
        },
        3,
        true,
    );
    assert_eq!(got, file);
    assert!(matches!(state, State::Done { .. }));
    // blksize 8 × 70,000 blocks: the block number wraps past 65535.
    let file = file_of(8 * 70_000 + 3);
    let (got, state) = transfer(
        &file,
        &[("blksize", "8"), ("windowsize", "16")],
        Faults {
            loss: 1,
            dup: 1,
            reorder: 1,
        },
        11,
        true,
    );
    assert_eq!(got.len(), file.len());
    assert_eq!(got, file);
    assert!(matches!(state, State::Done { .. }));
}

#[test]
fn duplicate_acks_cause_no_retransmission() {
    let file = file_of(100_000);
    let (got, state) = transfer(
        &file,
        &[("blksize", "1468")],
        Faults {
            loss: 0,
            dup: 50,
            reorder: 0,
        },
        5,
        true,
    );
    assert_eq!(got, file);
    assert_eq!(
        state,
        State::Done {
            bytes: 100_000,
            retransmits: 0
        }
    );
}

#[test]
fn dead_link_fails_cleanly() {
    let file = file_of(10_000);
    for opts in [&[][..], &[("blksize", "1468")][..]] {
        let (_, state) = transfer(
            &file,
            opts,
            Faults {
                loss: 0,
                dup: 0,
                reorder: 0,
            },
            9,
            false,
        );
        assert_eq!(state, State::Failed(Failure::Timeout), "{opts:?}");
    }
}

#[test]
fn client_error_ends_the_session_and_oack_values() {
    let req_bytes = rrq(
        "f",
        &[("blksize", "100000"), ("tsize", "0"), ("timeout", "3")],
    );
    assert!(
        parse_request(&req_bytes).is_err(),
        "blksize above 65464 is refused"
    );
    let req_bytes = rrq(
        "f",
        &[("blksize", "9000"), ("tsize", "0"), ("timeout", "3")],
    );
    let req = parse_request(&req_bytes).unwrap();
    let mut s = Session::new(Instant::ZERO, &req, 5000, &SessionConfig::default());
    assert_eq!(s.blksize(), 1468, "clamped to the configured maximum");
    let mut out = [0u8; 2048];
    let mut src: &[u8] = &[0u8; 5000];
    let n = s.poll_transmit(Instant::ZERO, &mut src, &mut out).unwrap();
    assert_eq!(
        &out[..n],
        b"\0\x06blksize\x001468\0timeout\x003\0tsize\x005000\0"
    );
    s.handle(Instant::ZERO, b"\0\x05\0\x00cancelled\0");
    assert_eq!(s.state(), State::Failed(Failure::ClientError(0)));
    assert!(s.poll_transmit(Instant::ZERO, &mut src, &mut out).is_none());
}
