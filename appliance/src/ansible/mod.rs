//! The Ansible inventory provider: `GET /ansible/v1/inventory` answers Ansible's
//! dynamic-inventory JSON (`--list` shape, with `_meta.hostvars`), built from the inventory, the
//! boot parameters and the boot timeline; `rackboot ansible-inventory` prints it for Ansible's
//! `script` inventory plugin.
//!
//! Hosts are nodes, named by xname (`ansible_host` = the node's first address). Groups:
//! every SMD group (by label), `role_<role>`, `subrole_<subrole>` and the rack (`rack_<cabinet>`,
//! from the xname's cabinet), with names reduced to `[a-z0-9_]` as Ansible wants.
//!
//! Owns: `/ansible/v1/inventory` (scope `inventory:read`), `rackboot ansible-inventory`.
//! May call: `client`, `http`, `store`.

pub mod cli;

use std::collections::{BTreeMap, BTreeSet};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::http::{Json, Problem};
use crate::store::{Group, Host, HostKind, NodeStatusRow, Store, bmc_of};

/// The route (wrapped in the `inventory` scope by `services`).
pub fn router(store: Store) -> Router {
    Router::new()
        .route("/ansible/v1/inventory", get(inventory))
        .with_state(store)
}

/// `GET /ansible/v1/inventory`.
async fn inventory(State(store): State<Store>) -> Result<Json<Value>, Problem> {
    let hosts = store.hosts().await?;
    let groups = store.list_groups().await?;
    let status = store.boot_status().await?;
    let mut boot = BTreeMap::new();
    for h in hosts.iter().filter(|h| h.kind == HostKind::Node) {
        let nid = h.nid;
        let bp = store
            .boot_parameters_for(h.macs.first().cloned(), Some(h.xname.clone()), nid)
            .await?;
        if let Some(bp) = bp {
            boot.insert(h.xname.clone(), (bp.kernel, bp.initrd));
        }
    }
    Ok(Json(build(&hosts, &groups, &status, &boot)))
}

/// Assembles the dynamic-inventory document (pure, for tests).
pub(crate) fn build(
    hosts: &[Host],
    groups: &[Group],
    status: &[NodeStatusRow],
    boot: &BTreeMap<String, (String, String)>,
) -> Value {
    let bmcs: BTreeMap<&str, &Host> = hosts
        .iter()
        .filter(|h| h.kind == HostKind::Bmc)
        .map(|h| (h.xname.as_str(), h))
        .collect();
    let nodes: Vec<&Host> = hosts.iter().filter(|h| h.kind == HostKind::Node).collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut hostvars = Map::new();
    for n in &nodes {
        let mut add = |group: String| {
            out.entry(group).or_default().insert(n.xname.clone());
        };
        if let Some(r) = &n.role {
            add(group_name("role_", r));
        }
        if let Some(r) = &n.sub_role {
            add(group_name("subrole_", r));
        }
        if let Some(cab) = cabinet(&n.xname) {
            add(group_name("rack_", cab));
        }
        hostvars.insert(n.xname.clone(), host_vars(n, &bmcs, status, boot));
    }
    for g in groups {
        let members: BTreeSet<String> = g
            .members
            .ids
            .iter()
            .filter(|id| nodes.iter().any(|n| &n.xname == *id))
            .cloned()
            .collect();
        out.entry(group_name("", &g.label))
            .or_default()
            .extend(members);
    }
    let mut doc = Map::new();
    let children: Vec<&String> = out.keys().collect();
    let ungrouped: Vec<&String> = nodes
        .iter()
        .map(|n| &n.xname)
        .filter(|x| !out.values().any(|m| m.contains(*x)))
        .collect();
    doc.insert(
        "all".into(),
        json!({"children": children.iter().map(|c| c.as_str()).chain(["ungrouped"]).collect::<Vec<_>>()}),
    );
    doc.insert("ungrouped".into(), json!({ "hosts": ungrouped }));
    for (name, members) in &out {
        doc.insert(name.clone(), json!({ "hosts": members }));
    }
    doc.insert("_meta".into(), json!({ "hostvars": hostvars }));
    Value::Object(doc)
}

fn host_vars(
    n: &Host,
    bmcs: &BTreeMap<&str, &Host>,
    status: &[NodeStatusRow],
    boot: &BTreeMap<String, (String, String)>,
) -> Value {
    let mut v = Map::new();
    if let Some(ip) = n.ips.first() {
        v.insert("ansible_host".into(), json!(ip.to_string()));
    }
    v.insert("xname".into(), json!(n.xname));
    v.insert("hostname".into(), json!(n.hostname));
    v.insert("nid".into(), json!(n.nid));
    v.insert("role".into(), json!(n.role));
    v.insert("subrole".into(), json!(n.sub_role));
    v.insert("macs".into(), json!(n.macs));
    v.insert(
        "ips".into(),
        json!(n.ips.iter().map(ToString::to_string).collect::<Vec<_>>()),
    );
    let bmc = bmc_of(&n.xname);
    v.insert("bmc".into(), json!(bmc));
    v.insert(
        "bmc_ip".into(),
        json!(
            bmc.and_then(|b| bmcs.get(b))
                .and_then(|b| b.ips.first())
                .map(ToString::to_string)
        ),
    );
    let (kernel, initrd) = boot.get(&n.xname).cloned().unzip();
    v.insert("boot_kernel".into(), json!(kernel));
    v.insert("boot_initrd".into(), json!(initrd));
    let last = status
        .iter()
        .filter(|s| s.xname.as_deref() == Some(n.xname.as_str()) || n.macs.contains(&s.mac))
        .max_by_key(|s| s.since_ms);
    v.insert("boot_stage".into(), json!(last.map(|s| &s.stage)));
    v.insert(
        "boot_stage_at".into(),
        json!(last.map(|s| rfc3339(s.since_ms))),
    );
    v.insert(
        "boot_error".into(),
        json!(last.and_then(|s| s.last_error.as_ref())),
    );
    Value::Object(v)
}

fn rfc3339(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `x1000c0s0b0n0` → `x1000`.
fn cabinet(xname: &str) -> Option<&str> {
    let digits = xname
        .strip_prefix('x')?
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    xname.get(..=digits)
}

/// Ansible group names: letters, digits and `_`, not starting with a digit.
fn group_name(prefix: &str, raw: &str) -> String {
    let mut s: String = format!("{prefix}{raw}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}
