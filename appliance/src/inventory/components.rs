//! `/hsm/v2/State/Components` as SMD serves it: filtered lists, PUT with SMD's
//! `{"Component": …, "Force": …}` body, ByNID, the Query forms, the per-field and `Bulk*`
//! PATCHes, collection DELETE, and `/service/values`.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use serde_json::{Map, Value, json};

use super::enums::{self, normalize};
use super::query::{ComponentFilter, Pairs, allow_only};
use crate::http::{Json, Problem};
use crate::store::{Component, Store};

/// Routes added to the scoped SMD router.
pub fn router() -> Router<Store> {
    Router::new()
        .route("/hsm/v2/State/Components/ByNID/{nid}", get(by_nid))
        .route("/hsm/v2/State/Components/ByNID/Query", post(by_nid_query))
        .route("/hsm/v2/State/Components/Query", post(query_post))
        .route("/hsm/v2/State/Components/Query/{id}", get(query_get))
        .route("/hsm/v2/State/Components/BulkNID", patch(bulk_nid))
        .route(
            "/hsm/v2/State/Components/BulkStateData",
            patch(|s, b| bulk(s, b, Field::StateData)),
        )
        .route(
            "/hsm/v2/State/Components/BulkFlagOnly",
            patch(|s, b| bulk(s, b, Field::FlagOnly)),
        )
        .route(
            "/hsm/v2/State/Components/BulkEnabled",
            patch(|s, b| bulk(s, b, Field::Enabled)),
        )
        .route(
            "/hsm/v2/State/Components/BulkSoftwareStatus",
            patch(|s, b| bulk(s, b, Field::SoftwareStatus)),
        )
        .route(
            "/hsm/v2/State/Components/BulkRole",
            patch(|s, b| bulk(s, b, Field::Role)),
        )
        .route(
            "/hsm/v2/State/Components/{id}/StateData",
            patch(|s, p, b| one(s, p, b, Field::StateData)),
        )
        .route(
            "/hsm/v2/State/Components/{id}/FlagOnly",
            patch(|s, p, b| one(s, p, b, Field::FlagOnly)),
        )
        .route(
            "/hsm/v2/State/Components/{id}/Enabled",
            patch(|s, p, b| one(s, p, b, Field::Enabled)),
        )
        .route(
            "/hsm/v2/State/Components/{id}/SoftwareStatus",
            patch(|s, p, b| one(s, p, b, Field::SoftwareStatus)),
        )
        .route(
            "/hsm/v2/State/Components/{id}/Role",
            patch(|s, p, b| one(s, p, b, Field::Role)),
        )
        .route(
            "/hsm/v2/State/Components/{id}/NID",
            patch(|s, p, b| one(s, p, b, Field::Nid)),
        )
}

/// SMD's `/service/values[/…]`: open in SMD, like the health routes.
pub fn values_router() -> Router {
    let mut r = Router::new().route(
        "/hsm/v2/service/values",
        get(|| async { Json(values(None)) }),
    );
    for key in [
        "arch", "class", "flag", "nettype", "role", "subrole", "state", "type",
    ] {
        r = r.route(
            &format!("/hsm/v2/service/values/{key}"),
            get(move || async move { Json(values(Some(key))) }),
        );
    }
    r
}

fn values(only: Option<&str>) -> Value {
    let all = [
        ("arch", "Arch", enums::ARCHES),
        ("class", "Class", enums::CLASSES),
        ("flag", "Flag", enums::FLAGS),
        ("nettype", "NetType", enums::NET_TYPES),
        ("role", "Role", enums::ROLES),
        ("subrole", "SubRole", enums::SUB_ROLES),
        ("state", "State", enums::STATES),
        // The component types rackboot's xnames can name.
        (
            "type",
            "Type",
            &["Cabinet", "Chassis", "ComputeModule", "NodeBMC", "Node"][..],
        ),
    ];
    let mut out = Map::new();
    for (key, name, list) in all {
        if only.is_none_or(|o| o == key) {
            out.insert(name.into(), json!(list));
        }
    }
    Value::Object(out)
}

pub async fn list(State(s): State<Store>, Query(q): Query<Pairs>) -> Result<Json<Value>, Problem> {
    let f = ComponentFilter::from_query(&q, "GET /State/Components", true)?;
    let groups = s.list_groups().await?;
    let comps = f.apply(s.list_components().await?, &groups);
    Ok(Json(json!({ "Components": comps })))
}

pub async fn delete_all(
    State(s): State<Store>,
    Query(q): Query<Pairs>,
) -> Result<Json<Value>, Problem> {
    allow_only(&q, "DELETE /State/Components", &[])?;
    deleted(s.delete_all_components().await?)
}

/// SMD's answer to a collection DELETE: the count, or 404 when there was nothing.
pub fn deleted(n: usize) -> Result<Json<Value>, Problem> {
    if n == 0 {
        return Err(Problem::not_found("no entries to delete"));
    }
    Ok(Json(
        json!({"code": 0, "message": format!("deleted {n} entries")}),
    ))
}

/// `PUT /State/Components/{xname}`: SMD's `{"Component": {…}, "Force": bool}` (what `ochami smd
/// component update` sends), or a bare Component as rackboot took before.
pub async fn put(
    State(s): State<Store>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<StatusCode, Problem> {
    let (url_id, _) = enums::normalize_xname(&id)?;
    let mut inner = match body.get("Component") {
        Some(c) => c.clone(),
        None => body,
    };
    // SMD fills a missing or empty ID from the URL.
    if let Some(o) = inner.as_object_mut()
        && o.get("ID")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        o.insert("ID".into(), url_id.clone().into());
    }
    let c: Component = serde_json::from_value(inner)
        .map_err(|e| Problem::bad_request(format!("invalid Component: {e}")))?;
    if c.id.to_ascii_lowercase() != url_id {
        return Err(Problem::bad_request(format!(
            "ID in URL ({url_id}) and body ({}) do not match",
            c.id
        )));
    }
    s.put_components(vec![enums::verify_component(c)?]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn by_nid(
    State(s): State<Store>,
    Path(nid): Path<String>,
) -> Result<Json<Component>, Problem> {
    let nid: i64 = nid
        .parse()
        .map_err(|_| Problem::bad_request(format!("invalid NID {nid:?}: expected an integer")))?;
    s.list_components()
        .await?
        .into_iter()
        .find(|c| c.nid == Some(nid))
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no component with NID {nid}")))
}

/// Is `id` the xname `parent` or one below it (`x1000c0` → `x1000c0s0b0n0`, not `x1000c01`)?
fn under(id: &str, parent: &str) -> bool {
    id == parent
        || id
            .strip_prefix(parent)
            .and_then(|rest| rest.chars().next())
            .is_some_and(|c| c.is_ascii_alphabetic())
}

async fn components_under(
    s: &Store,
    f: &ComponentFilter,
    parents: &[String],
) -> Result<Json<Value>, Problem> {
    let groups = s.list_groups().await?;
    let comps: Vec<Component> = s
        .list_components()
        .await?
        .into_iter()
        .filter(|c| parents.iter().any(|p| under(&c.id, p)))
        .collect();
    Ok(Json(json!({ "Components": f.apply(comps, &groups) })))
}

async fn query_post(
    State(s): State<Store>,
    Json(body): Json<Map<String, Value>>,
) -> Result<Json<Value>, Problem> {
    let ids: Vec<String> = match body.get("ComponentIDs") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| Problem::bad_request("ComponentIDs must be xname strings"))
                    .and_then(|x| enums::normalize_xname(x).map(|(id, _)| id))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(Problem::bad_request("Missing IDs: give ComponentIDs")),
    };
    let f = ComponentFilter::from_body(&body, "POST /State/Components/Query", &["ComponentIDs"])?;
    components_under(&s, &f, &ids).await
}

async fn query_get(
    State(s): State<Store>,
    Path(id): Path<String>,
    Query(q): Query<Pairs>,
) -> Result<Json<Value>, Problem> {
    let (id, _) = enums::normalize_xname(&id)?;
    let f = ComponentFilter::from_query(&q, "GET /State/Components/Query/{xname}", true)?;
    components_under(&s, &f, &[id]).await
}

/// `"0-24"` or `"2"` → an inclusive range.
fn nid_range(r: &str) -> Result<(i64, i64), Problem> {
    let bad = || Problem::bad_request(format!("NIDRange {r:?}: expected \"N\" or \"N-M\""));
    let (a, b) = match r.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (r.trim(), r.trim()),
    };
    let (a, b) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b {
        return Err(bad());
    }
    Ok((a, b))
}

async fn by_nid_query(
    State(s): State<Store>,
    Json(body): Json<Map<String, Value>>,
) -> Result<Json<Value>, Problem> {
    let ranges: Vec<(i64, i64)> = match body.get("NIDRanges") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| Problem::bad_request("NIDRanges must be strings like \"0-24\""))
                    .and_then(nid_range)
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(Problem::bad_request("Missing NIDRanges")),
    };
    // SMD's ByNID query takes partition and the *only field filters, nothing else.
    for k in body.keys() {
        if ![
            "NIDRanges",
            "partition",
            "stateonly",
            "flagonly",
            "roleonly",
            "nidonly",
        ]
        .iter()
        .any(|a| a.eq_ignore_ascii_case(k))
        {
            return Err(Problem::bad_request(format!(
                "{k:?} is not supported by POST /State/Components/ByNID/Query (supported: NIDRanges, partition, stateonly, flagonly, roleonly, nidonly)"
            )));
        }
    }
    let f =
        ComponentFilter::from_body(&body, "POST /State/Components/ByNID/Query", &["NIDRanges"])?;
    let groups = s.list_groups().await?;
    let comps: Vec<Component> = s
        .list_components()
        .await?
        .into_iter()
        .filter(|c| {
            c.nid
                .is_some_and(|n| ranges.iter().any(|(a, b)| (*a..=*b).contains(&n)))
        })
        .collect();
    Ok(Json(json!({ "Components": f.apply(comps, &groups) })))
}

/// Which part of a Component a PATCH changes.
#[derive(Debug, Clone, Copy)]
enum Field {
    StateData,
    FlagOnly,
    Enabled,
    SoftwareStatus,
    Role,
    Nid,
}

/// A checked PATCH, applied to each named component.
#[derive(Debug, Clone)]
enum Change {
    State(String, String),
    Flag(String),
    Enabled(bool),
    SoftwareStatus(String),
    Role(String, Option<String>),
    Nid(i64),
}

impl Change {
    fn parse(field: Field, b: &Map<String, Value>) -> Result<Change, Problem> {
        let text = |k: &str| -> Result<Option<&str>, Problem> {
            match b.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(Problem::bad_request(format!("{k} must be a string"))),
            }
        };
        let need = |k: &str| -> Result<&str, Problem> {
            text(k)?
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Problem::bad_request(format!("{k} is required")))
        };
        Ok(match field {
            Field::StateData => Change::State(
                normalize("State", need("State")?, enums::STATES)?,
                // SMD: a StateData change without a Flag sets it back to OK.
                match text("Flag")? {
                    None | Some("") => "OK".into(),
                    Some(f) => normalize("Flag", f, enums::FLAGS)?,
                },
            ),
            Field::FlagOnly => Change::Flag(normalize("Flag", need("Flag")?, enums::FLAGS)?),
            Field::Enabled => match b.get("Enabled") {
                Some(Value::Bool(e)) => Change::Enabled(*e),
                _ => return Err(Problem::bad_request("Enabled (true or false) is required")),
            },
            Field::SoftwareStatus => match text("SoftwareStatus")? {
                Some(v) => Change::SoftwareStatus(v.to_owned()),
                None => return Err(Problem::bad_request("SoftwareStatus is required")),
            },
            Field::Role => Change::Role(
                enums::normalize_role("Role", need("Role")?, enums::ROLES)?,
                text("SubRole")?
                    .filter(|v| !v.is_empty())
                    .map(|v| enums::normalize_role("SubRole", v, enums::SUB_ROLES))
                    .transpose()?,
            ),
            Field::Nid => match b.get("NID").and_then(Value::as_i64) {
                Some(n) if n >= 0 => Change::Nid(n),
                _ => return Err(Problem::bad_request("NID (an integer ≥ 0) is required")),
            },
        })
    }

    fn apply(&self, c: &mut Component) {
        match self {
            Change::State(st, fl) => {
                c.state = Some(st.clone());
                c.flag = Some(fl.clone());
            }
            Change::Flag(f) => c.flag = Some(f.clone()),
            Change::Enabled(e) => c.enabled = Some(*e),
            Change::SoftwareStatus(v) => {
                c.extra.insert("SoftwareStatus".into(), v.clone().into());
            }
            Change::Role(r, sr) => {
                c.role = Some(r.clone());
                c.sub_role.clone_from(sr);
            }
            Change::Nid(n) => c.nid = Some(*n),
        }
    }
}

/// `PATCH /State/Components/Bulk{StateData,FlagOnly,Enabled,SoftwareStatus,Role}`:
/// `{"ComponentIDs": [...], <fields>}`, all or nothing.
async fn bulk(
    State(s): State<Store>,
    Json(b): Json<Map<String, Value>>,
    field: Field,
) -> Result<StatusCode, Problem> {
    let ids: Vec<String> = match b.get("ComponentIDs") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| Problem::bad_request("ComponentIDs must be xname strings"))
                    .and_then(|x| enums::normalize_xname(x).map(|(id, _)| id))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(Problem::bad_request("Missing ComponentIDs")),
    };
    let change = Change::parse(field, &b)?;
    s.update_components(ids, move |c| {
        change.apply(c);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH /State/Components/{xname}/{StateData,FlagOnly,Enabled,SoftwareStatus,Role,NID}`.
async fn one(
    State(s): State<Store>,
    Path(id): Path<String>,
    Json(b): Json<Map<String, Value>>,
    field: Field,
) -> Result<StatusCode, Problem> {
    let (id, _) = enums::normalize_xname(&id)?;
    // SMD ignores an ID in the body unless it contradicts the URL.
    if let Some(body_id) = b.get("ID").and_then(Value::as_str)
        && !body_id.is_empty()
        && !body_id.eq_ignore_ascii_case(&id)
    {
        return Err(Problem::bad_request(format!(
            "ID in URL ({id}) and body ({body_id}) do not match"
        )));
    }
    let change = Change::parse(field, &b)?;
    s.update_components(vec![id], move |c| {
        change.apply(c);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH /State/Components/BulkNID`: `{"Components": [{"ID", "NID"}, …]}` (what `ochami smd
/// component update --nid` sends).
async fn bulk_nid(
    State(s): State<Store>,
    Json(b): Json<Map<String, Value>>,
) -> Result<StatusCode, Problem> {
    let Some(Value::Array(list)) = b.get("Components") else {
        return Err(Problem::bad_request("Missing Components"));
    };
    let mut nids = std::collections::HashMap::new();
    for item in list {
        let id = item.get("ID").and_then(Value::as_str).unwrap_or("");
        let (id, _) = enums::normalize_xname(id)?;
        let nid = match item.get("NID").and_then(Value::as_i64) {
            Some(n) if n >= 0 => n,
            _ => {
                return Err(Problem::bad_request(format!(
                    "{id}: NID (an integer ≥ 0) is required"
                )));
            }
        };
        nids.insert(id, nid);
    }
    if nids.is_empty() {
        return Err(Problem::bad_request("Missing Components"));
    }
    let ids: Vec<String> = nids.keys().cloned().collect();
    s.update_components(ids, move |c| {
        if let Some(n) = nids.get(&c.id) {
            c.nid = Some(*n);
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_and_ranges() {
        assert!(under("x1000c0s0b0n0", "x1000c0"));
        assert!(under("x1000c0", "x1000c0"));
        assert!(!under("x1000c01", "x1000c0"));
        assert_eq!(nid_range("0-24").ok(), Some((0, 24)));
        assert_eq!(nid_range("7").ok(), Some((7, 7)));
        assert!(nid_range("9-2").is_err());
        assert!(nid_range("a").is_err());
    }
}
