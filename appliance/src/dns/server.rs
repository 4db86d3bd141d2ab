//! The TCP listener (one task per connection, capped) and [`answer`], which turns one request
//! into its response messages: the whole answer for TCP, and for UDP every request the fast
//! path (`fast.rs`, called by the UDP threads in `udp.rs`) does not take. The wire format is
//! hickory-proto's; nothing here parses or writes DNS bytes by hand.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{LowerName, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::tsig::Signing;
use super::zone::{ZoneInfo, Zones};

/// Largest UDP answer we send with EDNS (the DNS flag day 2020 size, no fragmentation).
const EDNS_UDP_MAX: u16 = 1232;
/// Records per AXFR message (well under 64 KiB for A/PTR/CNAME records).
const AXFR_CHUNK: usize = 200;
/// A TCP connection idle this long is closed (RFC 7766 §6.2.3 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What to do with one request.
pub enum Outcome {
    /// Send these messages (one for a query, several for a zone transfer).
    Reply(Vec<Vec<u8>>),
    /// Not ours: ask the forwarders.
    Forward(Message),
    /// Nothing to send (not a request, or too short to answer).
    Drop,
}

/// Answers one request from `src`.
pub fn answer(shared: &Shared, bytes: &[u8], src: SocketAddr, tcp: bool) -> Outcome {
    let transport = if tcp { "tcp" } else { "udp" };
    let Some(&[hi, lo]) = bytes.get(..2) else {
        shared.metrics.dns_response(transport, "dropped");
        return Outcome::Drop;
    };
    let id = u16::from_be_bytes([hi, lo]);
    let req = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(err) => {
            tracing::debug!(peer = %src, error = %err, "DNS: malformed request");
            if bytes.len() < 12 || bytes.get(2).is_some_and(|b| b & 0x80 != 0) {
                // Too short for a header, or a response: never answer (no reflection).
                shared.metrics.dns_response(transport, "dropped");
                return Outcome::Drop;
            }
            return error(shared, transport, id, OpCode::Query, ResponseCode::FormErr);
        }
    };
    if req.metadata.message_type != MessageType::Query {
        shared.metrics.dns_response(transport, "dropped");
        return Outcome::Drop;
    }
    if req.signature().is_none() {
        return answer_request(shared, req, src, tcp, None);
    }
    // Signed (RFC 8945): verified first; the answer, whatever it is, is signed.
    let now = super::tsig::now();
    let signing = match shared.tsig.verify(bytes, &req, now) {
        Ok(s) => s,
        Err(fail) => {
            tracing::warn!(peer = %src, key = %fail.key, error = fail.label(), "DNS: TSIG verification failed");
            let mut resp = response(&req);
            resp.metadata.response_code = ResponseCode::NotAuth;
            shared.metrics.dns_response(transport, fail.label());
            return match fail.finish(&mut resp, now) {
                Ok(b) => Outcome::Reply(vec![b]),
                Err(_) => Outcome::Drop,
            };
        }
    };
    let Some(signing) = signing else {
        return Outcome::Drop;
    };
    let op = req.metadata.op_code;
    let msgs = match answer_request(shared, req, src, tcp, Some(&signing)) {
        Outcome::Reply(m) => m,
        // A signed request is answered here, never by a forwarder that cannot sign it.
        Outcome::Forward(req) => match error_for(shared, transport, &req, ResponseCode::Refused) {
            Outcome::Reply(m) => m,
            _ => return Outcome::Drop,
        },
        Outcome::Drop => return Outcome::Drop,
    };
    match signing.sign_all(msgs, now) {
        Ok(m) => Outcome::Reply(m),
        Err(err) => {
            tracing::warn!(error = %err, "DNS: cannot sign an answer");
            error(shared, transport, id, op, ResponseCode::ServFail)
        }
    }
}

/// Answers a parsed request (its TSIG, if any, verified as `signed`).
fn answer_request(
    shared: &Shared,
    req: Message,
    src: SocketAddr,
    tcp: bool,
    signed: Option<&Signing>,
) -> Outcome {
    let transport = if tcp { "tcp" } else { "udp" };
    let id = req.metadata.id;
    let op = req.metadata.op_code;
    if op != OpCode::Query {
        return error(shared, transport, id, op, ResponseCode::NotImp);
    }
    let [query] = req.queries.as_slice() else {
        return error(shared, transport, id, op, ResponseCode::FormErr);
    };
    let zones = shared.zones();
    let name = LowerName::from(query.name());
    let Some(zone) = zones.zone_for(&name) else {
        if !shared.forwarders.is_empty() && req.metadata.recursion_desired {
            return Outcome::Forward(req);
        }
        return error_for(shared, transport, &req, ResponseCode::Refused);
    };
    let qtype = query.query_type();
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        let allowed = match src.ip() {
            IpAddr::V4(ip) => shared.secondaries.contains(&ip),
            IpAddr::V6(_) => false,
        };
        if !allowed || zone.origin != name {
            tracing::info!(peer = %src, zone = %name, "DNS: zone transfer refused (not in dns.secondaries)");
            return error_for(shared, transport, &req, ResponseCode::Refused);
        }
        let required = match src.ip() {
            IpAddr::V4(ip) => shared.tsig.for_peer(ip),
            IpAddr::V6(_) => None,
        };
        if let Some(key) = required
            && signed.is_none_or(|s| s.key() != key.signer_name())
        {
            tracing::warn!(peer = %src, zone = %name, key = %key.signer_name(), "DNS: zone transfer refused (not signed with the secondary's TSIG key)");
            shared.metrics.dns_response(transport, "tsig_required");
            let mut resp = response(&req);
            resp.metadata.response_code = ResponseCode::Refused;
            return match resp.to_vec() {
                Ok(b) => Outcome::Reply(vec![b]),
                Err(_) => Outcome::Drop,
            };
        }
        if !tcp {
            // RFC 5936 §4.2: AXFR is TCP only; IXFR over UDP may answer with TC to move it.
            let mut resp = response(&req);
            resp.metadata.truncation = true;
            return reply(shared, transport, &resp, ResponseCode::NoError);
        }
        // IXFR is answered with the whole zone (RFC 1995 §4 allows it): we keep no history.
        let mut out = Vec::new();
        for chunk in zone.transfer.chunks(AXFR_CHUNK) {
            let mut resp = response(&req);
            resp.metadata.authoritative = true;
            resp.answers = chunk.to_vec();
            match resp.to_vec() {
                Ok(b) => out.push(b),
                Err(_) => return error_for(shared, transport, &req, ResponseCode::ServFail),
            }
        }
        shared.metrics.dns_response(transport, "axfr");
        tracing::info!(peer = %src, zone = %name, serial = zones.serial, "DNS: zone transferred");
        return Outcome::Reply(out);
    }
    let (resp, rcode) = zone_answer(&zones, zone, &req, &name, qtype);
    let limit = match (tcp, req.edns.is_some()) {
        (true, _) => usize::MAX,
        (false, true) => usize::from(req.max_payload().min(EDNS_UDP_MAX)),
        (false, false) => 512,
    };
    // Encoded once: the hot path (one A query over UDP) allocates no second buffer.
    match resp.to_vec() {
        Ok(b) if b.len() <= limit => {
            shared.metrics.dns_response(transport, rcode_label(rcode));
            Outcome::Reply(vec![b])
        }
        // RFC 1035 §4.2.1 / RFC 7766: too big for UDP → TC, the client asks again over TCP.
        Ok(_) => reply(shared, transport, &resp.truncate(), rcode),
        Err(_) => reply(shared, transport, &resp, rcode),
    }
}

/// The authoritative answer to `req`, whose question is `name` (lowercased) and `qtype` in
/// `zone`, before any size limit. The UDP fast path (`fast.rs`) pre-encodes its answers with
/// this same function.
pub fn zone_answer(
    zones: &Zones,
    zone: &ZoneInfo,
    req: &Message,
    name: &LowerName,
    qtype: RecordType,
) -> (Message, ResponseCode) {
    let found = zones.lookup(zone, name, qtype);
    let mut resp = response(req);
    resp.metadata.authoritative = true;
    let rcode = if found.nxdomain {
        ResponseCode::NXDomain
    } else {
        ResponseCode::NoError
    };
    resp.metadata.response_code = rcode;
    resp.answers = found.answers;
    resp.authorities = found.authority;
    (resp, rcode)
}

/// A response skeleton for `req`: same ID, opcode, RD, question; EDNS when the request had it.
pub fn response(req: &Message) -> Message {
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.add_queries(req.queries.iter().cloned());
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_UDP_MAX);
        resp.set_edns(e);
    }
    resp
}

fn reply(shared: &Shared, transport: &'static str, resp: &Message, rcode: ResponseCode) -> Outcome {
    match resp.to_vec() {
        Ok(b) => {
            shared.metrics.dns_response(transport, rcode_label(rcode));
            Outcome::Reply(vec![b])
        }
        Err(err) => {
            tracing::warn!(error = %err, "DNS: cannot encode a response");
            error(
                shared,
                transport,
                resp.metadata.id,
                resp.metadata.op_code,
                ResponseCode::ServFail,
            )
        }
    }
}

fn error_for(
    shared: &Shared,
    transport: &'static str,
    req: &Message,
    rcode: ResponseCode,
) -> Outcome {
    let mut resp = response(req);
    resp.metadata.response_code = rcode;
    reply(shared, transport, &resp, rcode)
}

fn error(
    shared: &Shared,
    transport: &'static str,
    id: u16,
    op: OpCode,
    rcode: ResponseCode,
) -> Outcome {
    let resp = Message::error_msg(id, op, rcode);
    shared.metrics.dns_response(transport, rcode_label(rcode));
    match resp.to_vec() {
        Ok(b) => Outcome::Reply(vec![b]),
        Err(_) => Outcome::Drop,
    }
}

/// The `rcode` label of `rackboot_dns_responses_total`.
pub fn rcode_label(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        _ => "other",
    }
}

/// Accepts TCP connections (at most `limit` at once) until shutdown.
pub async fn tcp_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, src) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(err) => {
                    tracing::debug!(error = %err, "DNS: TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::debug!(peer = %src, "DNS: too many TCP connections; closing one");
            continue;
        };
        let (shared, stop) = (shared.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tcp_conn(stream, src, &shared) => {}
            }
            drop(permit);
        });
    }
}

/// RFC 7766: two-byte length-prefixed messages, several per connection, until idle.
async fn tcp_conn(mut stream: tokio::net::TcpStream, src: SocketAddr, shared: &Shared) {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut msg)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let out = match answer(shared, &msg, src, true) {
            Outcome::Reply(m) => m,
            Outcome::Forward(req) => super::forward::resolve(shared, &req, true)
                .await
                .into_iter()
                .collect(),
            Outcome::Drop => Vec::new(),
        };
        for m in out {
            let Ok(n) = u16::try_from(m.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(m.len() + 2);
            framed.extend_from_slice(&n.to_be_bytes());
            framed.extend_from_slice(&m);
            if stream.write_all(&framed).await.is_err() {
                return;
            }
        }
    }
}

/// A NOTIFY for `zone` (RFC 1996 §3.7: AA, the SOA in the question).
pub fn notify_message(zone: &LowerName, soa: Option<&Record>) -> Message {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Notify);
    m.metadata.authoritative = true;
    m.add_query(Query::query(zone.into(), RecordType::SOA));
    if let Some(s) = soa {
        m.add_answer(s.clone());
    }
    m
}

fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u16::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::rr::Name;

    use super::*;
    use crate::dns::zone::{ZoneConfig, Zones};
    use crate::store::{Host, HostKind};

    fn shared() -> Shared {
        let cfg = ZoneConfig {
            domain: Name::from_ascii("rack1.cluster.").unwrap_or_else(|e| panic!("{e}")),
            ttl: 300,
            server: Ipv4Addr::new(192, 0, 2, 1),
            aliases: Default::default(),
        };
        let host = Host {
            xname: "x1000c0s0b0n0".into(),
            kind: HostKind::Node,
            hostname: "nid0001".into(),
            nid: Some(1),
            role: None,
            sub_role: None,
            macs: vec![],
            ips: (0..100).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect(),
        };
        Shared {
            zones: std::sync::RwLock::new(Arc::new(Zones::build(&cfg, &[host], 1))),
            generation: std::sync::atomic::AtomicU64::new(0),
            secondaries: vec![Ipv4Addr::new(192, 0, 2, 53)],
            forwarders: vec![],
            cache: super::super::forward::Cache::new(4),
            tsig: super::super::tsig::Keys::default(),
            metrics: Arc::new(crate::metrics::Metrics::new()),
        }
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii(name).unwrap_or_else(|e| panic!("{e}")),
            t,
        ));
        m.to_vec().unwrap_or_else(|e| panic!("{e}"))
    }

    fn one(o: Outcome) -> Message {
        match o {
            Outcome::Reply(m) if m.len() == 1 => {
                Message::from_vec(&m[0]).unwrap_or_else(|e| panic!("{e}"))
            }
            _ => panic!("expected one reply"),
        }
    }

    const SRC: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)), 5353);

    #[test]
    fn every_prefix_and_mutation_of_a_query_is_answered_or_dropped_never_a_panic() {
        let s = shared();
        let q = query("nid0001.rack1.cluster.", RecordType::A);
        for len in 0..q.len() {
            let _ = answer(&s, &q[..len], SRC, false);
        }
        // Deterministic pseudo-random mutations (xorshift), over UDP and TCP.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut b = q.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % b.len();
                b[i] = (x >> 32) as u8;
            }
            let _ = answer(&s, &b, SRC, x & 1 == 0);
        }
    }

    #[test]
    fn truncated_over_udp_whole_over_tcp_and_transfers_only_for_secondaries() {
        let s = shared();
        let q = query("nid0001.rack1.cluster.", RecordType::A);
        let udp = one(answer(&s, &q, SRC, false));
        assert!(udp.metadata.truncation && udp.answers.is_empty());
        let tcp = one(answer(&s, &q, SRC, true));
        assert_eq!(tcp.answers.len(), 100);
        let axfr = query("rack1.cluster.", RecordType::AXFR);
        let refused = one(answer(&s, &axfr, SRC, true));
        assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
        let secondary = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53)), 40000);
        let Outcome::Reply(msgs) = answer(&s, &axfr, secondary, true) else {
            panic!("no transfer");
        };
        assert!(
            msgs.len() > 1,
            "202 records are sent in more than one message"
        );
        let outside = one(answer(
            &s,
            &query("example.com.", RecordType::A),
            SRC,
            false,
        ));
        assert_eq!(outside.metadata.response_code, ResponseCode::Refused);
        let bad = [0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'g'];
        let formerr = one(answer(&s, &bad, SRC, false));
        assert_eq!(
            (formerr.metadata.id, formerr.metadata.response_code),
            (0xbeef, ResponseCode::FormErr)
        );
    }
}
