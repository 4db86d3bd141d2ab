//! One consistent view of every named host the inventory knows (nodes and BMCs) with their
//! MACs and IPv4 addresses: what DNS serves and what the Ansible inventory lists.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::Value;

use super::{Component, EthernetInterface, RedfishEndpoint, Store, StoreError};

/// What kind of host a [`Host`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostKind {
    Node,
    Bmc,
}

/// A node or BMC, by xname.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub xname: String,
    pub kind: HostKind,
    /// Nodes: `nid%04d` when the component has a NID (the DHCP hostname), else the xname.
    pub hostname: String,
    pub nid: Option<i64>,
    pub role: Option<String>,
    pub sub_role: Option<String>,
    /// Lowercase, colon-separated, in interface-ID order.
    pub macs: Vec<String>,
    /// Every IPv4 address of its interfaces (and, for a BMC, its RedfishEndpoint's), deduplicated.
    pub ips: Vec<Ipv4Addr>,
}

impl Store {
    /// Every node and BMC in the inventory, sorted by xname, read in one transaction.
    pub async fn hosts(&self) -> Result<Vec<Host>, StoreError> {
        self.read(|c| {
            let tx = c.unchecked_transaction()?;
            let comps: Vec<Component> = super::smd::all_docs(&tx, "components")?;
            let eis: Vec<EthernetInterface> = super::smd::all_docs(&tx, "ethernet_interfaces")?;
            let eps: Vec<RedfishEndpoint> = super::smd::all_docs(&tx, "redfish_endpoints")?;
            drop(tx);
            Ok(assemble(comps, eis, eps))
        })
        .await
    }
}

/// Joins components, interfaces and endpoints into hosts (pure, for tests).
fn assemble(
    comps: Vec<Component>,
    eis: Vec<EthernetInterface>,
    eps: Vec<RedfishEndpoint>,
) -> Vec<Host> {
    let mut hosts: BTreeMap<String, Host> = BTreeMap::new();
    fn entry<'a>(hosts: &'a mut BTreeMap<String, Host>, xname: &str) -> Option<&'a mut Host> {
        let kind = kind_of(xname)?;
        Some(hosts.entry(xname.to_owned()).or_insert_with(|| Host {
            xname: xname.to_owned(),
            kind,
            hostname: xname.to_owned(),
            nid: None,
            role: None,
            sub_role: None,
            macs: Vec::new(),
            ips: Vec::new(),
        }))
    }
    for c in comps {
        let Some(h) = entry(&mut hosts, &c.id) else {
            continue;
        };
        h.nid = c.nid;
        if let (HostKind::Node, Some(n)) = (h.kind, c.nid) {
            h.hostname = format!("nid{n:04}");
        }
        h.role = c.role;
        h.sub_role = c.sub_role;
    }
    for ei in eis {
        let Some(id) = ei.component_id.as_deref() else {
            continue;
        };
        let Some(h) = entry(&mut hosts, id) else {
            continue;
        };
        h.macs.push(ei.mac_address.to_ascii_lowercase());
        for a in &ei.ip_addresses {
            if let Ok(ip) = a.ip_address.parse::<Ipv4Addr>()
                && !h.ips.contains(&ip)
            {
                h.ips.push(ip);
            }
        }
    }
    for ep in eps {
        let Some(h) = entry(&mut hosts, &ep.id) else {
            continue;
        };
        let addr = ["IPAddress", "FQDN", "Hostname"]
            .iter()
            .filter_map(|k| ep.extra.get(*k).and_then(Value::as_str))
            .find_map(|s| s.parse::<Ipv4Addr>().ok());
        if let Some(ip) = addr
            && !h.ips.contains(&ip)
        {
            h.ips.push(ip);
        }
        if let Some(mac) = ep.extra.get("MACAddr").and_then(Value::as_str) {
            let mac = mac.to_ascii_lowercase();
            if !mac.is_empty() && !h.macs.contains(&mac) {
                h.macs.push(mac);
            }
        }
    }
    hosts.into_values().collect()
}

/// Nodes end in `n<N>`, BMCs in `b<N>`; anything else (cabinets, chassis, garbage) is no host.
fn kind_of(xname: &str) -> Option<HostKind> {
    let head = xname.trim_end_matches(|c: char| c.is_ascii_digit());
    if head.len() == xname.len() || !xname.starts_with('x') {
        return None;
    }
    match head.chars().last() {
        Some('n') => Some(HostKind::Node),
        Some('b') => Some(HostKind::Bmc),
        _ => None,
    }
}

/// The BMC xname of a node xname (`x1000c0s0b0n0` → `x1000c0s0b0`).
pub fn bmc_of(node: &str) -> Option<&str> {
    let head = node.trim_end_matches(|c: char| c.is_ascii_digit());
    head.strip_suffix('n')
        .filter(|b| kind_of(b) == Some(HostKind::Bmc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(id: &str, nid: Option<i64>) -> Component {
        serde_json::from_value(serde_json::json!({"ID": id, "NID": nid, "Role": "Compute"}))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn joins_nodes_bmcs_and_addresses() {
        let ei: EthernetInterface = serde_json::from_value(serde_json::json!({
            "MACAddress": "52:54:00:AA:00:01", "ComponentID": "x1000c0s0b0n0",
            "IPAddresses": [{"IPAddress": "192.0.2.10"}, {"IPAddress": "not-an-ip"}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let ep: RedfishEndpoint = serde_json::from_value(
            serde_json::json!({"ID": "x1000c0s0b0", "FQDN": "192.0.2.200", "MACAddr": "52:54:00:bb:00:01"}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let hosts = assemble(
            vec![comp("x1000c0s0b0n0", Some(1)), comp("x1000", None)],
            vec![ei],
            vec![ep],
        );
        assert_eq!(hosts.len(), 2);
        let bmc = &hosts[0];
        assert_eq!(
            (bmc.kind, bmc.ips.clone()),
            (HostKind::Bmc, vec![Ipv4Addr::new(192, 0, 2, 200)])
        );
        let node = &hosts[1];
        assert_eq!(node.hostname, "nid0001");
        assert_eq!(node.macs, vec!["52:54:00:aa:00:01"]);
        assert_eq!(node.ips, vec![Ipv4Addr::new(192, 0, 2, 10)]);
        assert_eq!(bmc_of("x1000c0s0b0n0"), Some("x1000c0s0b0"));
        assert_eq!(bmc_of("x1000c0s0b0"), None);
    }
}
