//! The field-replaceable units of a discovered system, for SMD's hardware inventory
//! (`/hsm/v2/Inventory/Hardware`, `HardwareByFRU`): its enclosure (the system's chassis), its
//! `Processors` and its `Memory`, each with model, serial and part number as the BMC reports them.
//!
//! Best effort: hardware inventory describes a node, it does not make it bootable, so a BMC
//! whose Processors or Memory collections fail is still recorded (the units it did report are
//! kept, the failure is logged). Collections are capped so a hostile BMC cannot make a
//! discovery crawl for ever.

use redfish::{Bmc, Res};
use serde_json::{Map, Value, json};

/// Most units read from one collection.
const MAX_UNITS: usize = 256;

const COMMON: &[&str] = &[
    "Id",
    "Name",
    "Manufacturer",
    "Model",
    "SerialNumber",
    "PartNumber",
    "SKU",
];
const PROCESSOR: &[&str] = &[
    "Socket",
    "ProcessorType",
    "ProcessorArchitecture",
    "InstructionSet",
    "MaxSpeedMHz",
    "TotalCores",
    "TotalThreads",
];
const MEMORY: &[&str] = &[
    "CapacityMiB",
    "MemoryType",
    "MemoryDeviceType",
    "BaseModuleType",
    "OperatingSpeedMhz",
    "DeviceLocator",
    "RankCount",
    "DataWidthBits",
    "BusWidthBits",
    "ErrorCorrection",
];
const CHASSIS: &[&str] = &["ChassisType", "AssetTag"];

/// The scalar fields `keys` of a Redfish resource (strings and numbers only).
fn pick(res: &Value, keys: &[&[&str]]) -> Map<String, Value> {
    let mut out = Map::new();
    for k in keys.iter().flat_map(|k| k.iter()) {
        if let Some(v @ (Value::String(_) | Value::Number(_))) = res.get(*k) {
            out.insert((*k).to_owned(), v.clone());
        }
    }
    // An empty slot says so in Status.State (Redfish "Absent").
    if let Some(state) = res.pointer("/Status/State").and_then(Value::as_str) {
        out.insert("State".into(), state.into());
    }
    out
}

async fn units(bmc: &Bmc, system: &Res, link: &str, keys: &[&str]) -> Vec<Value> {
    let Some(coll) = system.link(link) else {
        return Vec::new();
    };
    let mut members = match bmc.get(&coll).await {
        Ok(c) => c.members(),
        Err(e) => {
            tracing::info!(collection = %coll, error = %e, "hardware inventory: collection unreadable");
            return Vec::new();
        }
    };
    members.sort();
    members.truncate(MAX_UNITS);
    let mut out = Vec::new();
    for uri in members {
        match bmc.get(&uri).await {
            Ok(r) => {
                let mut m = pick(&r.0, &[COMMON, keys]);
                m.insert("URI".into(), uri.into());
                out.push(Value::Object(m));
            }
            Err(e) => {
                tracing::info!(resource = %uri, error = %e, "hardware inventory: unit unreadable")
            }
        }
    }
    out
}

/// `{"Enclosure": {…}, "Processors": […], "Memory": […]}` for one system.
pub(super) async fn crawl(bmc: &Bmc, system: &Res, chassis: Option<&Res>) -> Value {
    let enclosure = chassis.map(|c| Value::Object(pick(&c.0, &[COMMON, CHASSIS])));
    json!({
        "Enclosure": enclosure,
        "Processors": units(bmc, system, "Processors", PROCESSOR).await,
        "Memory": units(bmc, system, "Memory", MEMORY).await,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scalars_of_the_named_fields_are_kept() {
        let r = json!({"Id": "CPU0", "Model": "X", "TotalCores": 8, "Oem": {"a": 1},
                       "SerialNumber": null, "Status": {"State": "Enabled"}});
        let m = pick(&r, &[COMMON, PROCESSOR]);
        assert_eq!(
            Value::Object(m),
            json!({"Id": "CPU0", "Model": "X", "TotalCores": 8, "State": "Enabled"})
        );
    }
}
