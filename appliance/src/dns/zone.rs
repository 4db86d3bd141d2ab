//! The rack's zones, built from the inventory: the forward zone (`dns.domain`) and one
//! `in-addr.arpa` zone per /24 that holds a host address. Immutable once built; a change in the
//! inventory builds a new one (`super::reload`), with the pre-encoded answers of the UDP fast
//! path (`super::fast`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use hickory_proto::rr::rdata::{A, CNAME, NS, PTR, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::store::Host;

/// What the zones are built from, besides the inventory.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    pub domain: Name,
    pub ttl: u32,
    /// The appliance: `ns.<domain>` and `rackboot.<domain>`.
    pub server: Ipv4Addr,
    pub aliases: BTreeMap<String, String>,
}

/// One zone this server is authoritative for.
#[derive(Debug)]
pub struct ZoneInfo {
    pub origin: LowerName,
    /// SOA, every other record, SOA (RFC 5936 §2.2): what AXFR sends.
    pub transfer: Vec<Record>,
}

/// Every zone, indexed for lookups, with the UDP fast path's pre-encoded answers.
#[derive(Debug)]
pub struct Zones {
    pub serial: u32,
    records: HashMap<LowerName, Vec<Record>>,
    pub zones: Vec<ZoneInfo>,
    pub fast: super::fast::Table,
}

/// The answer to one question.
#[derive(Debug, Default, PartialEq)]
pub struct Lookup {
    pub nxdomain: bool,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
}

impl Zones {
    /// An empty set (DNS answers REFUSED for everything until the first build).
    pub fn empty() -> Self {
        Zones {
            serial: 0,
            records: HashMap::new(),
            zones: Vec::new(),
            fast: super::fast::Table::default(),
        }
    }

    /// Builds the zones from `hosts` with `serial` in every SOA.
    pub fn build(cfg: &ZoneConfig, hosts: &[Host], serial: u32) -> Self {
        let (records, origins) = records(cfg, hosts);
        let mut by_name: HashMap<LowerName, Vec<Record>> = HashMap::new();
        let mut zones = Vec::new();
        let mname = label(&cfg.domain, "ns");
        let rname = label(&cfg.domain, "hostmaster");
        for origin in &origins {
            let soa = Record::from_rdata(
                origin.clone(),
                cfg.ttl,
                RData::SOA(SOA::new(
                    mname.clone(),
                    rname.clone(),
                    serial,
                    3600,
                    600,
                    604_800,
                    cfg.ttl.min(60),
                )),
            );
            let ns = Record::from_rdata(origin.clone(), cfg.ttl, RData::NS(NS(mname.clone())));
            let lower = LowerName::from(origin);
            let mut transfer = vec![soa.clone(), ns.clone()];
            transfer.extend(
                records
                    .iter()
                    .filter(|r| lower.zone_of(&LowerName::from(&r.name)))
                    .filter(|r| origins_for(&origins, &r.name) == Some(origin))
                    .cloned(),
            );
            transfer.push(soa.clone());
            by_name.entry(lower.clone()).or_default().extend([soa, ns]);
            zones.push(ZoneInfo {
                origin: lower,
                transfer,
            });
        }
        for r in records {
            by_name.entry(LowerName::from(&r.name)).or_default().push(r);
        }
        let mut built = Zones {
            serial,
            records: by_name,
            zones,
            fast: super::fast::Table::default(),
        };
        built.fast = super::fast::Table::build(&built);
        built
    }

    /// Every owner name with its records.
    pub fn names(&self) -> impl Iterator<Item = (&LowerName, &[Record])> {
        self.records.iter().map(|(n, r)| (n, r.as_slice()))
    }

    /// A fingerprint of everything but the serial: the serial moves when it changes.
    pub fn digest(cfg: &ZoneConfig, hosts: &[Host]) -> String {
        let (records, origins) = records(cfg, hosts);
        let mut lines: Vec<String> = records.iter().map(ToString::to_string).collect();
        lines.extend(origins.iter().map(|o| format!("zone {o}")));
        lines.push(format!("ttl {}", cfg.ttl));
        lines.sort();
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, lines.join("\n").as_bytes());
        hex::encode(d.as_ref())
    }

    /// The zone `name` is in, if it is one of ours (the longest matching origin).
    pub fn zone_for(&self, name: &LowerName) -> Option<&ZoneInfo> {
        self.zones
            .iter()
            .filter(|z| z.origin.zone_of(name))
            .max_by_key(|z| z.origin.num_labels())
    }

    /// Answers `qtype` for `name` from zone `zone` (RFC 1034 §4.3.2, without delegations).
    pub fn lookup(&self, zone: &ZoneInfo, name: &LowerName, qtype: RecordType) -> Lookup {
        let soa = || {
            self.records
                .get(&zone.origin)
                .into_iter()
                .flatten()
                .filter(|r| r.record_type() == RecordType::SOA)
                .cloned()
                .collect::<Vec<_>>()
        };
        let mut out = Lookup::default();
        let mut name = name.clone();
        // Follow CNAMEs inside our zones, a bounded number of times.
        for _ in 0..8 {
            let Some(rrs) = self.records.get(&name) else {
                if out.answers.is_empty() {
                    out.nxdomain = true;
                    out.authority = soa();
                }
                return out;
            };
            let matching: Vec<Record> = rrs
                .iter()
                .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
                .cloned()
                .collect();
            if !matching.is_empty() {
                out.answers.extend(matching);
                return out;
            }
            let cname = rrs.iter().find(|r| r.record_type() == RecordType::CNAME);
            match cname.map(|c| (c, &c.data)) {
                Some((c, RData::CNAME(CNAME(target)))) => {
                    out.answers.push(c.clone());
                    let target = LowerName::from(target);
                    if self.zone_for(&target).is_none() {
                        return out;
                    }
                    name = target;
                }
                _ => {
                    if out.answers.is_empty() {
                        out.authority = soa();
                    }
                    return out;
                }
            }
        }
        out
    }
}

/// Every record but SOA and NS, and the zone origins, sorted.
fn records(cfg: &ZoneConfig, hosts: &[Host]) -> (Vec<Record>, Vec<Name>) {
    let mut out: BTreeSet<(String, Record)> = BTreeSet::new();
    let mut add = |r: Record| {
        out.insert((r.to_string(), r));
    };
    let mut reverse: BTreeSet<Name> = BTreeSet::new();
    let mut address = |name: &Name, ip: Ipv4Addr, ptr: bool, add: &mut dyn FnMut(Record)| {
        add(Record::from_rdata(name.clone(), cfg.ttl, RData::A(A(ip))));
        if ptr {
            let rev = Name::from(ip);
            reverse.insert(rev.base_name());
            add(Record::from_rdata(
                rev,
                cfg.ttl,
                RData::PTR(PTR(name.clone())),
            ));
        }
    };
    for prefix in ["ns", "rackboot"] {
        address(
            &label(&cfg.domain, prefix),
            cfg.server,
            prefix == "rackboot",
            &mut add,
        );
    }
    for h in hosts {
        let Some(xname) = try_label(&cfg.domain, &h.xname) else {
            continue;
        };
        let hostname = try_label(&cfg.domain, &h.hostname).unwrap_or_else(|| xname.clone());
        for ip in &h.ips {
            // The reverse name is the DHCP hostname (option 12), which is the node's name.
            address(&hostname, *ip, true, &mut add);
            if hostname != xname {
                address(&xname, *ip, false, &mut add);
            }
        }
    }
    for (alias, target) in &cfg.aliases {
        let Some(alias) = try_label(&cfg.domain, alias) else {
            continue;
        };
        let target = if target.ends_with('.') {
            Name::from_ascii(target).ok()
        } else {
            Name::from_ascii(target)
                .ok()
                .and_then(|t| t.append_domain(&cfg.domain).ok())
        };
        if let Some(t) = target {
            add(Record::from_rdata(alias, cfg.ttl, RData::CNAME(CNAME(t))));
        }
    }
    let mut origins = vec![cfg.domain.clone()];
    origins.extend(reverse);
    (out.into_iter().map(|(_, r)| r).collect(), origins)
}

/// The origin of the most specific zone holding `name`.
fn origins_for<'a>(origins: &'a [Name], name: &Name) -> Option<&'a Name> {
    origins
        .iter()
        .filter(|o| o.zone_of(name))
        .max_by_key(|o| o.num_labels())
}

fn label(domain: &Name, l: &str) -> Name {
    try_label(domain, l).unwrap_or_else(|| domain.clone())
}

/// `<l>.<domain>` when `l` is one valid DNS label.
fn try_label(domain: &Name, l: &str) -> Option<Name> {
    if l.is_empty() || l.contains('.') {
        return None;
    }
    Name::from_ascii(l).ok()?.append_domain(domain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HostKind;

    fn cfg() -> ZoneConfig {
        ZoneConfig {
            domain: Name::from_ascii("rack1.cluster.").unwrap_or_else(|e| panic!("{e}")),
            ttl: 300,
            server: Ipv4Addr::new(192, 0, 2, 1),
            aliases: [("head".to_owned(), "nid0001".to_owned())].into(),
        }
    }

    fn node() -> Host {
        Host {
            xname: "x1000c0s0b0n0".into(),
            kind: HostKind::Node,
            hostname: "nid0001".into(),
            nid: Some(1),
            role: None,
            sub_role: None,
            macs: vec![],
            ips: vec![Ipv4Addr::new(192, 0, 2, 10)],
        }
    }

    fn q(z: &Zones, name: &str, t: RecordType) -> Lookup {
        let n = LowerName::from(Name::from_ascii(name).unwrap_or_else(|e| panic!("{e}")));
        let zone = z
            .zone_for(&n)
            .unwrap_or_else(|| panic!("no zone for {name}"));
        z.lookup(zone, &n, t)
    }

    #[test]
    fn names_addresses_aliases_and_reverse() {
        let z = Zones::build(&cfg(), &[node()], 7);
        let a = q(&z, "x1000c0s0b0n0.rack1.cluster.", RecordType::A);
        assert_eq!(a.answers.len(), 1);
        let a = q(&z, "NID0001.rack1.cluster.", RecordType::A);
        assert_eq!(a.answers.len(), 1);
        let c = q(&z, "head.rack1.cluster.", RecordType::A);
        assert_eq!(c.answers.len(), 2, "{c:?}");
        let p = q(&z, "10.2.0.192.in-addr.arpa.", RecordType::PTR);
        assert_eq!(
            p.answers[0].data,
            RData::PTR(PTR(
                Name::from_ascii("nid0001.rack1.cluster.").unwrap_or_else(|e| panic!("{e}"))
            ))
        );
        let nx = q(&z, "nope.rack1.cluster.", RecordType::A);
        assert!(nx.nxdomain && nx.authority.len() == 1);
        let nodata = q(&z, "nid0001.rack1.cluster.", RecordType::MX);
        assert!(!nodata.nxdomain && nodata.answers.is_empty() && nodata.authority.len() == 1);
        let soa = q(&z, "rack1.cluster.", RecordType::SOA);
        assert!(matches!(&soa.answers[0].data, RData::SOA(s) if s.serial == 7));
        let t = &z.zones[0].transfer;
        assert_eq!(t.first().map(Record::record_type), Some(RecordType::SOA));
        assert_eq!(t.last().map(Record::record_type), Some(RecordType::SOA));
        assert!(
            z.zone_for(&LowerName::from(
                Name::from_ascii("example.com.").unwrap_or_else(|e| panic!("{e}"))
            ))
            .is_none()
        );
    }

    #[test]
    fn digest_moves_only_with_content() {
        let a = Zones::digest(&cfg(), &[node()]);
        assert_eq!(a, Zones::digest(&cfg(), &[node()]));
        let mut n = node();
        n.ips.push(Ipv4Addr::new(192, 0, 2, 11));
        assert_ne!(a, Zones::digest(&cfg(), &[n]));
    }
}
