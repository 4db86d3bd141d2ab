//! Names outside the rack's zones: asked of `dns.forwarders` in order (UDP, then TCP when the
//! answer is truncated), answers cached for their smallest TTL (bounded entries).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Shared;
use super::server::{rcode_label, response};

/// How long one forwarder gets to answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Negative and empty answers are kept this long; nothing longer than `MAX_TTL`.
const NEGATIVE_TTL: u32 = 30;
const MAX_TTL: u32 = 3600;

/// The forwarding cache: question → (expiry, upstream answer).
pub struct Cache {
    entries: Mutex<HashMap<Query, (Instant, Message)>>,
    capacity: usize,
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Cache {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn get(&self, q: &Query, now: Instant) -> Option<Message> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.get(q)
            .filter(|(exp, _)| *exp > now)
            .map(|(_, m)| m.clone())
    }

    fn put(&self, q: Query, ttl: u32, m: Message, now: Instant) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.capacity {
            map.retain(|_, (exp, _)| *exp > now);
            if map.len() >= self.capacity {
                // Still full of live entries: start again rather than grow without bound.
                map.clear();
            }
        }
        map.insert(q, (now + Duration::from_secs(u64::from(ttl)), m));
    }
}

/// The response to `req` from the cache or the forwarders (SERVFAIL when none answers).
pub async fn resolve(shared: &Shared, req: &Message, tcp: bool) -> Option<Vec<u8>> {
    let transport = if tcp { "tcp" } else { "udp" };
    let query = req.queries.first()?.clone();
    let now = Instant::now();
    let upstream = match shared.cache.get(&query, now) {
        Some(m) => Some(m),
        None => ask(&shared.forwarders, &query).await,
    };
    let mut resp = response(req);
    resp.metadata.recursion_available = true;
    let Some(up) = upstream else {
        resp.metadata.response_code = ResponseCode::ServFail;
        shared.metrics.dns_response(transport, "SERVFAIL");
        return resp.to_vec().ok();
    };
    let ttl = up
        .answers
        .iter()
        .map(|r| r.ttl)
        .min()
        .unwrap_or(NEGATIVE_TTL)
        .min(MAX_TTL);
    if matches!(
        up.metadata.response_code,
        ResponseCode::NoError | ResponseCode::NXDomain
    ) && ttl > 0
    {
        shared.cache.put(query, ttl, up.clone(), now);
    }
    resp.metadata.response_code = up.metadata.response_code;
    resp.answers = up.answers;
    resp.authorities = up.authorities;
    shared
        .metrics
        .dns_response(transport, rcode_label(resp.metadata.response_code));
    let bytes = resp.to_vec().ok()?;
    let limit = if req.edns.is_some() {
        usize::from(req.max_payload().min(1232))
    } else {
        512
    };
    if !tcp && bytes.len() > limit {
        return resp.truncate().to_vec().ok();
    }
    Some(bytes)
}

/// Asks each forwarder in turn; the first usable answer wins.
async fn ask(forwarders: &[SocketAddr], query: &Query) -> Option<Message> {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(query.clone());
    let mut e = Edns::new();
    e.set_max_payload(1232);
    q.set_edns(e);
    let bytes = q.to_vec().ok()?;
    for fwd in forwarders {
        let got = tokio::time::timeout(FORWARD_TIMEOUT, async {
            let m = udp(*fwd, &bytes, &q).await?;
            if m.metadata.truncation {
                return tcp(*fwd, &bytes, &q).await;
            }
            Some(m)
        })
        .await;
        match got {
            Ok(Some(m)) if m.metadata.response_code != ResponseCode::ServFail => return Some(m),
            _ => tracing::debug!(forwarder = %fwd, "DNS: forwarder did not answer"),
        }
    }
    None
}

/// Whether `m` answers `q` (same ID and question: RFC 5452's minimum against spoofing).
fn matches(m: &Message, q: &Message) -> bool {
    m.metadata.id == q.metadata.id && m.queries == q.queries
}

async fn udp(fwd: SocketAddr, bytes: &[u8], q: &Message) -> Option<Message> {
    let sock = tokio::net::UdpSocket::bind("0.0.0.0:0").await.ok()?;
    sock.connect(fwd).await.ok()?;
    sock.send(bytes).await.ok()?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).await.ok()?;
        if let Some(m) = buf.get(..n).and_then(|b| Message::from_vec(b).ok())
            && matches(&m, q)
        {
            return Some(m);
        }
    }
}

async fn tcp(fwd: SocketAddr, bytes: &[u8], q: &Message) -> Option<Message> {
    let mut s = tokio::net::TcpStream::connect(fwd).await.ok()?;
    let len = u16::try_from(bytes.len()).ok()?;
    s.write_all(&len.to_be_bytes()).await.ok()?;
    s.write_all(bytes).await.ok()?;
    let mut l = [0u8; 2];
    s.read_exact(&mut l).await.ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(l))];
    s.read_exact(&mut buf).await.ok()?;
    Message::from_vec(&buf).ok().filter(|m| matches(m, q))
}
