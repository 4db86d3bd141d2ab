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
        .merge(super::components::values_router())
}

/// The SMD router (no auth inside: `serve` wraps it with the `inventory` scope).
pub fn router(store: Store) -> Router {
    Router::new()
        .route(
            "/hsm/v2/State/Components",
            get(super::components::list)
                .post(post_components)
                .delete(super::components::delete_all),
        )
        .route(
            "/hsm/v2/State/Components/{id}",
            get(get_component)
                .put(super::components::put)
                .delete(delete_component),
        )
        .route(
            "/hsm/v2/Inventory/EthernetInterfaces",
            get(list_interfaces)
                .post(post_interface)
                .delete(super::endpoints::delete_all_interfaces),
        )
        .route(
            "/hsm/v2/Inventory/EthernetInterfaces/{id}",
            get(get_interface)
                .patch(patch_interface)
                .delete(delete_interface),
        )
        .route(
            "/hsm/v2/Inventory/RedfishEndpoints",
            get(super::endpoints::list_endpoints)
                .post(super::endpoints::post_endpoint)
                .delete(super::endpoints::delete_all_endpoints),
        )
        .route(
            "/hsm/v2/Inventory/RedfishEndpoints/{id}",
            get(get_endpoint)
                .put(super::endpoints::put_endpoint)
                .patch(patch_endpoint)
                .delete(delete_endpoint),
        )
        .route("/hsm/v2/groups", get(super::groups::list).post(post_group))
        .route(
            "/hsm/v2/groups/{label}",
            get(get_group).patch(patch_group).delete(delete_group),
        )
        .route(
            "/hsm/v2/groups/{label}/members",
            get(get_members)
                .post(super::groups::post_member)
                .put(super::groups::put_members),
        )
        .route(
            "/hsm/v2/groups/{label}/members/{id}",
            axum::routing::delete(delete_member),
        )
        .route(
            "/hsm/v2/memberships/{id}",
            get(super::groups::membership_of),
        )
        .merge(super::components::router())
        .merge(super::endpoints::router())
        .merge(super::groups::router())
        .merge(super::hardware::router())
        .merge(super::unsupported::router())
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
        .map(super::enums::verify_component)
        .collect::<Result<Vec<_>, _>>()?;
    s.put_components(comps).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_component(
    State(s): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<Component>, Problem> {
    let (id, _) = super::enums::normalize_xname(&id)?;
    s.get_component(id.clone())
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no component {id}")))
}

async fn delete_component(
    State(s): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let (id, _) = super::enums::normalize_xname(&id)?;
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
    // OlderThan/NewerThan are refused: not every stored interface has a LastUpdate.
    super::query::allow_only(
        &q,
        "GET /Inventory/EthernetInterfaces",
        &["MACAddress", "IPAddress", "Network", "ComponentID", "Type"],
    )?;
    let nets = values(&q, "Network");
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
                && (nets.is_empty()
                    || e.ip_addresses
                        .iter()
                        .any(|a| matches(&nets, a.network.as_deref())))
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

async fn get_endpoint(
    State(s): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<RedfishEndpoint>, Problem> {
    let (id, _) = super::enums::normalize_xname(&id)?;
    s.get_redfish_endpoint(id.clone())
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no RedfishEndpoint {id}")))
}

async fn patch_endpoint(
    State(s): State<Store>,
    Path(id): Path<String>,
    Json(patch): Json<Value>,
) -> Result<Json<RedfishEndpoint>, Problem> {
    let (id, _) = super::enums::normalize_xname(&id)?;
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
    let (id, _) = super::enums::normalize_xname(&id)?;
    if s.delete_redfish_endpoint(id.clone()).await? {
        Ok(Json(json!({"code": 0, "message": "deleted 1 entry"})))
    } else {
        Err(Problem::not_found(format!("no RedfishEndpoint {id}")))
    }
}

async fn post_group(State(s): State<Store>, Json(g): Json<Group>) -> Result<Response, Problem> {
    let g = super::groups::check_group(g)?;
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
    Query(q): Params,
) -> Result<Json<Group>, Problem> {
    super::groups::no_partition(&q, "GET /groups/{label}")?;
    let label = super::groups::check_field("group label", &label)?;
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
    Query(q): Params,
) -> Result<Json<Value>, Problem> {
    super::groups::no_partition(&q, "GET /groups/{label}/members")?;
    let label = super::groups::check_field("group label", &label)?;
    let g = s
        .get_group(label.clone())
        .await?
        .ok_or_else(|| Problem::not_found(format!("no group {label}")))?;
    Ok(Json(json!({ "ids": g.members.ids })))
}

/// `PATCH /groups/{label}`: `description` and/or `tags`; the label and members stay. Other
/// fields are ignored as SMD ignores them: `ochami smd group update` sends the whole group.
#[derive(serde::Deserialize)]
struct GroupPatch {
    description: Option<String>,
    tags: Option<Vec<String>>,
}

async fn patch_group(
    State(s): State<Store>,
    Path(label): Path<String>,
    Json(p): Json<GroupPatch>,
) -> Result<StatusCode, Problem> {
    let label = super::groups::check_field("group label", &label)?;
    let tags = p
        .tags
        .map(|t| {
            t.iter()
                .map(|x| super::groups::check_field("tag", x))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    s.update_group(label, move |g| {
        if let Some(d) = p.description {
            g.description = Some(d);
        }
        if let Some(t) = tags {
            g.tags = t;
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
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
