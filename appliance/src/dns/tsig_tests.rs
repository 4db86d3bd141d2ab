//! TSIG through [`super::server::answer`]: a signed transfer verifies message by message with
//! hickory's client-side verifier; tampered, unknown-key, wrong-secret, stale and missing
//! signatures are refused as RFC 8945 says.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
use hickory_proto::rr::{Name, RecordType, TSigner};

use super::Shared;
use super::server::{Outcome, answer};
use super::tsig::{self, FUDGE, Keys};
use super::zone::{ZoneConfig, Zones};
use crate::store::{Host, HostKind};

const SECONDARY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53)), 4000);
const OTHER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 54)), 4000);

fn signer(name: &str, secret: &[u8]) -> TSigner {
    TSigner::new(
        secret.to_vec(),
        TsigAlgorithm::HmacSha256,
        Name::from_ascii(name).unwrap_or_else(|e| panic!("{e}")),
        FUDGE,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn key() -> TSigner {
    signer("xfr.rack1.", b"0123456789abcdef0123456789abcdef")
}

/// 300 hosts: a zone transfer of several messages. 192.0.2.53 must use `key()`; .54 is a
/// secondary without a key.
fn shared() -> Shared {
    let cfg = ZoneConfig {
        domain: Name::from_ascii("rack1.cluster.").unwrap_or_else(|e| panic!("{e}")),
        ttl: 300,
        server: Ipv4Addr::new(192, 0, 2, 1),
        aliases: Default::default(),
    };
    let hosts: Vec<Host> = (0..300u16)
        .map(|i| Host {
            xname: format!("x1000c0s{i}b0n0"),
            kind: HostKind::Node,
            hostname: format!("nid{i:04}"),
            nid: Some(i64::from(i)),
            role: None,
            sub_role: None,
            macs: vec![],
            ips: vec![Ipv4Addr::new(10, 1, (i / 200) as u8, (i % 200) as u8 + 1)],
        })
        .collect();
    Shared {
        zones: std::sync::RwLock::new(Arc::new(Zones::build(&cfg, &hosts, 7))),
        generation: std::sync::atomic::AtomicU64::new(0),
        secondaries: vec![Ipv4Addr::new(192, 0, 2, 53), Ipv4Addr::new(192, 0, 2, 54)],
        forwarders: vec![],
        cache: super::forward::Cache::new(4),
        tsig: Keys::from_signers(vec![(key(), vec![Ipv4Addr::new(192, 0, 2, 53)])]),
        metrics: Arc::new(crate::metrics::Metrics::new()),
    }
}

fn request(name: &str, t: RecordType) -> Message {
    let mut m = Message::query();
    m.add_query(Query::query(
        Name::from_ascii(name).unwrap_or_else(|e| panic!("{e}")),
        t,
    ));
    m
}

/// `req` signed with `s` at `time`, and its MAC.
fn signed(mut req: Message, s: &TSigner, time: u64) -> (Vec<u8>, Vec<u8>) {
    tsig::sign_request(&mut req, s, time).unwrap_or_else(|e| panic!("{e}"));
    let mac = req
        .signature()
        .map(|r| r.data.mac.clone())
        .unwrap_or_default();
    (req.to_vec().unwrap_or_else(|e| panic!("{e}")), mac)
}

fn replies(o: Outcome) -> Vec<Vec<u8>> {
    match o {
        Outcome::Reply(m) => m,
        _ => panic!("expected a reply"),
    }
}

fn decode(b: &[u8]) -> Message {
    Message::from_vec(b).unwrap_or_else(|e| panic!("{e}"))
}

/// The NOTAUTH answer's rcode and TSIG error.
fn tsig_error(b: &[u8]) -> (ResponseCode, Option<TsigError>) {
    let m = decode(b);
    (
        m.metadata.response_code,
        m.signature().and_then(|r| r.data.error),
    )
}

fn metric(s: &Shared, label: &str) -> bool {
    s.metrics
        .encode()
        .lines()
        .any(|l| l.starts_with("rackboot_dns_responses_total") && l.contains(label))
}

#[test]
fn a_signed_transfer_is_signed_message_by_message_and_verifies_as_a_chain() {
    let s = shared();
    let now = tsig::now();
    let (req, mac) = signed(request("rack1.cluster.", RecordType::AXFR), &key(), now);
    let msgs = replies(answer(&s, &req, SECONDARY, true));
    assert!(msgs.len() > 1, "300 hosts take more than one message");
    let mut prev = mac;
    let mut records = 0;
    for (i, m) in msgs.iter().enumerate() {
        let (next, time, _) = key()
            .verify_message_byte(m, Some(&prev), i == 0)
            .unwrap_or_else(|e| panic!("message {i}: {e}"));
        assert_eq!(time, now);
        prev = next;
        records += decode(m).answers.len();
    }
    assert_eq!(
        records,
        2 * 300 + 5,
        "hosts by xname and hostname, NS, ns, rackboot, and the SOA twice"
    );
    // A message out of order breaks the chain.
    assert!(
        key()
            .verify_message_byte(&msgs[1], Some(&msgs[0][..32]), false)
            .is_err()
    );
}

#[test]
fn a_signed_query_gets_a_signed_answer_and_notify_verifies() {
    let s = shared();
    let now = tsig::now();
    let (req, mac) = signed(
        request("nid0001.rack1.cluster.", RecordType::A),
        &key(),
        now,
    );
    let msgs = replies(answer(&s, &req, OTHER, false));
    assert_eq!(msgs.len(), 1);
    key()
        .verify_message_byte(&msgs[0], Some(&mac), true)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(decode(&msgs[0]).answers.len(), 1);
    // What we send as NOTIFY is what a secondary verifies as a signed request.
    let mut notify = Message::query();
    notify.metadata.op_code = hickory_proto::op::OpCode::Notify;
    let (bytes, _) = signed(notify, &key(), now);
    let parsed = decode(&bytes);
    assert!(matches!(s.tsig.verify(&bytes, &parsed, now), Ok(Some(_))));
}

#[test]
fn a_tampered_mac_is_badsig_and_unsigned() {
    let s = shared();
    let (mut req, _) = signed(
        request("rack1.cluster.", RecordType::AXFR),
        &key(),
        tsig::now(),
    );
    // The MAC is the TSIG record's last 32 bytes before original ID, error and other length.
    let i = req.len() - 6 - 5;
    req[i] ^= 0x40;
    let msgs = replies(answer(&s, &req, SECONDARY, true));
    assert_eq!(
        tsig_error(&msgs[0]),
        (ResponseCode::NotAuth, Some(TsigError::BadSig))
    );
    assert!(decode(&msgs[0]).answers.is_empty());
    assert!(metric(&s, "BADSIG"));
}

#[test]
fn an_unknown_key_is_badkey_and_a_wrong_secret_badsig() {
    let s = shared();
    let now = tsig::now();
    let other = signer("someone.else.", b"0123456789abcdef0123456789abcdef");
    let (req, _) = signed(request("rack1.cluster.", RecordType::AXFR), &other, now);
    let msgs = replies(answer(&s, &req, SECONDARY, true));
    assert_eq!(
        tsig_error(&msgs[0]),
        (ResponseCode::NotAuth, Some(TsigError::BadKey))
    );
    let forged = signer("xfr.rack1.", b"not the secret, but as long as it");
    let (req, _) = signed(request("rack1.cluster.", RecordType::AXFR), &forged, now);
    let msgs = replies(answer(&s, &req, SECONDARY, true));
    assert_eq!(
        tsig_error(&msgs[0]),
        (ResponseCode::NotAuth, Some(TsigError::BadSig))
    );
    assert!(metric(&s, "BADKEY") && metric(&s, "BADSIG"));
}

#[test]
fn a_stale_signature_is_badtime_signed_with_our_clock() {
    let s = shared();
    let now = tsig::now();
    let then = now - u64::from(FUDGE) - 60;
    let (req, mac) = signed(request("rack1.cluster.", RecordType::AXFR), &key(), then);
    let msgs = replies(answer(&s, &req, SECONDARY, true));
    assert_eq!(
        tsig_error(&msgs[0]),
        (ResponseCode::NotAuth, Some(TsigError::BadTime))
    );
    // Signed over the request's MAC, with the request's time; ours is in Other Data.
    key()
        .verify_message_byte(&msgs[0], Some(&mac), true)
        .unwrap_or_else(|e| panic!("{e}"));
    let m = decode(&msgs[0]);
    let t = m
        .signature()
        .map(|r| r.data.clone())
        .unwrap_or_else(|| panic!("no TSIG"));
    assert_eq!(t.time, then);
    let mut ours = [0u8; 8];
    ours[2..].copy_from_slice(&t.other);
    assert!(u64::from_be_bytes(ours) >= now);
    assert!(metric(&s, "BADTIME"));
}

#[test]
fn a_keyed_secondary_must_sign_and_others_transfer_unsigned() {
    let s = shared();
    let axfr = request("rack1.cluster.", RecordType::AXFR)
        .to_vec()
        .unwrap_or_else(|e| panic!("{e}"));
    let msgs = replies(answer(&s, &axfr, SECONDARY, true));
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        decode(&msgs[0]).metadata.response_code,
        ResponseCode::Refused
    );
    assert!(metric(&s, "tsig_required"));
    let msgs = replies(answer(&s, &axfr, OTHER, true));
    assert!(
        msgs.len() > 1,
        "a secondary without a key transfers unsigned"
    );
}

#[test]
fn mutated_signed_requests_are_refused_or_dropped_never_a_panic() {
    let s = shared();
    let (req, _) = signed(
        request("rack1.cluster.", RecordType::SOA),
        &key(),
        tsig::now(),
    );
    for len in 0..req.len() {
        let _ = answer(&s, &req[..len], SECONDARY, false);
    }
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..5_000 {
        let mut b = req.clone();
        for _ in 0..2 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % b.len();
            b[i] = (x >> 32) as u8;
        }
        if let Outcome::Reply(m) = answer(&s, &b, SECONDARY, x & 1 == 0) {
            // Whatever came back parses; a request still signed gets data only when it
            // verified, and then the answer is signed.
            let r = decode(&m[0]);
            let still_signed = Message::from_vec(&b).is_ok_and(|q| q.signature().is_some());
            if still_signed && !r.answers.is_empty() {
                assert!(r.signature().is_some_and(|t| t.data.error.is_none()));
            }
        }
    }
}
