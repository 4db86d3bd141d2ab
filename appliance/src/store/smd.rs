//! SMD inventory tables: Components, EthernetInterfaces, RedfishEndpoints, groups.
//!
//! Objects are stored as JSON documents (SMD's own field names) next to the indexed columns the
//! lookups need, so unknown fields a client sends survive a round trip.

use std::net::Ipv4Addr;

use pxe_core::MacAddr;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Store, StoreError};

/// An SMD Component (`/hsm/v2/State/Components`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(rename = "State", default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(rename = "Flag", default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    #[serde(rename = "Enabled", default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(rename = "Role", default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(rename = "SubRole", default, skip_serializing_if = "Option::is_none")]
    pub sub_role: Option<String>,
    #[serde(rename = "NID", default, skip_serializing_if = "Option::is_none")]
    pub nid: Option<i64>,
    #[serde(rename = "Arch", default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(rename = "Class", default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One `IPAddresses` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpAddressEntry {
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    #[serde(rename = "Network", default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// An SMD EthernetInterface (`/hsm/v2/Inventory/EthernetInterfaces`). Drives static leases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EthernetInterface {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(
        rename = "Description",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub description: Option<String>,
    #[serde(rename = "MACAddress")]
    pub mac_address: String,
    #[serde(rename = "IPAddresses", default)]
    pub ip_addresses: Vec<IpAddressEntry>,
    #[serde(
        rename = "LastUpdate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_update: Option<String>,
    #[serde(
        rename = "ComponentID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub component_id: Option<String>,
    #[serde(rename = "Type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An SMD RedfishEndpoint, stored as given (magellan's POST shape included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedfishEndpoint {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A static DHCP reservation derived from the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub xname: String,
    /// `nid%04d` when the component has a NID (OpenCHAMI's default hostname), else the xname.
    pub hostname: String,
    pub nid: Option<i64>,
}

impl Store {
    /// Upserts components (SMD POST `/State/Components` and PUT `/{xname}`).
    pub async fn put_components(&self, comps: Vec<Component>) -> Result<(), StoreError> {
        self.write_inventory(move |tx| {
            for c in &comps {
                tx.execute(
                    "INSERT INTO components (id, nid, doc) VALUES (?1, ?2, ?3)
                     ON CONFLICT(id) DO UPDATE SET nid = excluded.nid, doc = excluded.doc",
                    params![c.id, c.nid, serde_json::to_string(c)?],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// Writes what one BMC's discovery found, in one transaction: the RedfishEndpoint (upsert),
    /// the Components (upsert) and the EthernetInterfaces (an existing row with the same ID or
    /// MAC is replaced, never duplicated).
    pub async fn apply_discovery(
        &self,
        endpoint: RedfishEndpoint,
        comps: Vec<Component>,
        interfaces: Vec<EthernetInterface>,
    ) -> Result<(), StoreError> {
        let push = self.pushes_upstream();
        self.write_inventory(move |tx| {
            tx.execute(
                "INSERT INTO redfish_endpoints (id, doc) VALUES (?1, ?2)
                 ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
                params![endpoint.id, serde_json::to_string(&endpoint)?],
            )?;
            if push {
                super::outbox::enqueue(
                    tx,
                    "RedfishEndpoint",
                    &endpoint.id,
                    &serde_json::to_value(&endpoint)?,
                )?;
            }
            for c in &comps {
                tx.execute(
                    "INSERT INTO components (id, nid, doc) VALUES (?1, ?2, ?3)
                     ON CONFLICT(id) DO UPDATE SET nid = excluded.nid, doc = excluded.doc",
                    params![c.id, c.nid, serde_json::to_string(c)?],
                )?;
            }
            for ei in &interfaces {
                tx.execute(
                    "DELETE FROM ethernet_interfaces WHERE id = ?1 OR mac = ?2",
                    params![ei.id, ei.mac_address],
                )?;
                put_ei(tx, ei)?;
            }
            Ok(())
        })
        .await
    }

    pub async fn get_component(&self, id: String) -> Result<Option<Component>, StoreError> {
        self.read(move |c| doc_by_key(c, "SELECT doc FROM components WHERE id = ?1", id))
            .await
    }

    pub async fn list_components(&self) -> Result<Vec<Component>, StoreError> {
        self.read(|c| docs(c, "SELECT doc FROM components ORDER BY id"))
            .await
    }

    pub async fn delete_component(&self, id: String) -> Result<bool, StoreError> {
        self.write_inventory(move |tx| {
            Ok(tx.execute("DELETE FROM components WHERE id = ?1", [id])? > 0)
        })
        .await
    }

    /// Inserts an EthernetInterface; an existing ID or MAC is a conflict (SMD answers 409).
    pub async fn insert_ethernet_interface(&self, ei: EthernetInterface) -> Result<(), StoreError> {
        self.write_inventory(move |tx| {
            let exists: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM ethernet_interfaces WHERE id = ?1 OR mac = ?2)",
                params![ei.id, ei.mac_address],
                |r| r.get(0),
            )?;
            if exists {
                return Err(StoreError::Conflict(format!(
                    "an EthernetInterface with ID {} / MAC {} already exists",
                    ei.id, ei.mac_address
                )));
            }
            put_ei(tx, &ei)
        })
        .await
    }

    /// Replaces an existing EthernetInterface (after a PATCH merge).
    pub async fn replace_ethernet_interface(
        &self,
        ei: EthernetInterface,
    ) -> Result<(), StoreError> {
        self.write_inventory(move |tx| {
            tx.execute("DELETE FROM ethernet_interfaces WHERE id = ?1", [&ei.id])?;
            put_ei(tx, &ei)
        })
        .await
    }

    pub async fn get_ethernet_interface(
        &self,
        id: String,
    ) -> Result<Option<EthernetInterface>, StoreError> {
        self.read(move |c| doc_by_key(c, "SELECT doc FROM ethernet_interfaces WHERE id = ?1", id))
            .await
    }

    pub async fn list_ethernet_interfaces(&self) -> Result<Vec<EthernetInterface>, StoreError> {
        self.read(|c| docs(c, "SELECT doc FROM ethernet_interfaces ORDER BY id"))
            .await
    }

    pub async fn delete_ethernet_interface(&self, id: String) -> Result<bool, StoreError> {
        self.write_inventory(move |tx| {
            Ok(tx.execute("DELETE FROM ethernet_interfaces WHERE id = ?1", [id])? > 0)
        })
        .await
    }

    /// Inserts (`replace = false`: 409 if it exists) or upserts a RedfishEndpoint.
    pub async fn put_redfish_endpoint(
        &self,
        ep: RedfishEndpoint,
        replace: bool,
    ) -> Result<(), StoreError> {
        let push = self.pushes_upstream();
        self.write_inventory(move |tx| {
            let doc = serde_json::to_string(&ep)?;
            if push {
                super::outbox::enqueue(tx, "RedfishEndpoint", &ep.id, &serde_json::to_value(&ep)?)?;
            }
            if replace {
                tx.execute(
                    "INSERT INTO redfish_endpoints (id, doc) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
                    params![ep.id, doc],
                )?;
            } else {
                let n = tx.execute("INSERT OR IGNORE INTO redfish_endpoints (id, doc) VALUES (?1, ?2)", params![ep.id, doc])?;
                if n == 0 {
                    return Err(StoreError::Conflict(format!("RedfishEndpoint {} already exists", ep.id)));
                }
            }
            Ok(())
        })
        .await
    }

    /// Inserts several endpoints in one transaction: one that exists already is a conflict and
    /// nothing is written (SMD's bulk POST).
    pub async fn insert_redfish_endpoints(
        &self,
        eps: Vec<RedfishEndpoint>,
    ) -> Result<(), StoreError> {
        let push = self.pushes_upstream();
        self.write_inventory(move |tx| {
            for ep in &eps {
                let doc = serde_json::to_string(ep)?;
                let n = tx.execute(
                    "INSERT OR IGNORE INTO redfish_endpoints (id, doc) VALUES (?1, ?2)",
                    params![ep.id, doc],
                )?;
                if n == 0 {
                    return Err(StoreError::Conflict(format!(
                        "RedfishEndpoint {} already exists",
                        ep.id
                    )));
                }
                if push {
                    super::outbox::enqueue(
                        tx,
                        "RedfishEndpoint",
                        &ep.id,
                        &serde_json::to_value(ep)?,
                    )?;
                }
            }
            Ok(())
        })
        .await
    }

    pub async fn get_redfish_endpoint(
        &self,
        id: String,
    ) -> Result<Option<RedfishEndpoint>, StoreError> {
        self.read(move |c| doc_by_key(c, "SELECT doc FROM redfish_endpoints WHERE id = ?1", id))
            .await
    }

    pub async fn list_redfish_endpoints(&self) -> Result<Vec<RedfishEndpoint>, StoreError> {
        self.read(|c| docs(c, "SELECT doc FROM redfish_endpoints ORDER BY id"))
            .await
    }

    pub async fn delete_redfish_endpoint(&self, id: String) -> Result<bool, StoreError> {
        self.write_inventory(move |tx| {
            Ok(tx.execute("DELETE FROM redfish_endpoints WHERE id = ?1", [id])? > 0)
        })
        .await
    }

    /// Static DHCP reservations: EthernetInterfaces with an IP, joined to their Component.
    pub async fn reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT e.mac, e.ip, e.component_id, comp.nid FROM ethernet_interfaces e
                 LEFT JOIN components comp ON comp.id = e.component_id
                 WHERE e.ip IS NOT NULL AND e.ip != ''",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (mac, ip, xname, nid): (String, String, Option<String>, Option<i64>) = row?;
                let (Ok(mac), Ok(ip)) = (mac.parse::<MacAddr>(), ip.parse::<Ipv4Addr>()) else {
                    continue;
                };
                let xname = xname.unwrap_or_default();
                let hostname = match nid {
                    Some(n) => format!("nid{n:04}"),
                    None if !xname.is_empty() => xname.clone(),
                    None => format!("node-{}", mac.to_string().replace(':', "")),
                };
                out.push(Reservation {
                    mac,
                    ip,
                    xname,
                    hostname,
                    nid,
                });
            }
            Ok(out)
        })
        .await
    }

    /// The node (xname, NID) an interface MAC belongs to.
    pub async fn node_for_mac(
        &self,
        mac: MacAddr,
    ) -> Result<Option<(String, Option<i64>)>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT e.component_id, comp.nid FROM ethernet_interfaces e
                 LEFT JOIN components comp ON comp.id = e.component_id
                 WHERE e.mac = ?1 AND e.component_id IS NOT NULL",
                [mac.to_string()],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?)),
            )
            .optional()?)
        })
        .await
    }
}

fn put_ei(tx: &rusqlite::Transaction<'_>, ei: &EthernetInterface) -> Result<(), StoreError> {
    let ip = ei.ip_addresses.first().map(|a| a.ip_address.clone());
    tx.execute(
        "INSERT INTO ethernet_interfaces (id, mac, component_id, ip, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![ei.id, ei.mac_address, ei.component_id, ip, serde_json::to_string(ei)?],
    )
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            StoreError::Conflict(format!("MAC {} is already used by another EthernetInterface", ei.mac_address))
        }
        other => other.into(),
    })?;
    Ok(())
}

/// The JSON document of the row `sql` selects by one key, if any.
fn doc_by_key<T: serde::de::DeserializeOwned>(
    c: &rusqlite::Connection,
    sql: &str,
    key: String,
) -> Result<Option<T>, StoreError> {
    let doc: Option<String> = c.query_row(sql, [key], |r| r.get(0)).optional()?;
    Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
}

/// Every JSON document of an inventory table (`components`, `ethernet_interfaces`, …), by id.
pub(super) fn all_docs<T: serde::de::DeserializeOwned>(
    c: &rusqlite::Connection,
    table: &'static str,
) -> Result<Vec<T>, StoreError> {
    docs(c, &format!("SELECT doc FROM {table} ORDER BY id"))
}

fn docs<T: serde::de::DeserializeOwned>(
    c: &rusqlite::Connection,
    sql: &str,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = c.prepare(sql)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for doc in rows {
        out.push(serde_json::from_str(&doc?)?);
    }
    Ok(out)
}

/// An SMD group (`/hsm/v2/groups`), stored as given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub members: GroupMembers,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMembers {
    #[serde(default)]
    pub ids: Vec<String>,
}

impl Store {
    /// Inserts (`replace = false`: conflict if it exists) or replaces a group.
    pub async fn put_group(&self, g: Group, replace: bool) -> Result<(), StoreError> {
        self.write_inventory(move |tx| {
            let doc = serde_json::to_string(&g)?;
            if replace {
                tx.execute(
                    "INSERT INTO groups (label, doc) VALUES (?1, ?2) ON CONFLICT(label) DO UPDATE SET doc = excluded.doc",
                    params![g.label, doc],
                )?;
            } else if tx.execute("INSERT OR IGNORE INTO groups (label, doc) VALUES (?1, ?2)", params![g.label, doc])? == 0 {
                return Err(StoreError::Conflict(format!("group {} already exists", g.label)));
            }
            Ok(())
        })
        .await
    }

    /// Reads, changes and writes group `label` in one transaction (concurrent member updates
    /// never lose each other's changes). Returns the group as stored.
    pub async fn update_group<F>(&self, label: String, change: F) -> Result<Group, StoreError>
    where
        F: FnOnce(&mut Group) -> Result<(), StoreError> + Send + 'static,
    {
        self.write_inventory(move |tx| {
            let mut g: Group =
                doc_by_key(tx, "SELECT doc FROM groups WHERE label = ?1", label.clone())?
                    .ok_or_else(|| StoreError::NotFound(format!("no group {label}")))?;
            change(&mut g)?;
            g.label = label;
            tx.execute(
                "UPDATE groups SET doc = ?2 WHERE label = ?1",
                params![g.label, serde_json::to_string(&g)?],
            )?;
            Ok(g)
        })
        .await
    }

    pub async fn get_group(&self, label: String) -> Result<Option<Group>, StoreError> {
        self.read(move |c| doc_by_key(c, "SELECT doc FROM groups WHERE label = ?1", label))
            .await
    }

    pub async fn list_groups(&self) -> Result<Vec<Group>, StoreError> {
        self.read(|c| docs(c, "SELECT doc FROM groups ORDER BY label"))
            .await
    }

    pub async fn delete_group(&self, label: String) -> Result<bool, StoreError> {
        self.write_inventory(move |tx| {
            Ok(tx.execute("DELETE FROM groups WHERE label = ?1", [label])? > 0)
        })
        .await
    }
}
