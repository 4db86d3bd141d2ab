//! SMD's hardware inventory (`/Inventory/Hardware`, `/Inventory/HardwareByFRU`), derived from
//! what discovery stored in each RedfishEndpoint (`discovery/hardware.rs`): per node its
//! enclosure (`<slot>e0`), processors (`<node>p<k>`), memory (`<node>d<k>`), the node itself, and
//! the BMC. Like ComponentEndpoints it is not a table of its own: re-discovery refreshes it.
//!
//! FRU IDs follow SMD: `<Type>.<Manufacturer>.<PartNumber>.<SerialNumber>` with everything but
//! letters, digits, `-` and `_` dropped; a unit without a serial number gets `FRUIDfor<xname>`.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::query::{Pairs, allow_only, matches, values};
use crate::http::{Json, Problem};
use crate::store::{RedfishEndpoint, Store};

/// Routes added to the scoped SMD router (GETs; changes are refused in `unsupported.rs`).
pub fn router() -> Router<Store> {
    let refuse = super::unsupported::hardware_changes;
    Router::new()
        .route(
            "/hsm/v2/Inventory/Hardware",
            get(list_by_location).merge(refuse()),
        )
        .route(
            "/hsm/v2/Inventory/Hardware/{id}",
            get(by_location).merge(refuse()),
        )
        .route(
            "/hsm/v2/Inventory/HardwareByFRU",
            get(list_by_fru).merge(refuse()),
        )
        .route(
            "/hsm/v2/Inventory/HardwareByFRU/{fruid}",
            get(by_fru).merge(refuse()),
        )
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

fn fru_id(kind: &str, xname: &str, info: &Value) -> String {
    let serial = clean(text(info, "SerialNumber"));
    if serial.is_empty() {
        return format!("FRUIDfor{xname}");
    }
    format!(
        "{kind}.{}.{}.{serial}",
        clean(text(info, "Manufacturer")),
        clean(text(info, "PartNumber"))
    )
}

/// The `<Type>FRUInfo` object: the unit's scalar fields without the location-only ones.
fn fru_info(unit: &Value) -> Value {
    let mut m: Map<String, Value> = unit.as_object().cloned().unwrap_or_default();
    for k in ["Id", "Name", "URI", "State", "Socket", "DeviceLocator"] {
        m.remove(k);
    }
    Value::Object(m)
}

/// One location and the FRU in it. `loc_name`/`fru_name` are SMD's discriminator suffixes
/// (`Node`, `Processor`, …) and the names of its `*LocationInfo`/`*FRUInfo` members.
fn location(id: &str, kind: &str, ordinal: usize, unit: &Value, loc_info: Value) -> Value {
    let empty = matches!(text(unit, "State"), "Absent");
    let mut loc = json!({
        "ID": id,
        "Type": kind,
        "Ordinal": ordinal,
        "Status": if empty { "Empty" } else { "Populated" },
        "HWInventoryByLocationType": format!("HWInvByLoc{kind}"),
    });
    let info_key = match kind {
        "Processor" => "ProcessorLocationInfo",
        "Memory" => "MemoryLocationInfo",
        "NodeEnclosure" => "NodeEnclosureLocationInfo",
        "NodeBMC" => "NodeBMCLocationInfo",
        _ => "NodeLocationInfo",
    };
    if let Some(o) = loc.as_object_mut() {
        o.insert(info_key.into(), loc_info);
        if !empty {
            o.insert("PopulatedFRU".into(), fru(id, kind, unit));
        }
    }
    loc
}

fn fru(id: &str, kind: &str, unit: &Value) -> Value {
    let info = fru_info(unit);
    let mut f = json!({
        "FRUID": fru_id(kind, id, &info),
        "Type": kind,
        "FRUSubtype": "",
        "HWInventoryByFRUType": format!("HWInvByFRU{kind}"),
    });
    if let Some(o) = f.as_object_mut() {
        o.insert(format!("{kind}FRUInfo"), info);
    }
    f
}

fn loc_info(unit: &Value) -> Value {
    json!({"Id": text(unit, "Id"), "Name": text(unit, "Name")})
}

/// Every hardware location one RedfishEndpoint's discovery data describes.
pub fn locations(ep: &RedfishEndpoint) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(m) = ep
        .extra
        .get("Managers")
        .and_then(Value::as_array)
        .and_then(|m| m.first())
        .filter(|m| m.get("SerialNumber").is_some() || m.get("Model").is_some())
    {
        out.push(location(&ep.id, "NodeBMC", 0, m, loc_info(m)));
    }
    let systems = ep.extra.get("Systems").and_then(Value::as_array);
    for (i, sys) in systems.into_iter().flatten().enumerate() {
        let Some(node) = sys.get("Node").and_then(Value::as_str) else {
            continue;
        };
        let Some(hw) = sys.get("Hardware").filter(|h| h.is_object()) else {
            continue;
        };
        let procs = hw.get("Processors").and_then(Value::as_array);
        let mems = hw.get("Memory").and_then(Value::as_array);
        let node_unit = json!({
            "Manufacturer": text(sys, "Manufacturer"), "Model": text(sys, "Model"),
            "SerialNumber": text(sys, "SerialNumber"), "BiosVersion": text(sys, "BiosVersion"),
            "UUID": text(sys, "UUID"),
        });
        let mut node_unit = node_unit;
        if let Some(o) = node_unit.as_object_mut() {
            // SMD's schema gives UUID a pattern: an odd value is left out, not served broken.
            o.retain(|k, v| {
                !(v.as_str() == Some("") || k == "UUID" && !v.as_str().is_some_and(looks_like_uuid))
            });
        }
        let total_mib: i64 = mems
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("CapacityMiB").and_then(Value::as_i64))
            .sum();
        let node_loc = json!({
            "Id": text(sys, "URI").rsplit('/').find(|s| !s.is_empty()).unwrap_or(""),
            "Name": node,
            "ProcessorSummary": {"Count": procs.map_or(0, Vec::len),
                                 "Model": procs.and_then(|p| p.first()).map_or("", |p| text(p, "Model"))},
            "MemorySummary": {"TotalSystemMemoryGiB": total_mib / 1024},
        });
        out.push(location(node, "Node", i, &node_unit, node_loc));
        if let Some(enc) = hw.get("Enclosure").filter(|e| e.is_object()) {
            // The enclosure sits in the BMC's slot: x1000c0s3b0 → x1000c0s3e0.
            if let Some(slot) = ep.id.rfind('b').and_then(|b| ep.id.get(..b)) {
                let id = format!("{slot}e0");
                out.push(location(&id, "NodeEnclosure", 0, enc, loc_info(enc)));
            }
        }
        for (k, p) in procs.into_iter().flatten().enumerate() {
            let mut li = loc_info(p);
            if let Some(o) = li.as_object_mut() {
                o.insert("Socket".into(), text(p, "Socket").into());
            }
            out.push(location(&format!("{node}p{k}"), "Processor", k, p, li));
        }
        for (k, m) in mems.into_iter().flatten().enumerate() {
            let mut li = loc_info(m);
            if let Some(o) = li.as_object_mut() {
                o.insert(
                    "MemoryLocation".into(),
                    json!({"Socket": 0, "MemoryController": 0, "Channel": 0, "Slot": k}),
                );
            }
            out.push(location(&format!("{node}d{k}"), "Memory", k, m, li));
        }
    }
    out
}

fn looks_like_uuid(u: &str) -> bool {
    u.len() == 36
        && u.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
            }
        })
}

async fn all(s: &Store) -> Result<Vec<Value>, Problem> {
    Ok(s.list_redfish_endpoints()
        .await?
        .iter()
        .flat_map(locations)
        .collect())
}

fn fru_matches(f: &Value, q: &[(String, String)]) -> bool {
    let kind = text(f, "Type");
    let info = f.get(format!("{kind}FRUInfo")).unwrap_or(&Value::Null);
    let own = |k: &str| {
        values(q, k)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    matches(&own("fruid"), Some(text(f, "FRUID")))
        && matches(&own("manufacturer"), Some(text(info, "Manufacturer")))
        && matches(&own("partnumber"), Some(text(info, "PartNumber")))
        && matches(&own("serialnumber"), Some(text(info, "SerialNumber")))
}

async fn list_by_location(
    State(s): State<Store>,
    Query(q): Query<Pairs>,
) -> Result<Json<Vec<Value>>, Problem> {
    allow_only(
        &q,
        "GET /Inventory/Hardware",
        &[
            "id",
            "type",
            "manufacturer",
            "partnumber",
            "serialnumber",
            "fruid",
        ],
    )?;
    let own = |k: &str| {
        values(&q, k)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (ids, types) = (own("id"), own("type"));
    let fru_filters: Vec<(String, String)> = q
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("id") && !k.eq_ignore_ascii_case("type"))
        .cloned()
        .collect();
    Ok(Json(
        all(&s)
            .await?
            .into_iter()
            .filter(|l| {
                matches(&ids, Some(text(l, "ID")))
                    && matches(&types, Some(text(l, "Type")))
                    && (fru_filters.is_empty()
                        || l.get("PopulatedFRU")
                            .is_some_and(|f| fru_matches(f, &fru_filters)))
            })
            .collect(),
    ))
}

async fn by_location(
    State(s): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let id = super::enums::loose_xname(&id)?;
    all(&s)
        .await?
        .into_iter()
        .find(|l| text(l, "ID") == id)
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no hardware at {id}")))
}

fn frus(locs: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for l in locs {
        if let Some(f) = l.get("PopulatedFRU")
            && !out.iter().any(|o| o.get("FRUID") == f.get("FRUID"))
        {
            out.push(f.clone());
        }
    }
    out
}

async fn list_by_fru(
    State(s): State<Store>,
    Query(q): Query<Pairs>,
) -> Result<Json<Vec<Value>>, Problem> {
    allow_only(
        &q,
        "GET /Inventory/HardwareByFRU",
        &[
            "fruid",
            "type",
            "manufacturer",
            "partnumber",
            "serialnumber",
        ],
    )?;
    let types: Vec<String> = values(&q, "type").into_iter().map(str::to_owned).collect();
    Ok(Json(
        frus(all(&s).await?)
            .into_iter()
            .filter(|f| matches(&types, Some(text(f, "Type"))) && fru_matches(f, &q))
            .collect(),
    ))
}

async fn by_fru(State(s): State<Store>, Path(fruid): Path<String>) -> Result<Json<Value>, Problem> {
    frus(all(&s).await?)
        .into_iter()
        .find(|f| text(f, "FRUID") == fruid)
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no FRU {fruid}")))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn discovery_data_becomes_locations_and_frus() {
        let ep: RedfishEndpoint = serde_json::from_value(json!({
            "ID": "x1000c0s3b0",
            "Managers": [{"Model": "iDRAC", "SerialNumber": "BMC1", "Manufacturer": "Dell Inc."}],
            "Systems": [{"Node": "x1000c0s3b0n0", "URI": "/redfish/v1/Systems/1", "Model": "R650",
                "Manufacturer": "Dell Inc.", "SerialNumber": "SYS1", "UUID": "nope",
                "Hardware": {
                    "Enclosure": {"Id": "1", "Model": "R650", "SerialNumber": "CH1", "PartNumber": "P-1"},
                    "Processors": [{"Id": "CPU.1", "Model": "Xeon", "Manufacturer": "Intel(R) Corporation",
                                    "SerialNumber": "C1", "PartNumber": "PN 9", "TotalCores": 32}],
                    "Memory": [{"Id": "DIMM.A1", "CapacityMiB": 32768, "SerialNumber": "M1"},
                               {"Id": "DIMM.A2", "State": "Absent"}]
                }}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let locs = locations(&ep);
        let ids: Vec<&str> = locs.iter().map(|l| text(l, "ID")).collect();
        assert_eq!(
            ids,
            [
                "x1000c0s3b0",
                "x1000c0s3b0n0",
                "x1000c0s3e0",
                "x1000c0s3b0n0p0",
                "x1000c0s3b0n0d0",
                "x1000c0s3b0n0d1"
            ]
        );
        let cpu = &locs[3]["PopulatedFRU"];
        assert_eq!(cpu["FRUID"], "Processor.IntelRCorporation.PN9.C1");
        assert_eq!(cpu["ProcessorFRUInfo"]["TotalCores"], 32);
        assert_eq!(locs[5]["Status"], "Empty");
        assert!(locs[5].get("PopulatedFRU").is_none());
        assert!(locs[1]["PopulatedFRU"]["NodeFRUInfo"].get("UUID").is_none());
        assert_eq!(
            locs[1]["NodeLocationInfo"]["MemorySummary"]["TotalSystemMemoryGiB"],
            32
        );
        assert_eq!(frus(locs).len(), 5);
    }
}
