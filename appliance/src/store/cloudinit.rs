//! cloud-init documents: cluster defaults (one), groups and per-node data, as JSON, plus the
//! node lookups the cloud-init routes need.

use std::net::Ipv4Addr;

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// The key of the one cluster-defaults document (OpenCHAMI's cloud-init calls it "cluster").
pub const CLOUD_INIT_DEFAULTS_KEY: &str = "cluster";

/// Which kind of cloud-init document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiKind {
    Defaults,
    Group,
    Node,
}

impl CiKind {
    fn as_str(self) -> &'static str {
        match self {
            CiKind::Defaults => "defaults",
            CiKind::Group => "group",
            CiKind::Node => "node",
        }
    }
}

/// What the cloud-init routes know about a node from the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub xname: String,
    pub nid: Option<i64>,
    /// `nid%04d` with a NID (OpenCHAMI's default), else the xname.
    pub hostname: String,
    /// (MAC, first IP) of each interface.
    pub interfaces: Vec<(String, Option<Ipv4Addr>)>,
}

impl Store {
    /// Stores a cloud-init document (replacing one with the same kind and key).
    pub async fn put_cloud_init(
        &self,
        kind: CiKind,
        key: String,
        doc: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO cloud_init (kind, key, doc) VALUES (?1, ?2, ?3)
                 ON CONFLICT(kind, key) DO UPDATE SET doc = excluded.doc",
                params![kind.as_str(), key, serde_json::to_string(&doc)?],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn get_cloud_init(
        &self,
        kind: CiKind,
        key: String,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        self.read(move |c| {
            let doc: Option<String> = c
                .query_row(
                    "SELECT doc FROM cloud_init WHERE kind = ?1 AND key = ?2",
                    params![kind.as_str(), key],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
        })
        .await
    }

    /// Every document of `kind`, by key.
    pub async fn list_cloud_init(
        &self,
        kind: CiKind,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        self.read(move |c| {
            let mut stmt =
                c.prepare("SELECT key, doc FROM cloud_init WHERE kind = ?1 ORDER BY key")?;
            let rows = stmt.query_map([kind.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (k, d) = row?;
                out.push((k, serde_json::from_str(&d)?));
            }
            Ok(out)
        })
        .await
    }

    pub async fn delete_cloud_init(&self, kind: CiKind, key: String) -> Result<bool, StoreError> {
        self.write(move |tx| {
            Ok(tx.execute(
                "DELETE FROM cloud_init WHERE kind = ?1 AND key = ?2",
                params![kind.as_str(), key],
            )? > 0)
        })
        .await
    }

    /// The inventory node `xname`, if its component or an interface names it.
    pub async fn node_info(&self, xname: String) -> Result<Option<NodeInfo>, StoreError> {
        self.read(move |c| {
            let nid: Option<Option<i64>> = c
                .query_row("SELECT nid FROM components WHERE id = ?1", [&xname], |r| {
                    r.get(0)
                })
                .optional()?;
            let mut stmt = c.prepare(
                "SELECT mac, ip FROM ethernet_interfaces WHERE component_id = ?1 ORDER BY mac",
            )?;
            let interfaces = stmt
                .query_map([&xname], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .map(|(mac, ip)| (mac, ip.and_then(|i| i.parse().ok())))
                .collect::<Vec<_>>();
            if nid.is_none() && interfaces.is_empty() {
                return Ok(None);
            }
            let nid = nid.flatten();
            let hostname = nid.map_or_else(|| xname.clone(), |n| format!("nid{n:04}"));
            Ok(Some(NodeInfo {
                xname,
                nid,
                hostname,
                interfaces,
            }))
        })
        .await
    }

    /// The node whose inventory interface has address `ip`.
    pub async fn xname_for_ip(&self, ip: Ipv4Addr) -> Result<Option<String>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT component_id FROM ethernet_interfaces WHERE ip = ?1 AND component_id IS NOT NULL",
                [ip.to_string()],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }
}
