//! RedfishEndpoints, ComponentEndpoints and EthernetInterface collection operations as SMD
//! serves them.
//!
//! ComponentEndpoints are not a table: SMD fills them during discovery, and rackboot derives
//! them from what discovery (or magellan's POST) stored in each RedfishEndpoint: one per
//! `Systems[]` entry (a node; `Node` names its xname, else SMD's rule `<bmc>n<index>`) and one
//! for the BMC itself when `Managers[]` is present. Deleting one removes that entry from its
//! RedfishEndpoint, so it stays gone until the BMC is discovered again, as in SMD.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::components::deleted;
use super::enums;
use super::query::{Pairs, allow_only, matches, values};
use crate::http::{Json, Problem};
use crate::store::{RedfishEndpoint, Store};

const RFE_BASE: &str = "/hsm/v2/Inventory/RedfishEndpoints";

/// Routes added to the scoped SMD router.
pub fn router() -> Router<Store> {
    Router::new()
        .route(
            "/hsm/v2/Inventory/ComponentEndpoints",
            get(list_component_endpoints).delete(delete_all_component_endpoints),
        )
        .route(
            "/hsm/v2/Inventory/ComponentEndpoints/{id}",
            get(get_component_endpoint).delete(delete_component_endpoint),
        )
        .route(
            "/hsm/v2/Inventory/RedfishEndpoints/Query/{id}",
            get(query_endpoint),
        )
        .route(
            "/hsm/v2/Inventory/EthernetInterfaces/{id}/IPAddresses",
            get(ip_addresses).post(add_ip_address),
        )
        .route(
            "/hsm/v2/Inventory/EthernetInterfaces/{id}/IPAddresses/{ip}",
            axum::routing::patch(patch_ip_address).delete(delete_ip_address),
        )
}

fn text<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str)
}

pub async fn list_endpoints(
    State(s): State<Store>,
    Query(q): Query<Pairs>,
) -> Result<Json<Value>, Problem> {
    allow_only(
        &q,
        "GET /Inventory/RedfishEndpoints",
        &[
            "id",
            "fqdn",
            "type",
            "uuid",
            "macaddr",
            "ipaddress",
            "laststatus",
        ],
    )?;
    let own = |k: &str| {
        values(&q, k)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let ids: Vec<String> = values(&q, "id")
        .into_iter()
        .map(|x| enums::normalize_xname(x).map(|(id, _)| id))
        .collect::<Result<_, _>>()?;
    let (fqdns, types, uuids, ips, statuses) = (
        own("fqdn"),
        own("type"),
        own("uuid"),
        own("ipaddress"),
        own("laststatus"),
    );
    // SMD compares MACs without separators.
    let bare = |m: &str| m.replace([':', '-'], "").to_ascii_lowercase();
    let macs: Vec<String> = values(&q, "macaddr").into_iter().map(bare).collect();
    let list: Vec<RedfishEndpoint> = s
        .list_redfish_endpoints()
        .await?
        .into_iter()
        .filter(|e| {
            let x = &e.extra;
            let status = x
                .get("DiscoveryInfo")
                .and_then(|d| d.get("LastDiscoveryStatus"))
                .and_then(Value::as_str);
            matches(&ids, Some(&e.id))
                && matches(&fqdns, text(x, "FQDN"))
                && matches(&types, text(x, "Type"))
                && matches(&uuids, text(x, "UUID"))
                && matches(&ips, text(x, "IPAddress"))
                && matches(&statuses, status)
                && (macs.is_empty() || text(x, "MACAddr").is_some_and(|m| macs.contains(&bare(m))))
        })
        .collect();
    Ok(Json(json!({ "RedfishEndpoints": list })))
}

/// Checks an endpoint and fills what SMD derives: a lower-case ID and, when `Type` is missing or
/// empty (magellan sends `""`), the type its xname names (`…b0` → `NodeBMC`).
pub fn check_endpoint(mut ep: RedfishEndpoint) -> Result<RedfishEndpoint, Problem> {
    let (id, kind) = enums::normalize_xname(&ep.id)?;
    ep.id = id;
    if text(&ep.extra, "Type").is_none_or(str::is_empty) {
        ep.extra.insert("Type".into(), kind.as_smd().into());
    }
    Ok(ep)
}

/// `POST /Inventory/RedfishEndpoints`: one endpoint or `{"RedfishEndpoints": […]}`; 201 with
/// SMD's array of `{"URI": …}`.
pub async fn post_endpoint(
    State(s): State<Store>,
    Json(body): Json<Value>,
) -> Result<Response, Problem> {
    let eps: Vec<RedfishEndpoint> = match body.get("RedfishEndpoints") {
        Some(list) => serde_json::from_value(list.clone()),
        None => serde_json::from_value(body).map(|e| vec![e]),
    }
    .map_err(|e| Problem::bad_request(format!("invalid RedfishEndpoint: {e}")))?;
    if eps.is_empty() {
        return Err(Problem::bad_request("no RedfishEndpoints given"));
    }
    let eps = eps
        .into_iter()
        .map(check_endpoint)
        .collect::<Result<Vec<_>, _>>()?;
    let uris: Vec<Value> = eps
        .iter()
        .map(|e| json!({"URI": format!("{RFE_BASE}/{}", e.id)}))
        .collect();
    // One transaction: all or nothing.
    s.insert_redfish_endpoints(eps.clone()).await?;
    for ep in &eps {
        super::magellan::derive(&s, ep).await?;
    }
    Ok((StatusCode::CREATED, Json(Value::Array(uris))).into_response())
}

/// `PUT /Inventory/RedfishEndpoints/{xname}` (magellan's update): creates or replaces.
pub async fn put_endpoint(
    State(s): State<Store>,
    Path(id): Path<String>,
    Json(mut ep): Json<RedfishEndpoint>,
) -> Result<Json<RedfishEndpoint>, Problem> {
    let (id, _) = enums::normalize_xname(&id)?;
    if ep.id.is_empty() {
        ep.id.clone_from(&id);
    }
    if !ep.id.eq_ignore_ascii_case(&id) {
        return Err(Problem::bad_request(format!(
            "body ID {} does not match the URL {id}",
            ep.id
        )));
    }
    let ep = check_endpoint(ep)?;
    s.put_redfish_endpoint(ep.clone(), true).await?;
    super::magellan::derive(&s, &ep).await?;
    Ok(Json(ep))
}

pub async fn delete_all_endpoints(
    State(s): State<Store>,
    Query(q): Query<Pairs>,
) -> Result<Json<Value>, Problem> {
    allow_only(&q, "DELETE /Inventory/RedfishEndpoints", &[])?;
    deleted(s.delete_all_redfish_endpoints().await?)
}

pub async fn delete_all_interfaces(
    State(s): State<Store>,
    Query(q): Query<Pairs>,
) -> Result<Json<Value>, Problem> {
    allow_only(&q, "DELETE /Inventory/EthernetInterfaces", &[])?;
    deleted(s.delete_all_ethernet_interfaces().await?)
}

/// `GET /Inventory/RedfishEndpoints/Query/{xname}`: the endpoint itself, or every endpoint
/// below a parent xname (`s0` → its BMCs), as `{"RedfishEndpoints": […]}`.
async fn query_endpoint(
    State(s): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let (id, _) = enums::normalize_xname(&id)?;
    let list: Vec<RedfishEndpoint> = s
        .list_redfish_endpoints()
        .await?
        .into_iter()
        .filter(|e| {
            e.id == id
                || e.id
                    .strip_prefix(&id)
                    .and_then(|r| r.chars().next())
                    .is_some_and(|c| c.is_ascii_alphabetic())
        })
        .collect();
    if list.is_empty() {
        return Err(Problem::not_found(format!(
            "no RedfishEndpoint at or below {id}"
        )));
    }
    Ok(Json(json!({ "RedfishEndpoints": list })))
}

/// `GET /Inventory/EthernetInterfaces/{id}/IPAddresses`: the interface's address mappings.
async fn ip_addresses(
    State(s): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let id = super::interface_id(&id);
    let ei = s
        .get_ethernet_interface(id.clone())
        .await?
        .ok_or_else(|| Problem::not_found(format!("no EthernetInterface {id}")))?;
    Ok(Json(json!(ei.ip_addresses)))
}

async fn interface(s: &Store, id: &str) -> Result<crate::store::EthernetInterface, Problem> {
    let id = super::interface_id(id);
    s.get_ethernet_interface(id.clone())
        .await?
        .ok_or_else(|| Problem::not_found(format!("no EthernetInterface {id}")))
}

fn ipv4(ip: &str) -> Result<String, Problem> {
    ip.trim()
        .parse::<std::net::Ipv4Addr>()
        .map(|a| a.to_string())
        .map_err(|_| {
            Problem::bad_request(format!(
                "invalid IPAddress {ip:?}: expected an IPv4 address like 192.0.2.50"
            ))
        })
}

/// `POST …/{id}/IPAddresses` `{"IPAddress", "Network"}`: 201 `{"URI"}`, 409 if it is there.
/// The first address of an interface is its node's static DHCP lease.
async fn add_ip_address(
    State(s): State<Store>,
    Path(id): Path<String>,
    Json(m): Json<crate::store::IpAddressEntry>,
) -> Result<Response, Problem> {
    let mut ei = interface(&s, &id).await?;
    let ip = ipv4(&m.ip_address)?;
    if ei.ip_addresses.iter().any(|a| a.ip_address == ip) {
        return Err(Problem::conflict(format!("{} already has {ip}", ei.id)));
    }
    ei.ip_addresses.push(crate::store::IpAddressEntry {
        ip_address: ip.clone(),
        network: m.network,
    });
    let uri = format!(
        "/hsm/v2/Inventory/EthernetInterfaces/{}/IPAddresses/{ip}",
        ei.id
    );
    s.replace_ethernet_interface(ei).await?;
    Ok((StatusCode::CREATED, Json(json!({ "URI": uri }))).into_response())
}

/// `PATCH …/IPAddresses/{ip}` `{"Network"}`: the address's network.
async fn patch_ip_address(
    State(s): State<Store>,
    Path((id, ip)): Path<(String, String)>,
    Json(m): Json<Map<String, Value>>,
) -> Result<Json<Value>, Problem> {
    let mut ei = interface(&s, &id).await?;
    let ip = ipv4(&ip)?;
    let network = match m.get("Network") {
        Some(Value::String(n)) => n.clone(),
        _ => return Err(Problem::bad_request("Network (a string) is required")),
    };
    let Some(entry) = ei.ip_addresses.iter_mut().find(|a| a.ip_address == ip) else {
        return Err(Problem::not_found(format!("{} has no address {ip}", ei.id)));
    };
    entry.network = Some(network);
    let out = json!(entry);
    s.replace_ethernet_interface(ei).await?;
    Ok(Json(out))
}

async fn delete_ip_address(
    State(s): State<Store>,
    Path((id, ip)): Path<(String, String)>,
) -> Result<Json<Value>, Problem> {
    let mut ei = interface(&s, &id).await?;
    let ip = ipv4(&ip)?;
    let before = ei.ip_addresses.len();
    ei.ip_addresses.retain(|a| a.ip_address != ip);
    if ei.ip_addresses.len() == before {
        return Err(Problem::not_found(format!("{} has no address {ip}", ei.id)));
    }
    s.replace_ethernet_interface(ei).await?;
    Ok(Json(json!({"code": 0, "message": "deleted 1 entry"})))
}

/// MACs of a Systems/Managers entry, in rackboot's (`EthernetInterfaces[].MACAddress`) or
/// magellan's (`ethernet_interfaces[].mac`) shape.
fn entry_macs(e: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for (list, key) in [
        ("EthernetInterfaces", "MACAddress"),
        ("ethernet_interfaces", "mac"),
    ] {
        for nic in e.get(list).and_then(Value::as_array).into_iter().flatten() {
            if let Some(m) = nic.get(key).and_then(Value::as_str)
                && let Ok(m) = super::normalize_mac(m)
            {
                out.push(m);
            }
        }
    }
    out
}

fn first_text<'a>(e: &'a Map<String, Value>, keys: &[&str]) -> &'a str {
    keys.iter()
        .find_map(|k| text(e, k).filter(|v| !v.is_empty()))
        .unwrap_or("")
}

/// Lower-case hex UUIDs only: SMD's schema has a pattern for them, and a BMC's odd value is
/// better left out than served broken.
fn uuid(e: &Map<String, Value>) -> Option<String> {
    let u = first_text(e, &["UUID", "uuid"]).to_ascii_lowercase();
    let ok = u.len() == 36
        && u.bytes()
            .enumerate()
            .all(|(i, b)| matches!(i, 8 | 13 | 18 | 23) && b == b'-' || b.is_ascii_hexdigit());
    ok.then_some(u)
}

/// The ComponentEndpoints a RedfishEndpoint's discovery data describes.
pub fn component_endpoints(ep: &RedfishEndpoint) -> Vec<(String, Value)> {
    let fqdn = first_text(&ep.extra, &["FQDN", "Hostname", "IPAddress"]).to_owned();
    let enabled = ep
        .extra
        .get("Enabled")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let mut out = Vec::new();
    let systems = ep.extra.get("Systems").and_then(Value::as_array);
    for (i, sys) in systems.into_iter().flatten().enumerate() {
        let Some(sys) = sys.as_object() else { continue };
        let node = match text(sys, "Node") {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => format!("{}n{i}", ep.id),
        };
        let uri = first_text(sys, &["URI", "uri"]);
        let macs = entry_macs(sys);
        let mut ce = json!({
            "ID": node,
            "Type": "Node",
            "Domain": "",
            "FQDN": "",
            "Enabled": enabled,
            "RedfishType": "ComputerSystem",
            "RedfishSubtype": "Physical",
            "ComponentEndpointType": "ComponentEndpointComputerSystem",
            "MACAddr": macs.first().cloned().unwrap_or_default(),
            "OdataID": uri,
            "RedfishEndpointID": ep.id,
            "RedfishEndpointFQDN": fqdn,
            "RedfishURL": format!("{fqdn}{uri}"),
            "RedfishSystemInfo": {
                "Name": first_text(sys, &["Name", "name", "Model", "model"]),
                "EthernetNICInfo": macs.iter().map(|m| json!({"MACAddress": m})).collect::<Vec<_>>(),
            },
        });
        if let (Some(u), Some(o)) = (uuid(sys), ce.as_object_mut()) {
            o.insert("UUID".into(), u.into());
        }
        out.push((node, ce));
    }
    let manager = ep
        .extra
        .get("Managers")
        .and_then(Value::as_array)
        .and_then(|m| m.first())
        .and_then(Value::as_object);
    if let Some(m) = manager {
        let uri = first_text(m, &["URI", "uri"]);
        let mut macs = entry_macs(m);
        if macs.is_empty()
            && let Some(mac) = text(&ep.extra, "MACAddr").and_then(|x| super::normalize_mac(x).ok())
        {
            macs.push(mac);
        }
        let mut ce = json!({
            "ID": ep.id,
            "Type": first_text(&ep.extra, &["Type"]),
            "Domain": "",
            "FQDN": fqdn,
            "Enabled": enabled,
            "RedfishType": "Manager",
            "RedfishSubtype": "BMC",
            "ComponentEndpointType": "ComponentEndpointManager",
            "MACAddr": macs.first().cloned().unwrap_or_default(),
            "OdataID": uri,
            "RedfishEndpointID": ep.id,
            "RedfishEndpointFQDN": fqdn,
            "RedfishURL": format!("{fqdn}{uri}"),
            "RedfishManagerInfo": {
                "Name": first_text(m, &["Name", "name", "Model", "model"]),
                "EthernetNICInfo": macs.iter().map(|x| json!({"MACAddress": x})).collect::<Vec<_>>(),
            },
        });
        if let (Some(u), Some(o)) = (uuid(m), ce.as_object_mut()) {
            o.insert("UUID".into(), u.into());
        }
        out.push((ep.id.clone(), ce));
    }
    out
}

async fn all_component_endpoints(s: &Store) -> Result<Vec<(String, Value)>, Problem> {
    Ok(s.list_redfish_endpoints()
        .await?
        .iter()
        .flat_map(component_endpoints)
        .collect())
}

async fn list_component_endpoints(
    State(s): State<Store>,
    Query(q): Query<Pairs>,
) -> Result<Json<Value>, Problem> {
    allow_only(
        &q,
        "GET /Inventory/ComponentEndpoints",
        &["id", "redfish_ep", "type", "redfish_type"],
    )?;
    let own = |k: &str| {
        values(&q, k)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (ids, eps, types, rtypes) = (
        own("id"),
        own("redfish_ep"),
        own("type"),
        own("redfish_type"),
    );
    let list: Vec<Value> = all_component_endpoints(&s)
        .await?
        .into_iter()
        .map(|(_, ce)| ce)
        .filter(|ce| {
            let f = |k: &str| ce.get(k).and_then(Value::as_str);
            matches(&ids, f("ID"))
                && matches(&eps, f("RedfishEndpointID"))
                && matches(&types, f("Type"))
                && matches(&rtypes, f("RedfishType"))
        })
        .collect();
    Ok(Json(json!({ "ComponentEndpoints": list })))
}

async fn get_component_endpoint(
    State(s): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let (id, _) = enums::normalize_xname(&id)?;
    all_component_endpoints(&s)
        .await?
        .into_iter()
        .find(|(x, _)| *x == id)
        .map(|(_, ce)| Json(ce))
        .ok_or_else(|| Problem::not_found(format!("no ComponentEndpoint {id}")))
}

/// Removes the Systems/Managers entry behind a ComponentEndpoint from its RedfishEndpoint.
fn forget(ep: &mut RedfishEndpoint, id: &str) -> bool {
    let bmc = ep.id.clone();
    if id == bmc {
        return ep.extra.remove("Managers").is_some();
    }
    let Some(Value::Array(systems)) = ep.extra.get_mut("Systems") else {
        return false;
    };
    // Pin every derived name first: removing entry 0 must not rename entry 1 from n1 to n0.
    for (i, sys) in systems.iter_mut().enumerate() {
        if let Some(o) = sys.as_object_mut()
            && o.get("Node")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            o.insert("Node".into(), format!("{bmc}n{i}").into());
        }
    }
    let before = systems.len();
    systems.retain(|sys| sys.get("Node").and_then(Value::as_str) != Some(id));
    systems.len() != before
}

async fn delete_component_endpoint(
    State(s): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let (id, _) = enums::normalize_xname(&id)?;
    for mut ep in s.list_redfish_endpoints().await? {
        if forget(&mut ep, &id) {
            s.put_redfish_endpoint(ep, true).await?;
            return Ok(Json(json!({"code": 0, "message": "deleted 1 entry"})));
        }
    }
    Err(Problem::not_found(format!("no ComponentEndpoint {id}")))
}

async fn delete_all_component_endpoints(
    State(s): State<Store>,
    Query(q): Query<Pairs>,
) -> Result<Json<Value>, Problem> {
    allow_only(&q, "DELETE /Inventory/ComponentEndpoints", &[])?;
    let mut n = 0;
    for mut ep in s.list_redfish_endpoints().await? {
        let count = component_endpoints(&ep).len();
        if count > 0 {
            ep.extra.remove("Systems");
            ep.extra.remove("Managers");
            s.put_redfish_endpoint(ep, true).await?;
            n += count;
        }
    }
    deleted(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magellan_and_discovery_shapes_give_component_endpoints() {
        let ep: RedfishEndpoint = serde_json::from_value(json!({
            "ID": "x1000c0s1b0", "Type": "NodeBMC", "FQDN": "192.0.2.10",
            "Systems": [
                {"uri": "/redfish/v1/Systems/1", "uuid": "BF9362AD-B29C-40ED-9881-18A5DBA3A26B",
                 "ethernet_interfaces": [{"mac": "52:54:00:AA:00:01"}]},
                {"URI": "/redfish/v1/Systems/2", "Node": "x1000c0s1b0n7",
                 "EthernetInterfaces": [{"MACAddress": "52:54:00:aa:00:02"}]}
            ],
            "Managers": [{"uri": "/redfish/v1/Managers/1"}],
            "MACAddr": "52:54:00:aa:00:ff"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let ces = component_endpoints(&ep);
        let ids: Vec<&str> = ces.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["x1000c0s1b0n0", "x1000c0s1b0n7", "x1000c0s1b0"]);
        assert_eq!(ces[0].1["MACAddr"], "52:54:00:aa:00:01");
        assert_eq!(ces[0].1["UUID"], "bf9362ad-b29c-40ed-9881-18a5dba3a26b");
        assert_eq!(ces[2].1["MACAddr"], "52:54:00:aa:00:ff");
        let mut ep = ep;
        assert!(forget(&mut ep, "x1000c0s1b0n7"));
        assert!(!forget(&mut ep, "x1000c0s1b0n7"));
        assert_eq!(component_endpoints(&ep).len(), 2);
    }
}
