//! The UDP fast path: the answers to the common questions, encoded once per zone build.
//!
//! For every owner name in our zones and every type it holds, plus A and AAAA (a NODATA answer
//! for most names; resolvers ask both), [`Table::build`] asks [`server::zone_answer`] — the
//! function the ordinary path answers with — for the response to a plain query, and keeps it
//! encoded by hickory-proto twice: without and with an EDNS OPT record. A request takes the fast
//! path only when it is exactly such a query: QUERY opcode, one question of class IN for a
//! name and type in the table, no answer or authority records, no additional record other than
//! one EDNS version 0 OPT (no TSIG), nothing after it. The copy sent back differs from the
//! stored one in three places only: the request's ID, its RD bit, and its question name, byte
//! for byte (the same name, so the same length and labels; only the letters' case may differ,
//! which keeps 0x20 case randomisation intact). The request is decoded with hickory-proto's
//! `Header`, `Query` and `Message::read_records`, so it accepts nothing the ordinary decoder
//! would refuse. Everything else (TSIG, zone transfers, NXDOMAIN, names outside our zones,
//! malformed datagrams, answers over 512 bytes) goes to [`server::answer`] unchanged.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable};

use super::server;
use super::zone::Zones;

/// The longest answer kept: the size every UDP client accepts, with or without EDNS, so the
/// fast path never has to truncate.
const MAX_ANSWER: usize = 512;
/// The header's length: the question starts here.
const HEADER: usize = 12;
/// The longest name on the wire (RFC 1035 §3.1).
const MAX_NAME: usize = 255;

/// Pre-encoded answers keyed by the question: the lowercased wire name, then the type (2 bytes).
#[derive(Default)]
pub struct Table {
    answers: HashMap<Box<[u8]>, Answer>,
}

/// One question's answer, without and with EDNS; ID 0, RD clear, the question lowercased.
struct Answer {
    plain: Box<[u8]>,
    edns: Box<[u8]>,
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Table({} answers)", self.answers.len())
    }
}

impl Table {
    /// Encodes the answer to every common question in `zones`.
    pub fn build(zones: &Zones) -> Self {
        let mut answers = HashMap::new();
        for (name, records) in zones.names() {
            let Some(zone) = zones.zone_for(name) else {
                continue;
            };
            let Ok(wire) = Name::from(name.clone()).to_bytes() else {
                continue;
            };
            let mut types: BTreeSet<RecordType> = records.iter().map(|r| r.record_type()).collect();
            types.extend([RecordType::A, RecordType::AAAA]);
            for qtype in types {
                let encode = |edns: bool| {
                    let mut req = Message::new(0, MessageType::Query, OpCode::Query);
                    req.add_query(Query::query(Name::from(name.clone()), qtype));
                    if edns {
                        req.set_edns(Edns::new());
                    }
                    let (resp, rcode) = server::zone_answer(zones, zone, &req, name, qtype);
                    let bytes = resp.to_vec().ok()?;
                    // Only what the copy can patch: NOERROR, small, the question in place.
                    let fits = rcode == ResponseCode::NoError
                        && bytes.len() <= MAX_ANSWER
                        && bytes.get(HEADER..HEADER + wire.len()) == Some(wire.as_slice());
                    fits.then(|| bytes.into_boxed_slice())
                };
                if let (Some(plain), Some(edns)) = (encode(false), encode(true)) {
                    let mut key = wire.clone();
                    key.extend_from_slice(&u16::from(qtype).to_be_bytes());
                    answers.insert(key.into_boxed_slice(), Answer { plain, edns });
                }
            }
        }
        Table { answers }
    }

    /// How many questions have a pre-encoded answer.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// Writes the answer to `req` into `out` when `req` is a question the table holds; false
    /// (and `out` unspecified) when the ordinary path must answer it.
    pub fn answer(&self, req: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(q) = parse(req) else {
            return false;
        };
        let mut key = [0u8; MAX_NAME + 2];
        let Some(k) = key.get_mut(..q.name.len() + 2) else {
            return false;
        };
        let (kname, ktype) = k.split_at_mut(q.name.len());
        for (d, s) in kname.iter_mut().zip(q.name) {
            *d = s.to_ascii_lowercase();
        }
        ktype.copy_from_slice(&q.qtype.to_be_bytes());
        let Some(a) = self.answers.get(&*k) else {
            return false;
        };
        out.clear();
        out.extend_from_slice(if q.edns { &a.edns } else { &a.plain });
        // The stored question is this one lowercased: same length, same place.
        let Some(name) = out.get_mut(HEADER..HEADER + q.name.len()) else {
            return false;
        };
        name.copy_from_slice(q.name);
        let Some([id_hi, id_lo, flags]) = out.get_mut(..3) else {
            return false;
        };
        [*id_hi, *id_lo] = q.id.to_be_bytes();
        if q.rd {
            *flags |= 0x01;
        }
        true
    }
}

/// A request the fast path may answer.
struct Plain<'a> {
    id: u16,
    rd: bool,
    /// The question's name as sent (uncompressed wire format).
    name: &'a [u8],
    qtype: u16,
    edns: bool,
}

fn parse(req: &[u8]) -> Option<Plain<'_>> {
    let mut d = BinDecoder::new(req);
    let header = Header::read(&mut d).ok()?;
    let (m, c) = (header.metadata, header.counts);
    if m.message_type != MessageType::Query
        || m.op_code != OpCode::Query
        || (c.queries, c.answers, c.authorities) != (1, 0, 0)
        || c.additionals > 1
    {
        return None;
    }
    let query = Query::read(&mut d).ok()?;
    if query.query_class() != DNSClass::IN {
        return None;
    }
    let end = d.index().checked_sub(4)?;
    let name = req.get(HEADER..end)?;
    if !uncompressed(name) {
        return None;
    }
    let edns = if c.additionals == 1 {
        let (records, edns, sig) = Message::read_records(&mut d, 1, true, OpCode::Query).ok()?;
        if !records.is_empty() || sig.is_some() || edns.as_ref()?.version() != 0 {
            return None;
        }
        true
    } else {
        false
    };
    if !d.is_empty() {
        return None;
    }
    Some(Plain {
        id: m.id,
        rd: m.recursion_desired,
        name,
        qtype: u16::from(query.query_type()),
        edns,
    })
}

/// True when `name` (already decoded by hickory-proto) is plain labels ending in the root, no
/// compression pointer: only then is it the name itself, to be copied back.
fn uncompressed(name: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&len) = name.get(i) {
        if len == 0 {
            return i + 1 == name.len();
        }
        if len > 63 {
            return false;
        }
        i += 1 + usize::from(len);
    }
    false
}

#[cfg(test)]
#[path = "fast_tests.rs"]
mod tests;
