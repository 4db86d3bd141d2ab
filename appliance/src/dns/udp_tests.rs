//! The UDP threads on a loopback socket: fast and ordinary answers, malformed datagrams
//! counted, a burst answered in full, a zone swap seen, and the threads end on shutdown.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{WAKE, serve};
use crate::dns::Shared;
use crate::dns::zone::{ZoneConfig, Zones};
use crate::store::{Host, HostKind};

fn zones(octet: u8, serial: u32) -> Zones {
    let cfg = ZoneConfig {
        domain: Name::from_ascii("rack1.cluster.").unwrap(),
        ttl: 300,
        server: Ipv4Addr::new(127, 0, 0, 1),
        aliases: Default::default(),
    };
    let hosts: Vec<Host> = (0..50u8)
        .map(|i| Host {
            xname: format!("x1000c0s{i}b0n0"),
            kind: HostKind::Node,
            hostname: format!("nid{:04}", u16::from(i) + 1),
            nid: Some(i64::from(i) + 1),
            role: None,
            sub_role: None,
            macs: vec![],
            ips: vec![Ipv4Addr::new(10, octet, 0, i + 1)],
        })
        .collect();
    Zones::build(&cfg, &hosts, serial)
}

fn query(name: &str, id: u16) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

fn recv(c: &UdpSocket) -> Message {
    let mut buf = [0u8; 4096];
    let n = c.recv(&mut buf).unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

fn counter(s: &Shared, rcode: &str) -> String {
    let want = format!(r#"rackboot_dns_responses_total{{transport="udp",rcode="{rcode}"}} "#);
    s.metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&want).map(str::to_owned))
        .unwrap_or_default()
}

/// One answer of the burst: its own, once, with the right address and the question's case.
fn check(m: &Message, seen: &mut [bool]) {
    let i = usize::from(m.metadata.id - 1000);
    assert!(!seen[i], "one answer per query");
    seen[i] = true;
    assert_eq!(
        m.answers[0].data,
        RData::A(A::new(10, 1, 0, (i % 50) as u8 + 1))
    );
    assert!(m.metadata.recursion_desired && m.metadata.authoritative);
    assert_eq!(
        m.queries[0].name().to_ascii(),
        format!("NID{:04}.rack1.cluster.", i % 50 + 1)
    );
}

#[test]
fn threads_answer_count_follow_the_zones_and_stop() {
    let sock =
        crate::netif::udp_socket_blocking(None, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), WAKE)
            .unwrap();
    let server = sock.local_addr().unwrap();
    let sock = Arc::new(sock);
    let shared = Arc::new(Shared::for_tests(zones(1, 1)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (sock, shared) = (sock.clone(), shared.clone());
            let (handle, stop) = (runtime.handle().clone(), stop.clone());
            let limit = Arc::new(Semaphore::new(4));
            std::thread::spawn(move || serve(sock, shared, limit, handle, stop))
        })
        .collect();

    let c = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    // A safety net for a broken server, not a timing assertion.
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.connect(server).unwrap();

    // Too short for a header: nothing. Then a question that is not there: FORMERR, same ID.
    c.send(b"\x12").unwrap();
    c.send(b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07garbage")
        .unwrap();
    let formerr = recv(&c);
    assert_eq!(
        (formerr.metadata.id, formerr.metadata.response_code),
        (0xbeef, ResponseCode::FormErr)
    );

    // Bursts larger than a batch (and well within the socket's buffer): every query answered,
    // each with its own ID and name.
    let mut seen = vec![false; 200];
    for wave in 0..4u16 {
        for i in wave * 50..(wave + 1) * 50 {
            let n = format!("NID{:04}.rack1.cluster.", i % 50 + 1);
            c.send(&query(&n, 1000 + i)).unwrap();
        }
        for _ in 0..50 {
            check(&recv(&c), &mut seen);
        }
    }
    assert!(seen.iter().all(|s| *s));
    // NXDOMAIN comes from the ordinary path.
    c.send(&query("nope.rack1.cluster.", 7)).unwrap();
    assert_eq!(recv(&c).metadata.response_code, ResponseCode::NXDomain);

    // A rebuild is seen by the next batch.
    shared.swap(Arc::new(zones(2, 2)));
    c.send(&query("nid0001.rack1.cluster.", 8)).unwrap();
    assert_eq!(recv(&c).answers[0].data, RData::A(A::new(10, 2, 0, 1)));

    assert_eq!(counter(&shared, "FORMERR"), "1");
    assert_eq!(counter(&shared, "dropped"), "1");
    assert_eq!(counter(&shared, "NXDOMAIN"), "1");
    assert_eq!(counter(&shared, "NOERROR"), "201");

    stop.cancel();
    for t in threads {
        t.join().unwrap();
    }
}
