//! What SMD derives from a RedfishEndpoint that carries magellan's inventory (`SchemaVersion`
//! ≥ 1 with `Systems` and `Managers`, smd `parseRedfishEndpointDataV2`): a NodeBMC Component
//! for the BMC, a Node Component per system (`<bmc>n<i>`, State On) and an EthernetInterface per
//! NIC MAC.
//!
//! Differences, on purpose: what exists is never overwritten (an administrator's NID, role or
//! interface addresses stay), and no IP address is copied from magellan's NIC data: in rackboot
//! an EthernetInterface's address is a static DHCP reservation, which a discovery report must not
//! create behind the administrator's back.

use serde_json::{Map, Value};

use super::endpoints::component_endpoints;
use super::interface_id;
use crate::http::Problem;
use crate::store::{Component, EthernetInterface, RedfishEndpoint, Store, StoreError};

/// Creates the Components and EthernetInterfaces `ep` describes that do not exist yet.
pub async fn derive(store: &Store, ep: &RedfishEndpoint) -> Result<(), Problem> {
    let version = ep
        .extra
        .get("SchemaVersion")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if version < 1 {
        return Ok(());
    }
    let existing = store.list_components().await?;
    let mut next_nid = existing.iter().filter_map(|c| c.nid).max().unwrap_or(0) + 1;
    let known = |id: &str| existing.iter().any(|c| c.id == id);
    let mut comps = Vec::new();
    let mut nics: Vec<(String, String, &'static str)> = Vec::new();
    for (id, ce) in component_endpoints(ep) {
        let is_bmc = id == ep.id;
        let kind = if is_bmc { "NodeBMC" } else { "Node" };
        if !known(&id) {
            comps.push(Component {
                id: id.clone(),
                kind: Some(kind.into()),
                state: Some(if is_bmc { "Ready" } else { "On" }.into()),
                flag: Some("OK".into()),
                enabled: Some(true),
                role: (!is_bmc).then(|| "Compute".into()),
                sub_role: None,
                nid: (!is_bmc).then(|| {
                    next_nid += 1;
                    next_nid - 1
                }),
                arch: None,
                class: None,
                extra: Map::new(),
            });
        }
        let info = if is_bmc {
            "RedfishManagerInfo"
        } else {
            "RedfishSystemInfo"
        };
        let list = ce.get(info).and_then(|i| i.get("EthernetNICInfo"));
        for nic in list.and_then(Value::as_array).into_iter().flatten() {
            if let Some(m) = nic.get("MACAddress").and_then(Value::as_str) {
                nics.push((m.to_owned(), id.clone(), kind));
            }
        }
    }
    if !comps.is_empty() {
        store.put_components(comps).await?;
    }
    let have: Vec<String> = store
        .list_ethernet_interfaces()
        .await?
        .into_iter()
        .map(|e| e.mac_address)
        .collect();
    for (mac, owner, kind) in nics {
        if have.contains(&mac) {
            continue;
        }
        let ei = EthernetInterface {
            id: interface_id(&mac),
            description: Some(format!("reported in RedfishEndpoint {}", ep.id)),
            mac_address: mac,
            ip_addresses: Vec::new(),
            last_update: None,
            component_id: Some(owner),
            kind: Some(kind.into()),
            extra: Map::new(),
        };
        match store.insert_ethernet_interface(ei).await {
            // Another writer got there first: theirs stays.
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
