//! Federation state: upstream-owned inventory (the `owner` column) applied as a diff. What waits
//! to be pushed upstream is in `outbox.rs`.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::bss::{self, BootParameters};
use super::smd::{Component, EthernetInterface, Group};
use super::{Store, StoreError};

const UPSTREAM: &str = "upstream";

/// What the upstream holds for this rack.
#[derive(Debug, Clone, Default)]
pub struct UpstreamSnapshot {
    pub components: Vec<Component>,
    pub interfaces: Vec<EthernetInterface>,
    pub groups: Vec<Group>,
    pub boot_parameters: Vec<BootParameters>,
}

/// What applying a snapshot changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyStats {
    pub written: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

/// A boot-parameters object in a canonical form (sorted keys), for comparing.
fn canonical_bp(bp: &BootParameters) -> String {
    let mut b = bp.clone();
    b.hosts.sort();
    b.macs = b.macs.iter().map(|m| m.to_ascii_lowercase()).collect();
    b.macs.sort();
    b.nids.sort_unstable();
    serde_json::to_string(&b).unwrap_or_default()
}

/// (id → (owner, doc)) of a table.
fn rows(
    c: &rusqlite::Connection,
    sql: &str,
) -> Result<BTreeMap<String, (String, String)>, StoreError> {
    let mut st = c.prepare(sql)?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
    Ok(rows.collect::<Result<BTreeMap<_, _>, _>>()?)
}

/// The writes a snapshot needs, worked out on a read connection.
#[derive(Default)]
struct Plan {
    components: Vec<(String, Option<i64>, String)>,
    delete_components: Vec<String>,
    interfaces: Vec<(EthernetInterface, String)>,
    delete_interfaces: Vec<String>,
    groups: Vec<(String, String)>,
    delete_groups: Vec<String>,
    /// Replace every upstream-owned boot-parameters row with these.
    boot_parameters: Option<Vec<BootParameters>>,
    unchanged: usize,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.components.is_empty()
            && self.delete_components.is_empty()
            && self.interfaces.is_empty()
            && self.delete_interfaces.is_empty()
            && self.groups.is_empty()
            && self.delete_groups.is_empty()
            && self.boot_parameters.is_none()
    }
}

fn plan(c: &rusqlite::Connection, snap: &UpstreamSnapshot, full: bool) -> Result<Plan, StoreError> {
    let mut p = Plan::default();
    let have = rows(c, "SELECT id, owner, doc FROM components")?;
    let mut seen = BTreeSet::new();
    for comp in &snap.components {
        let doc = serde_json::to_string(comp)?;
        seen.insert(comp.id.clone());
        match have.get(&comp.id) {
            Some((owner, d)) if owner == UPSTREAM && *d == doc => p.unchanged += 1,
            _ => p.components.push((comp.id.clone(), comp.nid, doc)),
        }
    }
    if full {
        p.delete_components = have
            .iter()
            .filter(|(id, (owner, _))| owner == UPSTREAM && !seen.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
    }
    let have = rows(c, "SELECT id, owner, doc FROM ethernet_interfaces")?;
    let mut seen = BTreeSet::new();
    for ei in &snap.interfaces {
        let doc = serde_json::to_string(ei)?;
        seen.insert(ei.id.clone());
        match have.get(&ei.id) {
            Some((owner, d)) if owner == UPSTREAM && *d == doc => p.unchanged += 1,
            _ => p.interfaces.push((ei.clone(), doc)),
        }
    }
    if full {
        p.delete_interfaces = have
            .iter()
            .filter(|(id, (owner, _))| owner == UPSTREAM && !seen.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
    }
    let have = rows(c, "SELECT label, owner, doc FROM groups")?;
    let mut seen = BTreeSet::new();
    for g in &snap.groups {
        let doc = serde_json::to_string(g)?;
        seen.insert(g.label.clone());
        match have.get(&g.label) {
            Some((owner, d)) if owner == UPSTREAM && *d == doc => p.unchanged += 1,
            _ => p.groups.push((g.label.clone(), doc)),
        }
    }
    if full {
        p.delete_groups = have
            .iter()
            .filter(|(id, (owner, _))| owner == UPSTREAM && !seen.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
    }
    let mut st = c.prepare("SELECT id FROM boot_parameters WHERE owner = 'upstream'")?;
    let ids = st
        .query_map([], |r| r.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut have_bp = BTreeSet::new();
    for id in ids {
        have_bp.insert(canonical_bp(&bss::load(c, id)?));
    }
    let want: BTreeSet<String> = snap.boot_parameters.iter().map(canonical_bp).collect();
    let changed = if full {
        want != have_bp
    } else {
        !want.is_subset(&have_bp)
    };
    if changed {
        p.boot_parameters = Some(snap.boot_parameters.clone());
    } else {
        p.unchanged += want.len();
    }
    Ok(p)
}

impl Store {
    /// Federation on: RedfishEndpoint writes also queue a push (same transaction).
    pub fn set_push_upstream(&self, on: bool) {
        self.inner
            .push_upstream
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn pushes_upstream(&self) -> bool {
        self.inner
            .push_upstream
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Makes the upstream-owned inventory equal to `snap` (`full`: objects no longer upstream
    /// are deleted; otherwise only added or updated). Upstream wins over a local object with
    /// the same ID. Unchanged data costs no write at all.
    pub async fn apply_upstream(
        &self,
        snap: UpstreamSnapshot,
        full: bool,
    ) -> Result<ApplyStats, StoreError> {
        let plan = {
            let snap = snap.clone();
            self.read(move |c| plan(c, &snap, full)).await?
        };
        let mut stats = ApplyStats {
            unchanged: plan.unchanged,
            ..Default::default()
        };
        if plan.is_empty() {
            return Ok(stats);
        }
        stats.written = plan.components.len()
            + plan.interfaces.len()
            + plan.groups.len()
            + plan.boot_parameters.as_ref().map_or(0, Vec::len);
        stats.deleted =
            plan.delete_components.len() + plan.delete_interfaces.len() + plan.delete_groups.len();
        self.write_inventory(move |tx| {
            for (id, nid, doc) in &plan.components {
                tx.execute(
                    "INSERT INTO components (id, nid, doc, owner) VALUES (?1, ?2, ?3, 'upstream')
                     ON CONFLICT(id) DO UPDATE SET nid = excluded.nid, doc = excluded.doc, owner = 'upstream'",
                    params![id, nid, doc],
                )?;
            }
            for id in &plan.delete_components {
                tx.execute("DELETE FROM components WHERE id = ?1 AND owner = 'upstream'", [id])?;
            }
            for (ei, doc) in &plan.interfaces {
                tx.execute(
                    "DELETE FROM ethernet_interfaces WHERE id = ?1 OR mac = ?2",
                    params![ei.id, ei.mac_address],
                )?;
                let ip = ei.ip_addresses.first().map(|a| a.ip_address.clone());
                tx.execute(
                    "INSERT INTO ethernet_interfaces (id, mac, component_id, ip, doc, owner)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'upstream')",
                    params![ei.id, ei.mac_address, ei.component_id, ip, doc],
                )?;
            }
            for id in &plan.delete_interfaces {
                tx.execute(
                    "DELETE FROM ethernet_interfaces WHERE id = ?1 AND owner = 'upstream'",
                    [id],
                )?;
            }
            for (label, doc) in &plan.groups {
                tx.execute(
                    "INSERT INTO groups (label, doc, owner) VALUES (?1, ?2, 'upstream')
                     ON CONFLICT(label) DO UPDATE SET doc = excluded.doc, owner = 'upstream'",
                    params![label, doc],
                )?;
            }
            for label in &plan.delete_groups {
                tx.execute("DELETE FROM groups WHERE label = ?1 AND owner = 'upstream'", [label])?;
            }
            if let Some(bps) = &plan.boot_parameters {
                if full {
                    tx.execute(
                        "DELETE FROM boot_parameter_keys WHERE bp_id IN
                         (SELECT id FROM boot_parameters WHERE owner = 'upstream')",
                        [],
                    )?;
                    tx.execute("DELETE FROM boot_parameters WHERE owner = 'upstream'", [])?;
                }
                for bp in bps {
                    bss::remove_keys(tx, &bp.selector())?;
                    let id = bss::insert_row(tx, bp)?;
                    tx.execute(
                        "UPDATE boot_parameters SET owner = 'upstream' WHERE id = ?1",
                        [id],
                    )?;
                }
            }
            Ok(())
        })
        .await?;
        Ok(stats)
    }

    /// How many inventory objects the upstream owns here, per kind.
    pub async fn upstream_counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        self.read(|c| {
            let mut out = BTreeMap::new();
            for (k, table) in [
                ("components", "components"),
                ("ethernet_interfaces", "ethernet_interfaces"),
                ("groups", "groups"),
                ("boot_parameters", "boot_parameters"),
            ] {
                let n: i64 = c.query_row(
                    &format!("SELECT COUNT(*) FROM {table} WHERE owner = 'upstream'"),
                    [],
                    |r| r.get(0),
                )?;
                out.insert(k.to_owned(), n);
            }
            Ok(out)
        })
        .await
    }

    /// The owner of component `id`, if it exists.
    pub async fn component_owner(&self, id: String) -> Result<Option<String>, StoreError> {
        self.read(move |c| {
            Ok(
                c.query_row("SELECT owner FROM components WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })
        .await
    }
}
