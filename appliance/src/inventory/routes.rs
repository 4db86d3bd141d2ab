//! `/hsm/v2` routes.

use std::net::Ipv4Addr;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{interface_id, normalize_mac, xname};
use crate::http::{Json, Problem};
use crate::store::{Component, EthernetInterface, Group, RedfishEndpoint, Store, StoreError};

type Params = Query<Vec<(String, String)>>;

/// SMD's health routes: open, as in SMD (load balancers and `ochami` probe them without a token).
pub fn health_router() -> Router {
    Router::new()
        .route(
            "/hsm/v2/service/ready",
            get(|| async { Json(json!({"code": 0, "message": "HSM is healthy"})) }),
        )
        .route(
            "/hsm/v2/service/liveness",
            get(|| async { StatusCode::NO_CONTENT }),
        )
}

/// The SMD router (no auth inside: `serve` wraps it with the `inventory` scope).
pub fn router(store: Store) -> Router {
    Router::new()
        .route(
            "/hsm/v2/State/Components",
            get(list_components).post(post_components),
        )
        .route(
            "/hsm/v2/State/Components/{id}",
            get(get_component)
                .put(put_component)
                .delete(delete_component),
        )
        .route(
            "/hsm/v2/State/Components/{id}/StateData",
            axum::routing::patch(patch_state_data),
        )
        .route(
            "/hsm/v2/State/Components/{id}/FlagOnly",
            axum::routing::patch(patch_flag_only),
        )
        .route(
            "/hsm/v2/Inventory/EthernetInterfaces",
            get(list_interfaces).post(post_interface),
        )
        .route(
            "/hsm/v2/Inventory/EthernetInterfaces/{id}",
            get(get_interface)
                .patch(patch_interface)
                .delete(delete_interface),
        )
        .route(
            "/hsm/v2/Inventory/RedfishEndpoints",
            get(list_endpoints).post(post_endpoint),
        )
        .route(
            "/hsm/v2/Inventory/RedfishEndpoints/{id}",
            get(get_endpoint)
                .put(put_endpoint)
                .patch(patch_endpoint)
                .delete(delete_endpoint),
        )
        .route("/hsm/v2/groups", get(list_groups).post(post_group))
        .route(
            "/hsm/v2/groups/{label}",
            get(get_group).patch(patch_group).delete(delete_group),
        )
        .route(
            "/hsm/v2/groups/{label}/members",
            get(get_members).post(post_member).put(put_members),
        )
        .route(
            "/hsm/v2/groups/{label}/members/{id}",
            axum::routing::delete(delete_member),
        )
        .route("/hsm/v2/memberships/{id}", get(memberships))
        .with_state(store)
}

fn values<'a>(q: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    q.iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(key))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

fn matches(filter: &[&str], value: Option<&str>) -> bool {
    filter.is_empty() || value.is_some_and(|v| filter.iter().any(|f| f.eq_ignore_ascii_case(v)))
}

async fn list_components(State(s): State<Store>, Query(q): Params) -> Result<Json<Value>, Problem> {
    let (ids, types, states, roles, arches) = (
        values(&q, "id"),
        values(&q, "type"),
        values(&q, "state"),
        values(&q, "role"),
        values(&q, "arch"),
    );
    let nids = values(&q, "nid");
    let comps: Vec<Component> = s
        .list_components()
        .await?
        .into_iter()
        .filter(|c| {
            matches(&ids, Some(&c.id))
                && matches(&types, c.kind.as_deref())
                && matches(&states, c.state.as_deref())
                && matches(&roles, c.role.as_deref())
                && matches(&arches, c.arch.as_deref())
                && (nids.is_empty()
                    || c.nid
                        .is_some_and(|n| nids.contains(&n.to_string().as_str())))
        })
        .collect();
    Ok(Json(json!({ "Components": comps })))
}

fn check_component(mut c: Component) -> Result<Component, Problem> {
    let kind = xname::parse(&c.id).map_err(Problem::bad_request)?;
    if c.kind.is_none() {
        c.kind = Some(kind.as_smd().to_owned());
    }
    if c.nid.is_some_and(|n| n < 0) {
        return Err(Problem::bad_request(format!(
            "{}: NID must not be negative",
            c.id
        )));
    }
    Ok(c)
}

#[derive(serde::Deserialize)]
struct ComponentArray {
    #[serde(rename = "Components")]
    components: Vec<Component>,
}

async fn post_components(
    State(s): State<Store>,
    Json(body): Json<ComponentArray>,
) -> Result<StatusCode, Problem> {
    let comps = body
        .components
        .into_iter()
        .map(check_component)
        .collect::<Result<Vec<_>, _>>()?;
    s.put_components(comps).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_component(
    State(s): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<Component>, Problem> {
    s.get_component(id.clone())
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no component {id}")))
}

async fn put_component(
    State(s): State<Store>,
    Path(id): Path<String>,
    Json(mut c): Json<Component>,
) -> Result<StatusCode, Problem> {
    if c.id.is_empty() {
        c.id = id.clone();
    }
    if c.id != id {
        return Err(Problem::bad_request(format!(
            "body ID {} does not match the URL {id}",
            c.id
        )));
    }
    s.put_components(vec![check_component(c)?]).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, serde::Deserialize)]
struct StateData {
    #[serde(rename = "State")]
    state: String,
    #[serde(rename = "Flag", default)]
    flag: Option<String>,
}

/// SMD's `PATCH /State/Components/{xname}/StateData`: a component's State (and Flag).
async fn patch_state_data(
    State(s): State<Store>,
    Path(id): Path<String>,
    Json(d): Json<StateData>,
) -> Result<StatusCode, Problem> {
    const STATES: &[&str] = &[
        "Unknown",
        "Empty",
        "Populated",
        "Off",
        "On",
        "Standby",
        "Halt",
        "Ready",
    ];
    if !STATES.contains(&d.state.as_str()) {
        return Err(Problem::bad_request(format!(
            "State {:?} is not one of {}",
            d.state,
            STATES.join(", ")
        )));
    }
    let mut c = s
        .get_component(id.clone())
        .await?
        .ok_or_else(|| Problem::not_found(format!("no component {id}")))?;
    c.state = Some(d.state);
    if let Some(f) = d.flag {
        c.flag = Some(f);
    }
    s.put_components(vec![c]).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, serde::Deserialize)]
struct FlagOnly {
    #[serde(rename = "Flag")]
    flag: String,
}

/// SMD's `PATCH /State/Components/{xname}/FlagOnly`: a component's Flag (OK, Warning, Alert,
/// Locked).
async fn patch_flag_only(
    State(s): State<Store>,
    Path(id): Path<String>,
    Json(d): Json<FlagOnly>,
) -> Result<StatusCode, Problem> {
    const FLAGS: &[&str] = &["OK", "Warning", "Alert", "Locked", "Unknown"];
    if !FLAGS.contains(&d.flag.as_str()) {
        return Err(Problem::bad_request(format!(
            "Flag {:?} is not one of {}",
            d.flag,
            FLAGS.join(", ")
        )));
    }
    let mut c = s
        .get_component(id.clone())
        .await?
        .ok_or_else(|| Problem::not_found(format!("no component {id}")))?;
    c.flag = Some(d.flag);
    s.put_components(vec![c]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_component(
    State(s): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    if s.delete_component(id.clone()).await? {
        Ok(Json(json!({"code": 0, "message": "deleted 1 entry"})))
    } else {
        Err(Problem::not_found(format!("no component {id}")))
    }
}

async fn list_interfaces(
    State(s): State<Store>,
    Query(q): Params,
) -> Result<Json<Vec<EthernetInterface>>, Problem> {
    let macs: Vec<String> = values(&q, "MACAddress")
        .into_iter()
        .map(normalize_mac)
        .collect::<Result<_, _>>()?;
    let macs: Vec<&str> = macs.iter().map(String::as_str).collect();
    let (ips, comps, types) = (
        values(&q, "IPAddress"),
        values(&q, "ComponentID"),
        values(&q, "Type"),
    );
    let list = s
        .list_ethernet_interfaces()
        .await?
        .into_iter()
        .filter(|e| {
            matches(&macs, Some(&e.mac_address))
                && (ips.is_empty()
                    || e.ip_addresses
                        .iter()
                        .any(|a| ips.contains(&a.ip_address.as_str())))
                && matches(&comps, e.component_id.as_deref())
                && matches(&types, e.kind.as_deref())
        })
        .collect();
    Ok(Json(list))
}

fn check_interface(mut e: EthernetInterface) -> Result<EthernetInterface, Problem> {
    e.mac_address = normalize_mac(&e.mac_address)?;
    e.id = interface_id(&e.mac_address);
    for a in &e.ip_addresses {
        a.ip_address.parse::<Ipv4Addr>().map_err(|_| {
            Problem::bad_request(format!(
                "invalid IPAddress {:?}: expected an IPv4 address like 192.0.2.50",
                a.ip_address
            ))
        })?;
    }
    if let Some(c) = &e.component_id {
        xname::parse(c).map_err(Problem::bad_request)?;
    }
    Ok(e)
}

async fn post_interface(
    State(s): State<Store>,
    Json(e): Json<EthernetInterface>,
) -> Result<Response, Problem> {
    let e = check_interface(e)?;
    s.insert_ethernet_interface(e.clone()).await?;
    Ok((StatusCode::CREATED, Json(e)).into_response())
}

async fn get_interface(
    State(s): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<EthernetInterface>, Problem> {
    let id = interface_id(&id);
    s.get_ethernet_interface(id.clone())
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no EthernetInterface {id}")))
}

async fn patch_interface(
    State(s): State<Store>,
    Path(id): Path<String>,
    Json(patch): Json<Value>,
) -> Result<Json<EthernetInterface>, Problem> {
    let id = interface_id(&id);
    let cur = s
        .get_ethernet_interface(id.clone())
        .await?
        .ok_or_else(|| Problem::not_found(format!("no EthernetInterface {id}")))?;
    let mut doc = serde_json::to_value(&cur).map_err(Problem::internal)?;
    let (Some(obj), Some(patch)) = (doc.as_object_mut(), patch.as_object()) else {
        return Err(Problem::bad_request("PATCH body must be a JSON object"));
    };
    for (k, v) in patch {
        if k != "ID" && k != "MACAddress" {
            obj.insert(k.clone(), v.clone());
        }
    }
    let merged: EthernetInterface = serde_json::from_value(doc)
        .map_err(|e| Problem::bad_request(format!("invalid EthernetInterface: {e}")))?;
    let merged = check_interface(merged)?;
    s.replace_ethernet_interface(merged.clone()).await?;
    Ok(Json(merged))
}

async fn delete_interface(
    State(s): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let id = interface_id(&id);
    if s.delete_ethernet_interface(id.clone()).await? {
        Ok(Json(json!({"code": 0, "message": "deleted 1 entry"})))
    } else {
        Err(Problem::not_found(format!("no EthernetInterface {id}")))
    }
}

async fn list_endpoints(State(s): State<Store>) -> Result<Json<Value>, Problem> {
    Ok(Json(
        json!({ "RedfishEndpoints": s.list_redfish_endpoints().await? }),
    ))
}

fn check_endpoint(ep: &RedfishEndpoint) -> Result<(), Problem> {
    xname::parse(&ep.id)
        .map(|_| ())
        .map_err(Problem::bad_request)
}

async fn post_endpoint(
    State(s): State<Store>,
    Json(body): Json<Value>,
) -> Result<StatusCode, Problem> {
    // SMD accepts one endpoint or `{"RedfishEndpoints": [...]}`.
    let eps: Vec<RedfishEndpoint> = match body.get("RedfishEndpoints") {
        Some(list) => serde_json::from_value(list.clone()),
        None => serde_json::from_value(body).map(|e| vec![e]),
    }
    .map_err(|e| Problem::bad_request(format!("invalid RedfishEndpoint: {e}")))?;
    for ep in &eps {
        check_endpoint(ep)?;
    }
    // One transaction: all or nothing.
    s.insert_redfish_endpoints(eps).await?;
    Ok(StatusCode::CREATED)
}

async fn get_endpoint(
    State(s): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<RedfishEndpoint>, Problem> {
    s.get_redfish_endpoint(id.clone())
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no RedfishEndpoint {id}")))
}

async fn put_endpoint(
    State(s): State<Store>,
    Path(id): Path<String>,
    Json(mut ep): Json<RedfishEndpoint>,
) -> Result<Json<RedfishEndpoint>, Problem> {
    if ep.id != id {
        return Err(Problem::bad_request(format!(
            "body ID {} does not match the URL {id}",
            ep.id
        )));
    }
    check_endpoint(&ep)?;
    ep.id = id;
    s.put_redfish_endpoint(ep.clone(), true).await?;
    Ok(Json(ep))
}

async fn patch_endpoint(
    State(s): State<Store>,
    Path(id): Path<String>,
    Json(patch): Json<Value>,
) -> Result<Json<RedfishEndpoint>, Problem> {
    let mut cur = s
        .get_redfish_endpoint(id.clone())
        .await?
        .ok_or_else(|| Problem::not_found(format!("no RedfishEndpoint {id}")))?;
    let Some(patch) = patch.as_object() else {
        return Err(Problem::bad_request("PATCH body must be a JSON object"));
    };
    for (k, v) in patch {
        if k != "ID" {
            cur.extra.insert(k.clone(), v.clone());
        }
    }
    s.put_redfish_endpoint(cur.clone(), true).await?;
    Ok(Json(cur))
}

async fn delete_endpoint(
    State(s): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    if s.delete_redfish_endpoint(id.clone()).await? {
        Ok(Json(json!({"code": 0, "message": "deleted 1 entry"})))
    } else {
        Err(Problem::not_found(format!("no RedfishEndpoint {id}")))
    }
}

async fn list_groups(State(s): State<Store>) -> Result<Json<Vec<Group>>, Problem> {
    Ok(Json(s.list_groups().await?))
}

fn check_group(g: &Group) -> Result<(), Problem> {
    if g.label.is_empty()
        || !g
            .label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(Problem::bad_request(format!(
            "invalid group label {:?}: use letters, digits, - _ .",
            g.label
        )));
    }
    for id in &g.members.ids {
        xname::parse(id).map_err(Problem::bad_request)?;
    }
    Ok(())
}

async fn post_group(State(s): State<Store>, Json(g): Json<Group>) -> Result<Response, Problem> {
    check_group(&g)?;
    s.put_group(g.clone(), false).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!([{"URI": format!("/hsm/v2/groups/{}", g.label)}])),
    )
        .into_response())
}

async fn get_group(
    State(s): State<Store>,
    Path(label): Path<String>,
) -> Result<Json<Group>, Problem> {
    s.get_group(label.clone())
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no group {label}")))
}

async fn delete_group(
    State(s): State<Store>,
    Path(label): Path<String>,
) -> Result<Json<Value>, Problem> {
    if s.delete_group(label.clone()).await? {
        Ok(Json(json!({"code": 0, "message": "deleted 1 entry"})))
    } else {
        Err(Problem::not_found(format!("no group {label}")))
    }
}

async fn get_members(
    State(s): State<Store>,
    Path(label): Path<String>,
) -> Result<Json<Value>, Problem> {
    let g = s
        .get_group(label.clone())
        .await?
        .ok_or_else(|| Problem::not_found(format!("no group {label}")))?;
    Ok(Json(json!({ "ids": g.members.ids })))
}

#[derive(serde::Deserialize)]
struct Member {
    id: String,
}

async fn post_member(
    State(s): State<Store>,
    Path(label): Path<String>,
    Json(m): Json<Member>,
) -> Result<StatusCode, Problem> {
    xname::parse(&m.id).map_err(Problem::bad_request)?;
    s.update_group(label.clone(), move |g| {
        if g.members.ids.contains(&m.id) {
            return Err(StoreError::Conflict(format!(
                "{} is already a member of {label}",
                m.id
            )));
        }
        g.members.ids.push(m.id);
        Ok(())
    })
    .await?;
    Ok(StatusCode::CREATED)
}

/// `PATCH /groups/{label}`: `description` and/or `tags`; the label and members stay.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupPatch {
    description: Option<String>,
    tags: Option<Vec<String>>,
}

async fn patch_group(
    State(s): State<Store>,
    Path(label): Path<String>,
    Json(p): Json<GroupPatch>,
) -> Result<StatusCode, Problem> {
    s.update_group(label, move |g| {
        if let Some(d) = p.description {
            g.description = Some(d);
        }
        if let Some(t) = p.tags {
            g.tags = t;
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /groups/{label}/members`: `{"group": label, "ids": [...]}` replaces the member list.
#[derive(serde::Deserialize)]
struct MembersPut {
    #[serde(default)]
    group: Option<String>,
    ids: Vec<String>,
}

async fn put_members(
    State(s): State<Store>,
    Path(label): Path<String>,
    Json(m): Json<MembersPut>,
) -> Result<Json<Value>, Problem> {
    if let Some(g) = &m.group
        && *g != label
    {
        return Err(Problem::bad_request(format!(
            "body names group {g:?} but the URL names {label:?}"
        )));
    }
    let mut ids = Vec::with_capacity(m.ids.len());
    for id in m.ids {
        xname::parse(&id).map_err(Problem::bad_request)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let g = s
        .update_group(label, move |g| {
            g.members.ids = ids;
            Ok(())
        })
        .await?;
    Ok(Json(json!({ "ids": g.members.ids })))
}

async fn delete_member(
    State(s): State<Store>,
    Path((label, id)): Path<(String, String)>,
) -> Result<Json<Value>, Problem> {
    s.update_group(label.clone(), move |g| {
        let before = g.members.ids.len();
        g.members.ids.retain(|m| *m != id);
        if g.members.ids.len() == before {
            return Err(StoreError::NotFound(format!(
                "{id} is not a member of {label}"
            )));
        }
        Ok(())
    })
    .await?;
    Ok(Json(json!({"code": 0, "message": "deleted 1 entry"})))
}

async fn memberships(
    State(s): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    xname::parse(&id).map_err(Problem::bad_request)?;
    let labels: Vec<String> = s
        .list_groups()
        .await?
        .into_iter()
        .filter(|g| g.members.ids.contains(&id))
        .map(|g| g.label)
        .collect();
    Ok(Json(
        json!({ "id": id, "groupLabels": labels, "partitionName": "" }),
    ))
}
