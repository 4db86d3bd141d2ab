//! BSS boot parameters. A row holds kernel/initrd/params/cloud-init; the hosts, MACs and NIDs
//! that select it live in `boot_parameter_keys`, each key naming exactly one row.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Store, StoreError};

/// The BSS `BootParams` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BootParameters {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub macs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nids: Vec<i64>,
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub initrd: String,
    #[serde(default)]
    pub params: String,
    #[serde(
        rename = "cloud-init",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cloud_init: Option<CloudInit>,
}

/// BSS's embedded cloud-init data, kept as given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CloudInit {
    #[serde(rename = "meta-data", default, skip_serializing_if = "Option::is_none")]
    pub meta_data: Option<Value>,
    #[serde(rename = "user-data", default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<Value>,
    #[serde(
        rename = "phone-home",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub phone_home: Option<Value>,
}

/// Which boot parameters a request is about. Empty = all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootSelector {
    pub hosts: Vec<String>,
    pub macs: Vec<String>,
    pub nids: Vec<i64>,
}

impl BootSelector {
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.macs.is_empty() && self.nids.is_empty()
    }

    fn keys(&self) -> Vec<(&'static str, String)> {
        let mut k: Vec<(&'static str, String)> = Vec::new();
        k.extend(self.hosts.iter().map(|h| ("host", h.clone())));
        k.extend(self.macs.iter().map(|m| ("mac", m.clone())));
        k.extend(self.nids.iter().map(|n| ("nid", n.to_string())));
        k
    }
}

impl BootParameters {
    pub fn selector(&self) -> BootSelector {
        BootSelector {
            hosts: self.hosts.clone(),
            macs: self.macs.clone(),
            nids: self.nids.clone(),
        }
    }

    fn body(&self) -> BootParameters {
        BootParameters {
            hosts: Vec::new(),
            macs: Vec::new(),
            nids: Vec::new(),
            ..self.clone()
        }
    }
}

impl Store {
    /// POST: every key must be new (BSS answers 400 for duplicates).
    pub async fn insert_boot_parameters(&self, bp: BootParameters) -> Result<(), StoreError> {
        self.write_inventory(move |tx| {
            for (kind, key) in bp.selector().keys() {
                if key_row(tx, kind, &key)?.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "boot parameters for {kind} {key} already exist; use PUT to replace or PATCH to change them"
                    )));
                }
            }
            insert(tx, &bp)
        })
        .await
    }

    /// PUT: the given keys point at these parameters from now on.
    pub async fn upsert_boot_parameters(&self, bp: BootParameters) -> Result<(), StoreError> {
        self.write_inventory(move |tx| {
            remove_keys(tx, &bp.selector())?;
            insert(tx, &bp)
        })
        .await
    }

    /// PATCH: changes only the fields set in `patch` on every matching object.
    pub async fn patch_boot_parameters(
        &self,
        sel: BootSelector,
        patch: Value,
    ) -> Result<usize, StoreError> {
        self.write_inventory(move |tx| {
            let ids = matching_ids(tx, &sel)?;
            if ids.is_empty() {
                return Err(StoreError::NotFound(
                    "no boot parameters match the given hosts/macs/nids".into(),
                ));
            }
            for id in &ids {
                let doc: String =
                    tx.query_row("SELECT doc FROM boot_parameters WHERE id = ?1", [id], |r| {
                        r.get(0)
                    })?;
                let mut cur: Value = serde_json::from_str(&doc)?;
                if let (Some(cur), Some(patch)) = (cur.as_object_mut(), patch.as_object()) {
                    for (k, v) in patch {
                        if !matches!(k.as_str(), "hosts" | "macs" | "nids") {
                            cur.insert(k.clone(), v.clone());
                        }
                    }
                }
                let merged: BootParameters = serde_json::from_value(cur).map_err(|e| {
                    StoreError::Invalid(format!("patched boot parameters are invalid: {e}"))
                })?;
                tx.execute(
                    "UPDATE boot_parameters SET doc = ?1 WHERE id = ?2",
                    params![serde_json::to_string(&merged.body())?, id],
                )?;
            }
            Ok(ids.len())
        })
        .await
    }

    /// DELETE: removes the given keys (and objects left with no key).
    pub async fn delete_boot_parameters(&self, sel: BootSelector) -> Result<usize, StoreError> {
        self.write_inventory(move |tx| remove_keys(tx, &sel)).await
    }

    /// GET: objects matching any key of `sel`, or all when `sel` is empty.
    pub async fn find_boot_parameters(
        &self,
        sel: BootSelector,
    ) -> Result<Vec<BootParameters>, StoreError> {
        self.read(move |c| {
            let ids: Vec<i64> = if sel.is_empty() {
                let mut stmt = c.prepare("SELECT id FROM boot_parameters ORDER BY id")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            } else {
                matching_ids(c, &sel)?
            };
            ids.iter().map(|id| load(c, *id)).collect()
        })
        .await
    }

    /// The boot parameters for a node, by precedence MAC > xname > NID (as BSS does).
    pub async fn boot_parameters_for(
        &self,
        mac: Option<String>,
        host: Option<String>,
        nid: Option<i64>,
    ) -> Result<Option<BootParameters>, StoreError> {
        self.read(move |c| {
            let candidates = [
                ("mac", mac),
                ("host", host),
                ("nid", nid.map(|n| n.to_string())),
            ];
            for (kind, key) in candidates {
                let Some(key) = key else { continue };
                if let Some(id) = key_row(c, kind, &key)? {
                    return Ok(Some(load(c, id)?));
                }
            }
            Ok(None)
        })
        .await
    }
}

fn key_row(c: &rusqlite::Connection, kind: &str, key: &str) -> Result<Option<i64>, StoreError> {
    Ok(c.query_row(
        "SELECT bp_id FROM boot_parameter_keys WHERE kind = ?1 AND key = ?2",
        params![kind, key],
        |r| r.get(0),
    )
    .optional()?)
}

fn matching_ids(c: &rusqlite::Connection, sel: &BootSelector) -> Result<Vec<i64>, StoreError> {
    let mut ids = Vec::new();
    for (kind, key) in sel.keys() {
        if let Some(id) = key_row(c, kind, &key)?
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Inserts a row and its keys; the row's id.
pub(super) fn insert_row(tx: &Transaction<'_>, bp: &BootParameters) -> Result<i64, StoreError> {
    tx.execute(
        "INSERT INTO boot_parameters (doc) VALUES (?1)",
        [serde_json::to_string(&bp.body())?],
    )?;
    let id = tx.last_insert_rowid();
    for (kind, key) in bp.selector().keys() {
        tx.execute(
            "INSERT OR REPLACE INTO boot_parameter_keys (kind, key, bp_id) VALUES (?1, ?2, ?3)",
            params![kind, key, id],
        )?;
    }
    Ok(id)
}

fn insert(tx: &Transaction<'_>, bp: &BootParameters) -> Result<(), StoreError> {
    insert_row(tx, bp).map(|_| ())
}

pub(super) fn remove_keys(tx: &Transaction<'_>, sel: &BootSelector) -> Result<usize, StoreError> {
    let mut removed = 0;
    for (kind, key) in sel.keys() {
        removed += tx.execute(
            "DELETE FROM boot_parameter_keys WHERE kind = ?1 AND key = ?2",
            params![kind, key],
        )?;
    }
    tx.execute(
        "DELETE FROM boot_parameters WHERE id NOT IN (SELECT bp_id FROM boot_parameter_keys)",
        [],
    )?;
    Ok(removed)
}

pub(super) fn load(c: &rusqlite::Connection, id: i64) -> Result<BootParameters, StoreError> {
    let doc: String = c.query_row("SELECT doc FROM boot_parameters WHERE id = ?1", [id], |r| {
        r.get(0)
    })?;
    let mut bp: BootParameters = serde_json::from_str(&doc)?;
    let mut stmt = c.prepare_cached(
        "SELECT kind, key FROM boot_parameter_keys WHERE bp_id = ?1 ORDER BY kind, key",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut nids = BTreeMap::new();
    for row in rows {
        let (kind, key) = row?;
        match kind.as_str() {
            "host" => bp.hosts.push(key),
            "mac" => bp.macs.push(key),
            _ => {
                if let Ok(n) = key.parse::<i64>() {
                    nids.insert(n, ());
                }
            }
        }
    }
    bp.nids = nids.into_keys().collect();
    Ok(bp)
}
