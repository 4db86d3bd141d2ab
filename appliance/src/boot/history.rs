//! BSS's informational routes: `/hosts`, `/dumpstate`, `/endpoint-history` (from the boot
//! timeline) and `/service/{status/all,storage/status,hsm,version}`; and the NID → node lookup
//! `bootscript?nid=` needs.
//!
//! BSS caches SMD; rackboot's SMD is its own store, so "HSM" is always connected and a host's
//! data is read when asked.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::http::{Json, Problem};
use crate::inventory::query::{Pairs, allow_only, values};
use crate::store::{BootSelector, Store, StoreState};
use crate::timeline::stage;

/// Scoped (`boot`): they show inventory and every node's boot parameters.
pub fn admin_router(store: Store) -> Router {
    Router::new()
        .route("/boot/v1/hosts", get(hosts).post(refresh_hosts))
        .route("/boot/v1/dumpstate", get(dumpstate))
        .route("/boot/v1/endpoint-history", get(endpoint_history))
        .merge(crate::inventory::unsupported::bss_router())
        .with_state(store)
}

/// Open, as in BSS (`ochami bss status` sends no token): no inventory data in them.
pub fn service_router(store: Store) -> Router {
    Router::new()
        .route("/boot/v1/service/status/all", get(status_all))
        .route("/boot/v1/service/storage/status", get(storage_status))
        .route(
            "/boot/v1/service/hsm",
            get(|| async { Json(json!({"bss-status-hsm": "connected"})) }),
        )
        .route(
            "/boot/v1/service/version",
            get(|| async { Json(json!({"bss-version": env!("CARGO_PKG_VERSION")})) }),
        )
        .with_state(store)
}

/// The node whose Component has `nid`, with its interface MACs.
pub(super) async fn node_for_nid(
    store: &Store,
    nid: i64,
) -> Result<Option<(String, Vec<String>)>, Problem> {
    let Some(c) = store
        .list_components()
        .await?
        .into_iter()
        .find(|c| c.nid == Some(nid))
    else {
        return Ok(None);
    };
    let macs = macs_of(store, &c.id).await?;
    Ok(Some((c.id, macs)))
}

/// The MACs of node `xname`'s EthernetInterfaces.
pub(super) async fn macs_of(store: &Store, xname: &str) -> Result<Vec<String>, Problem> {
    Ok(store
        .list_ethernet_interfaces()
        .await?
        .into_iter()
        .filter(|e| e.component_id.as_deref() == Some(xname))
        .map(|e| e.mac_address)
        .collect())
}

/// BSS's host record: the Component with its FQDN, MACs and whether its endpoint is enabled.
async fn host_records(s: &Store) -> Result<Vec<Value>, Problem> {
    let eis = s.list_ethernet_interfaces().await?;
    let mut out = Vec::new();
    for c in s.list_components().await? {
        let macs: Vec<&str> = eis
            .iter()
            .filter(|e| e.component_id.as_deref() == Some(c.id.as_str()))
            .map(|e| e.mac_address.as_str())
            .collect();
        let mut v = serde_json::to_value(&c).map_err(Problem::internal)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("FQDN".into(), "".into());
            o.insert("MAC".into(), json!(macs));
            o.insert("EndpointEnabled".into(), c.enabled.unwrap_or(true).into());
        }
        out.push(v);
    }
    Ok(out)
}

async fn hosts(
    State(s): State<Store>,
    Query(q): Query<Pairs>,
) -> Result<Json<Vec<Value>>, Problem> {
    allow_only(&q, "GET /boot/v1/hosts", &["name", "mac", "nid"])?;
    let names: Vec<String> = values(&q, "name")
        .iter()
        .map(|v| v.to_ascii_lowercase())
        .collect();
    let macs: Vec<String> = values(&q, "mac")
        .into_iter()
        .map(crate::inventory::normalize_mac)
        .collect::<Result<_, _>>()?;
    let nids: Vec<i64> = values(&q, "nid")
        .into_iter()
        .map(|n| {
            n.parse()
                .map_err(|_| Problem::bad_request(format!("invalid nid {n:?}")))
        })
        .collect::<Result<_, _>>()?;
    let all = host_records(&s).await?;
    let list = all
        .into_iter()
        .filter(|h| {
            let id = h.get("ID").and_then(Value::as_str).unwrap_or("");
            let nid = h.get("NID").and_then(Value::as_i64);
            let hmacs = h.get("MAC").and_then(Value::as_array);
            (names.is_empty() || names.iter().any(|n| n == id))
                && (nids.is_empty() || nid.is_some_and(|n| nids.contains(&n)))
                && (macs.is_empty()
                    || hmacs.is_some_and(|l| {
                        l.iter()
                            .filter_map(Value::as_str)
                            .any(|m| macs.iter().any(|x| x == m))
                    }))
        })
        .collect();
    Ok(Json(list))
}

/// `POST /boot/v1/hosts` refreshes BSS's SMD cache; rackboot has none to refresh.
async fn refresh_hosts() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn dumpstate(State(s): State<Store>, Query(q): Query<Pairs>) -> Result<Json<Value>, Problem> {
    allow_only(&q, "GET /boot/v1/dumpstate", &[])?;
    let params = s.find_boot_parameters(BootSelector::default()).await?;
    Ok(Json(json!({
        "components": host_records(&s).await?,
        "params": params,
    })))
}

/// BSS's endpoint names and the timeline stages that record them.
const ENDPOINTS: &[(&str, &str)] = &[
    ("bootscript", stage::BOOTSCRIPT),
    ("user-data", stage::CLOUD_INIT_USER_DATA),
];

async fn endpoint_history(
    State(s): State<Store>,
    Query(q): Query<Pairs>,
) -> Result<Json<Vec<Value>>, Problem> {
    allow_only(&q, "GET /boot/v1/endpoint-history", &["name", "endpoint"])?;
    let names: Vec<String> = values(&q, "name")
        .iter()
        .map(|v| v.to_ascii_lowercase())
        .collect();
    let wanted: Vec<&str> = values(&q, "endpoint");
    for e in &wanted {
        if !ENDPOINTS.iter().any(|(n, _)| n == e) {
            return Err(Problem::bad_request(format!(
                "endpoint {e:?} is not one of bootscript, user-data"
            )));
        }
    }
    let stages: Vec<&'static str> = ENDPOINTS
        .iter()
        .filter(|(n, _)| wanted.is_empty() || wanted.contains(n))
        .map(|(_, st)| *st)
        .collect();
    let mut out: Vec<Value> = Vec::new();
    for (node, st, ts_ms) in s.last_fetches(stages).await? {
        if !names.is_empty() && !names.contains(&node) {
            continue;
        }
        let endpoint = ENDPOINTS
            .iter()
            .find(|(_, s)| *s == st)
            .map_or("bootscript", |(n, _)| n);
        out.push(json!({"name": node, "endpoint": endpoint, "last_epoch": ts_ms / 1000}));
    }
    // BSS answers a named node that never fetched with last_epoch 0 rather than nothing.
    if let ([name], [endpoint]) = (names.as_slice(), wanted.as_slice())
        && out.is_empty()
    {
        out.push(json!({"name": name, "endpoint": endpoint, "last_epoch": 0}));
    }
    Ok(Json(out))
}

fn storage(s: &Store) -> (bool, Value) {
    let ok = s.health().state == StoreState::Ok;
    (
        ok,
        json!({"name": "sqlite", "status": if ok { "connected" } else { "error" }}),
    )
}

async fn storage_status(State(s): State<Store>) -> Response {
    let (ok, backend) = storage(&s);
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (code, Json(json!({"bss-storage-backend": backend}))).into_response()
}

async fn status_all(State(s): State<Store>) -> Response {
    let (ok, backend) = storage(&s);
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (
        code,
        Json(json!({
            "bss-status": "running",
            "bss-storage-backend": backend,
            "bss-status-hsm": "connected",
            "bss-version": env!("CARGO_PKG_VERSION"),
        })),
    )
        .into_response()
}
