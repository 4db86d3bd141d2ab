//! The fast path against the ordinary one: the same answers (parsed and compared) for every
//! name and common type, in any letter case, with and without EDNS and RD; the new data after
//! a rebuild; and nothing it must leave to [`server::answer`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{DNSClass, Name, RData, RecordType, TSigner};

use super::uncompressed;
use crate::dns::Shared;
use crate::dns::server::{Outcome, answer};
use crate::dns::zone::{ZoneConfig, Zones};
use crate::store::{Host, HostKind};

const SRC: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)), 5353);

fn cfg() -> ZoneConfig {
    ZoneConfig {
        domain: Name::from_ascii("rack1.cluster.").unwrap_or_else(|e| panic!("{e}")),
        ttl: 300,
        server: Ipv4Addr::new(192, 0, 2, 1),
        aliases: [
            ("head".to_owned(), "nid0001".to_owned()),
            ("www".to_owned(), "www.example.com.".to_owned()),
        ]
        .into(),
    }
}

/// 40 nodes, every fifth with two addresses, one whose hostname is its xname.
fn hosts(last_octet_base: u8) -> Vec<Host> {
    (0..40u8)
        .map(|i| Host {
            xname: format!("x1000c0s{i}b0n0"),
            kind: HostKind::Node,
            hostname: if i == 7 {
                format!("x1000c0s{i}b0n0")
            } else {
                format!("nid{:04}", u16::from(i) + 1)
            },
            nid: Some(i64::from(i) + 1),
            role: None,
            sub_role: None,
            macs: vec![],
            ips: if i % 5 == 0 {
                vec![
                    Ipv4Addr::new(10, 1, 0, last_octet_base + i),
                    Ipv4Addr::new(10, 2, 0, last_octet_base + i),
                ]
            } else {
                vec![Ipv4Addr::new(10, 1, 0, last_octet_base + i)]
            },
        })
        .collect()
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn request(qname: &str, t: RecordType, id: u16, rd: bool, edns: bool) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = rd;
    m.add_query(Query::query(name(qname), t));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        e.set_dnssec_ok(id.is_multiple_of(2));
        m.set_edns(e);
    }
    m.to_vec().unwrap_or_else(|e| panic!("{e}"))
}

fn decode(b: &[u8]) -> Message {
    Message::from_vec(b).unwrap_or_else(|e| panic!("{e}"))
}

fn slow(s: &Shared, req: &[u8]) -> Option<Message> {
    match answer(s, req, SRC, false) {
        Outcome::Reply(m) if m.len() == 1 => Some(decode(&m[0])),
        _ => None,
    }
}

/// The two answers mean the same (names compare without regard to case).
fn assert_same(fast: &Message, slow: &Message, what: &str) {
    assert_eq!(fast.metadata, slow.metadata, "{what}");
    assert_eq!(fast.queries, slow.queries, "{what}");
    assert_eq!(fast.answers, slow.answers, "{what}");
    assert_eq!(fast.authorities, slow.authorities, "{what}");
    assert_eq!(fast.additionals, slow.additionals, "{what}");
    assert_eq!(fast.edns, slow.edns, "{what}");
    assert!(fast.signature().is_none(), "{what}");
}

/// Upper case, lower case, and every other letter flipped (0x20 randomisation).
fn cases(n: &str) -> [String; 3] {
    let mixed = n
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    [n.to_ascii_lowercase(), n.to_ascii_uppercase(), mixed]
}

#[test]
fn fast_answers_mean_what_the_ordinary_path_answers() {
    let zones = Zones::build(&cfg(), &hosts(10), 3);
    let names: Vec<String> = zones.names().map(|(n, _)| n.to_string()).collect();
    let table_len = zones.fast.len();
    let s = Shared::for_tests(zones);
    let zones = s.zones();
    let mut out = Vec::new();
    let (mut fast_count, mut id) = (0usize, 0u16);
    for n in &names {
        for t in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::PTR,
            RecordType::SOA,
            RecordType::NS,
            RecordType::CNAME,
            RecordType::MX,
            RecordType::TXT,
        ] {
            for q in cases(n) {
                for (rd, edns) in [(false, false), (true, false), (false, true), (true, true)] {
                    id = id.wrapping_add(7919);
                    let req = request(&q, t, id, rd, edns);
                    let what = format!("{q} {t} rd={rd} edns={edns}");
                    let expected = slow(&s, &req).unwrap_or_else(|| panic!("{what}: no answer"));
                    if !zones.fast.answer(&req, &mut out) {
                        continue;
                    }
                    fast_count += 1;
                    let got = decode(&out);
                    assert_same(&got, &expected, &what);
                    // The question exactly as sent, letter case included.
                    assert_eq!(got.queries[0].name().to_ascii(), q, "{what}");
                    assert_eq!(&out[12..12 + q.len() + 1], &req[12..12 + q.len() + 1]);
                }
            }
        }
        // Every name answers its A query (or NODATA for it) on the fast path.
        let req = request(n, RecordType::A, 1, true, false);
        assert!(zones.fast.answer(&req, &mut out), "{n} A");
    }
    // Types no name holds are left to the ordinary path.
    let mx = request("nid0002.rack1.cluster.", RecordType::MX, 9, true, false);
    assert!(!zones.fast.answer(&mx, &mut out));
    assert!(
        fast_count > names.len() * 4 * 3,
        "{fast_count} fast answers"
    );
    assert!(table_len >= names.len() * 2, "{table_len} entries");
}

#[test]
fn a_rebuild_changes_the_fast_answers() {
    let before = Zones::build(&cfg(), &hosts(10), 3);
    let after = Zones::build(&cfg(), &hosts(100)[1..], 4);
    let s = Shared::for_tests(before);
    let mut out = Vec::new();
    let a = |z: &Zones, n: &str, out: &mut Vec<u8>| {
        let req = request(n, RecordType::A, 42, true, true);
        z.fast.answer(&req, out).then(|| decode(out))
    };
    let m =
        a(&s.zones(), "nid0002.rack1.cluster.", &mut out).unwrap_or_else(|| panic!("no answer"));
    assert_eq!(m.answers[0].data, RData::A(A::new(10, 1, 0, 11)));
    let old_generation = s.generation.load(std::sync::atomic::Ordering::Acquire);
    s.swap(std::sync::Arc::new(after));
    assert_ne!(
        s.generation.load(std::sync::atomic::Ordering::Acquire),
        old_generation
    );
    let zones = s.zones();
    let m = a(&zones, "nid0002.rack1.cluster.", &mut out).unwrap_or_else(|| panic!("no answer"));
    assert_eq!(m.answers[0].data, RData::A(A::new(10, 1, 0, 101)));
    let soa = request("rack1.cluster.", RecordType::SOA, 5, false, false);
    assert!(zones.fast.answer(&soa, &mut out));
    assert!(matches!(&decode(&out).answers[0].data, RData::SOA(x) if x.serial == 4));
    // nid0001 left the inventory: not on the fast path, NXDOMAIN on the ordinary one.
    let gone = request("nid0001.rack1.cluster.", RecordType::A, 6, false, false);
    assert!(!zones.fast.answer(&gone, &mut out));
    let nx = slow(&s, &gone).unwrap_or_else(|| panic!("no answer"));
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn what_the_fast_path_must_leave_to_the_ordinary_one() {
    let z = Zones::build(&cfg(), &hosts(10), 3);
    let mut out = Vec::new();
    let n = "nid0002.rack1.cluster.";
    let base = request(n, RecordType::A, 1, true, false);
    assert!(z.fast.answer(&base, &mut out));
    let msg = |f: &dyn Fn(&mut Message)| {
        let mut m = decode(&base);
        f(&mut m);
        m.to_vec().unwrap_or_else(|e| panic!("{e}"))
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a response",
            msg(&|m| m.metadata.message_type = MessageType::Response),
        ),
        ("NOTIFY", msg(&|m| m.metadata.op_code = OpCode::Notify)),
        (
            "two questions",
            msg(&|m| {
                m.add_query(Query::query(name(n), RecordType::AAAA));
            }),
        ),
        (
            "class CH",
            msg(&|m| {
                let mut q = Query::query(name(n), RecordType::A);
                q.set_query_class(DNSClass::CH);
                m.queries = vec![q];
            }),
        ),
        (
            "an answer record",
            msg(&|m| {
                m.add_answer(hickory_proto::rr::Record::from_rdata(
                    name(n),
                    1,
                    RData::A(A::new(1, 2, 3, 4)),
                ));
            }),
        ),
        (
            "EDNS version 1",
            msg(&|m| {
                let mut e = Edns::new();
                e.set_version(1);
                m.set_edns(e);
            }),
        ),
        (
            "NXDOMAIN",
            request("nope.rack1.cluster.", RecordType::A, 1, true, false),
        ),
        (
            "not our zone",
            request("example.com.", RecordType::A, 1, true, false),
        ),
        (
            "AXFR",
            request("rack1.cluster.", RecordType::AXFR, 1, false, false),
        ),
        ("trailing bytes", {
            let mut b = base.clone();
            b.push(0);
            b
        }),
    ];
    for (what, req) in cases {
        assert!(!z.fast.answer(&req, &mut out), "{what}");
    }
    // A TSIG-signed query is verified and signed by the ordinary path.
    let key = TSigner::new(
        b"0123456789abcdef0123456789abcdef".to_vec(),
        TsigAlgorithm::HmacSha256,
        name("k.rack1."),
        300,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut signed = decode(&base);
    crate::dns::tsig::sign_request(&mut signed, &key, crate::dns::tsig::now())
        .unwrap_or_else(|e| panic!("{e}"));
    let signed = signed.to_vec().unwrap_or_else(|e| panic!("{e}"));
    assert!(!z.fast.answer(&signed, &mut out), "TSIG");
    // Compression pointers are never copied back as a name.
    assert!(uncompressed(b"\x03nid\x00"));
    assert!(!uncompressed(b"\x03nid\xc0\x0c"));
    assert!(!uncompressed(b"\x03nid\x00\x00"));
    assert!(!uncompressed(b"\x05nid\x00"));
}

#[test]
fn mutated_queries_are_answered_as_the_ordinary_path_would_or_left_to_it() {
    let s = Shared::for_tests(Zones::build(&cfg(), &hosts(10), 3));
    let zones = s.zones();
    let mut out = Vec::new();
    let q = request("NiD0002.rack1.cluster.", RecordType::A, 0x1234, true, true);
    for len in 0..q.len() {
        assert!(!zones.fast.answer(&q[..len], &mut out), "prefix {len}");
    }
    // Deterministic pseudo-random mutations (xorshift).
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut taken = 0;
    for _ in 0..20_000 {
        let mut b = q.clone();
        for _ in 0..2 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % b.len();
            b[i] = (x >> 32) as u8;
        }
        if zones.fast.answer(&b, &mut out) {
            taken += 1;
            let expected = slow(&s, &b).unwrap_or_else(|| panic!("{b:02x?}: no answer"));
            assert_same(&decode(&out), &expected, &format!("{b:02x?}"));
        }
    }
    assert!(
        taken > 0,
        "some mutations (ID, flags, case) stay on the fast path"
    );
}
