//! Storing one crawled BMC in one transaction (RedfishEndpoint, Components, the nodes'
//! EthernetInterfaces with their addresses) and naming it by the xname rules.

use std::net::Ipv4Addr;

use serde_json::{Map, Value, json};

use super::crawl::Crawl;
use super::{Discovery, NodeFound};
use crate::config::XnameRule;
use crate::store::{Component, EthernetInterface, IpAddressEntry, RedfishEndpoint};

impl Discovery {
    /// Writes one crawl into the inventory (one transaction).
    pub(super) async fn record(&self, c: Crawl) -> Result<(String, Vec<NodeFound>), String> {
        let _serial = self.apply.lock().await;
        // Indexed lookups, not the whole inventory: one BMC's write must not cost more as the
        // rack fills up.
        let names = self
            .store
            .discovery_names(c.host.clone(), Vec::new())
            .await
            .map_err(|e| e.to_string())?;
        let (bmc_x, rule) = match names.existing {
            Some(id) => (id, "existing"),
            None => {
                let port = self
                    .store
                    .bmc_relay_port(c.host.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                self.name_bmc(&c, port.as_ref(), &names.endpoint_ids)?
            }
        };
        let node_xnames: Vec<String> = (0..c.systems.len())
            .map(|i| format!("{bmc_x}n{i}"))
            .collect();
        let nids = self
            .store
            .discovery_names(c.host.clone(), node_xnames)
            .await
            .map_err(|e| e.to_string())?
            .node_nids;
        let mut next_nid = names.max_nid.unwrap_or(0) + 1;
        let mut components = vec![component(&bmc_x, "NodeBMC", None, None)];
        let mut interfaces = Vec::new();
        let mut found = Vec::new();
        let mut systems_doc = Vec::new();
        for (i, s) in c.systems.iter().enumerate() {
            let node_x = format!("{bmc_x}n{i}");
            let nid = match nids.get(&node_x) {
                Some(n) => *n,
                None => {
                    let n = next_nid;
                    next_nid += 1;
                    n
                }
            };
            let ip = self.cfg.node_ip_base.and_then(|b| {
                u32::try_from(nid)
                    .ok()
                    .and_then(|n| u32::from(b).checked_add(n))
                    .map(Ipv4Addr::from)
            });
            let state = match s.power.as_deref() {
                Some("On") => "On",
                Some("Off") => "Off",
                _ => "Populated",
            };
            components.push(component(&node_x, "Node", Some(nid), Some(state)));
            for (k, mac) in s.macs.iter().enumerate() {
                interfaces.push(EthernetInterface {
                    id: mac.replace(':', ""),
                    description: Some(format!("discovered via Redfish {}{}", c.base, s.uri)),
                    mac_address: mac.clone(),
                    ip_addresses: match (k, ip) {
                        (0, Some(ip)) => vec![IpAddressEntry {
                            ip_address: ip.to_string(),
                            network: None,
                        }],
                        _ => Vec::new(),
                    },
                    last_update: Some(crate::timeline::routes::rfc3339(crate::store::now_ms())),
                    component_id: Some(node_x.clone()),
                    kind: Some("Node".into()),
                    extra: Map::new(),
                });
            }
            systems_doc.push(json!({
                "URI": s.uri, "UUID": s.uuid, "Model": s.model, "Manufacturer": s.manufacturer,
                "SerialNumber": s.serial, "BiosVersion": s.bios, "PowerState": s.power,
                "ResetTypes": s.reset_types, "Node": node_x,
                "Chassis": s.chassis, "Location": s.location, "MACsFrom": s.macs_from,
                "Consoles": s.consoles, "Hardware": s.hardware,
                "EthernetInterfaces": s.macs.iter().map(|m| json!({"MACAddress": m})).collect::<Vec<_>>(),
            }));
            found.push(NodeFound {
                xname: node_x,
                nid,
                macs: s.macs.clone(),
                ip: ip.map(|i| i.to_string()),
                power: s.power.clone(),
            });
        }
        let mut doc = Map::new();
        for (k, v) in [
            ("Type", json!("NodeBMC")),
            ("Name", json!(c.host)),
            ("Hostname", json!(c.host)),
            ("Domain", json!("")),
            ("FQDN", json!(c.host)),
            ("IPAddress", json!(c.host)),
            ("URL", json!(c.base)),
            ("Enabled", json!(true)),
            ("User", json!(c.user)),
            ("MACRequired", json!(false)),
            ("MACAddr", json!(c.bmc_mac)),
            ("RediscoverOnUpdate", json!(false)),
            ("SchemaVersion", json!(1)),
            ("Systems", Value::Array(systems_doc)),
            ("Managers", json!([c.manager])),
            ("TLS", json!({"sha256": c.cert_sha256})),
            (
                "DiscoveryInfo",
                json!({
                    "LastDiscoveryStatus": "DiscoverOK",
                    "LastDiscoveryAttempt": crate::timeline::routes::rfc3339(crate::store::now_ms()),
                    "RedfishVersion": c.redfish_version,
                }),
            ),
        ] {
            doc.insert(k.to_owned(), v);
        }
        doc.insert("XnameRule".into(), json!(rule));
        let endpoint = RedfishEndpoint {
            id: bmc_x.clone(),
            extra: doc,
        };
        self.store
            .apply_discovery(endpoint, components, interfaces)
            .await
            .map_err(|e| format!("inventory write failed (nothing written): {e}"))?;
        tracing::info!(bmc = %c.base, xname = %bmc_x, rule, nodes = found.len(), "BMC discovered");
        Ok((bmc_x, found))
    }

    /// A new BMC's xname: the first of `discovery.xname_rules` that yields an xname no other
    /// BMC holds. Returns the xname and the rule that gave it.
    pub(super) fn name_bmc(
        &self,
        c: &Crawl,
        port: Option<&(String, String)>,
        endpoint_ids: &std::collections::HashSet<String>,
    ) -> Result<(String, &'static str), String> {
        let free = |x: &str| !endpoint_ids.contains(x);
        let slot = |n: u32| format!("{}c{}s{n}b0", self.cfg.cabinet, self.cfg.chassis);
        for rule in &self.cfg.xname_rules {
            let (name, candidate) = match rule {
                XnameRule::Map => {
                    let Some(x) = self
                        .cfg
                        .xnames
                        .get(&c.host)
                        .or_else(|| c.bmc_mac.as_ref().and_then(|m| self.cfg.xnames.get(m)))
                    else {
                        continue;
                    };
                    crate::inventory::xname::parse(x)
                        .map_err(|e| format!("discovery.xnames maps {} to {x:?}: {e}", c.host))?;
                    ("map", x.clone())
                }
                XnameRule::RelayPort => {
                    let Some((circuit, remote)) = port else {
                        continue;
                    };
                    let Some(n) = self
                        .cfg
                        .relay_ports
                        .get(&format!("{remote}/{circuit}"))
                        .or_else(|| self.cfg.relay_ports.get(circuit))
                    else {
                        tracing::info!(bmc = %c.host, circuit, remote, "switch port not in discovery.relay_ports");
                        continue;
                    };
                    ("relay-port", slot(*n))
                }
                XnameRule::Location => {
                    let Some(n) = c.systems.iter().find_map(|s| s.slot) else {
                        continue;
                    };
                    ("location", slot(n))
                }
                XnameRule::Sequential => {
                    let x = (0..4096)
                        .map(slot)
                        .find(|x| free(x))
                        .ok_or("no free slot left for a BMC xname")?;
                    ("sequential", x)
                }
            };
            if free(&candidate) {
                return Ok((candidate, name));
            }
            tracing::warn!(bmc = %c.host, xname = %candidate, rule = name, "xname already held by another BMC; trying the next rule");
        }
        Err(format!(
            "no xname rule named {} (discovery.xname_rules = {:?}); add `sequential` as the last rule",
            c.host, self.cfg.xname_rules
        ))
    }
}

fn component(id: &str, kind: &str, nid: Option<i64>, state: Option<&str>) -> Component {
    Component {
        id: id.to_owned(),
        kind: Some(kind.to_owned()),
        state: Some(state.unwrap_or("Ready").to_owned()),
        flag: Some("OK".into()),
        enabled: Some(true),
        role: (kind == "Node").then(|| "Compute".to_owned()),
        sub_role: None,
        nid,
        arch: (kind == "Node").then(|| "X86".to_owned()),
        class: None,
        extra: Map::new(),
    }
}
