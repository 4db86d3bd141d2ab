//! Crawling one BMC: service root, log-in, Systems (with their Chassis: Location and, where a
//! system has no EthernetInterfaces, the NetworkAdapters' ports) and Managers. Nothing is
//! written here; `record.rs` stores what a crawl found.

use redfish::{Bmc, Res};
use serde_json::{Map, Value};

use super::{Discovery, host_of};

/// What a crawl of one BMC found (nothing written yet).
#[derive(Debug, Clone)]
pub(super) struct Crawl {
    pub(super) base: String,
    pub(super) host: String,
    pub(super) redfish_version: Option<String>,
    pub(super) bmc_mac: Option<String>,
    pub(super) manager: Map<String, Value>,
    pub(super) systems: Vec<System>,
    pub(super) cert_sha256: Option<String>,
    pub(super) user: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) struct System {
    pub(super) uri: String,
    pub(super) uuid: Option<String>,
    pub(super) model: Option<String>,
    pub(super) manufacturer: Option<String>,
    pub(super) serial: Option<String>,
    pub(super) bios: Option<String>,
    pub(super) power: Option<String>,
    pub(super) reset_types: Vec<String>,
    pub(super) macs: Vec<String>,
    /// Where the MACs came from: `EthernetInterfaces` or `NetworkAdapters`.
    pub(super) macs_from: &'static str,
    /// The system's chassis and its `Location` (slot for the location xname rule).
    pub(super) chassis: Option<String>,
    pub(super) location: Option<Value>,
    pub(super) slot: Option<u32>,
    /// `SerialConsole` / `GraphicalConsole` as advertised by the system.
    pub(super) consoles: Map<String, Value>,
    /// Enclosure, processors and memory for SMD's hardware inventory (`hardware.rs`).
    pub(super) hardware: Value,
}

impl Discovery {
    pub(super) async fn crawl(&self, base: &str, insecure: bool) -> Result<Crawl, String> {
        let mut bmc = self.connect(base, insecure).await?;
        let result = async {
            let root = bmc.service_root().await.map_err(|e| e.to_string())?;
            // A lone chassis stands for systems that do not link theirs.
            let lone_chassis = match root.link("Chassis") {
                Some(coll) => {
                    let m = bmc.get(&coll).await.map_err(|e| e.to_string())?.members();
                    if m.len() == 1 {
                        m.into_iter().next()
                    } else {
                        None
                    }
                }
                None => None,
            };
            let mut systems = Vec::new();
            if let Some(coll) = root.link("Systems") {
                let mut members = bmc.get(&coll).await.map_err(|e| e.to_string())?.members();
                members.sort();
                for uri in members {
                    let s = bmc.get(&uri).await.map_err(|e| e.to_string())?;
                    let mut macs = nic_macs(&bmc, &s).await?;
                    let mut macs_from = "EthernetInterfaces";
                    let chassis_uri =
                        s.0.pointer("/Links/Chassis/0")
                            .and_then(redfish::model::odata_id)
                            .or_else(|| lone_chassis.clone());
                    let chassis = match &chassis_uri {
                        Some(u) => Some(bmc.get(u).await.map_err(|e| e.to_string())?),
                        None => None,
                    };
                    if macs.is_empty()
                        && let Some(ch) = &chassis
                    {
                        macs = adapter_macs(&bmc, ch).await?;
                        macs_from = "NetworkAdapters";
                    }
                    let location = chassis
                        .as_ref()
                        .and_then(|c| c.0.get("Location"))
                        .filter(|l| l.is_object())
                        .cloned();
                    let slot = location.as_ref().and_then(location_slot);
                    let mut consoles = Map::new();
                    for k in ["SerialConsole", "GraphicalConsole", "CommandShell"] {
                        if let Some(v) = s.0.get(k).filter(|v| v.is_object()) {
                            consoles.insert(k.to_owned(), v.clone());
                        }
                    }
                    let hardware = super::hardware::crawl(&bmc, &s, chassis.as_ref()).await;
                    systems.push(System {
                        hardware,
                        macs_from,
                        chassis: chassis_uri,
                        location,
                        slot,
                        consoles,
                        uuid: s.str("UUID"),
                        model: s.str("Model"),
                        manufacturer: s.str("Manufacturer"),
                        serial: s.str("SerialNumber"),
                        bios: s.str("BiosVersion"),
                        power: s.str("PowerState"),
                        reset_types: s.reset_types(),
                        macs,
                        uri,
                    });
                }
            }
            let mut manager = Map::new();
            let mut bmc_mac = None;
            if let Some(coll) = root.link("Managers")
                && let Some(uri) = bmc
                    .get(&coll)
                    .await
                    .map_err(|e| e.to_string())?
                    .members()
                    .first()
            {
                let m = bmc.get(uri).await.map_err(|e| e.to_string())?;
                bmc_mac = nic_macs(&bmc, &m).await?.into_iter().next();
                for k in [
                    "Model",
                    "FirmwareVersion",
                    "ManagerType",
                    "UUID",
                    "Manufacturer",
                    "SerialNumber",
                    "PartNumber",
                ] {
                    if let Some(v) = m.str(k) {
                        manager.insert(k.to_owned(), Value::String(v));
                    }
                }
                // Console access (serial-over-LAN, KVM, shell) as the BMC advertises it.
                for k in ["SerialConsole", "GraphicalConsole", "CommandShell"] {
                    if let Some(v) = m.0.get(k).filter(|v| v.is_object()) {
                        manager.insert(k.to_owned(), v.clone());
                    }
                }
                manager.insert("URI".into(), Value::String(uri.clone()));
            }
            Ok::<_, String>((root, systems, manager, bmc_mac))
        }
        .await;
        bmc.logout().await;
        let (root, systems, manager, bmc_mac) = result?;
        Ok(Crawl {
            base: base.to_owned(),
            host: host_of(base),
            redfish_version: root.str("RedfishVersion"),
            bmc_mac,
            manager,
            systems,
            cert_sha256: bmc.certificate_sha256(),
            user: self.credentials(&host_of(base)).await.map(|c| c.username),
        })
    }
}

/// Every MAC of a System or Manager (its EthernetInterfaces; for systems without any, the
/// NetworkAdapters' ports are not read yet).
async fn nic_macs(bmc: &Bmc, res: &Res) -> Result<Vec<String>, String> {
    let Some(coll) = res.link("EthernetInterfaces") else {
        return Ok(Vec::new());
    };
    let mut members = bmc.get(&coll).await.map_err(|e| e.to_string())?.members();
    members.sort();
    let mut macs = Vec::new();
    for m in members {
        if let Some(mac) = bmc.get(&m).await.map_err(|e| e.to_string())?.mac()
            && !macs.contains(&mac)
        {
            macs.push(mac);
        }
    }
    Ok(macs)
}

/// NIC MACs from a chassis's NetworkAdapters, for systems without EthernetInterfaces:
/// NetworkDeviceFunctions (`Ethernet.MACAddress`), Ports (`Ethernet.AssociatedMACAddresses`)
/// and the older NetworkPorts (`AssociatedNetworkAddresses`).
async fn adapter_macs(bmc: &Bmc, chassis: &Res) -> Result<Vec<String>, String> {
    let Some(coll) = chassis.link("NetworkAdapters") else {
        return Ok(Vec::new());
    };
    let mut adapters = bmc.get(&coll).await.map_err(|e| e.to_string())?.members();
    adapters.sort();
    let mut macs = Vec::new();
    let mut add = |v: Option<&Value>| {
        let list = match v {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>(),
            Some(Value::String(m)) => vec![m.as_str()],
            _ => Vec::new(),
        };
        for m in list.into_iter().filter_map(redfish::model::normalize_mac) {
            if !macs.contains(&m) {
                macs.push(m);
            }
        }
    };
    for a in adapters {
        let adapter = bmc.get(&a).await.map_err(|e| e.to_string())?;
        for (coll, pointers) in [
            (
                "NetworkDeviceFunctions",
                &["/Ethernet/MACAddress", "/Ethernet/PermanentMACAddress"][..],
            ),
            ("Ports", &["/Ethernet/AssociatedMACAddresses"][..]),
            ("NetworkPorts", &["/AssociatedNetworkAddresses"][..]),
        ] {
            let Some(uri) = adapter.link(coll) else {
                continue;
            };
            let mut members = bmc.get(&uri).await.map_err(|e| e.to_string())?.members();
            members.sort();
            for m in members {
                let r = bmc.get(&m).await.map_err(|e| e.to_string())?;
                for p in pointers {
                    add(r.0.pointer(p));
                }
            }
        }
    }
    Ok(macs)
}

/// The slot number in a Redfish `Location`: `PartLocation.LocationOrdinalValue` when the
/// location type is a slot (or unstated).
fn location_slot(location: &Value) -> Option<u32> {
    let part = location.get("PartLocation")?;
    let kind = part.get("LocationType").and_then(Value::as_str);
    if kind.is_some_and(|k| k != "Slot" && k != "Bay") {
        return None;
    }
    let n = part.get("LocationOrdinalValue")?;
    n.as_u64()
        .or_else(|| n.as_str().and_then(|s| s.trim().parse().ok()))
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n < 4096)
}
