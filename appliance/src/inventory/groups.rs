//! SMD groups and memberships as SMD's code serves them: labels and tags lower-cased and
//! matched against `^[-a-z0-9:._]+$` (the spec's hex-only pattern is a bug its own examples
//! break), filtered lists, `/groups/labels`, member changes answered with `[{"URI": …}]`, and
//! memberships keyed by component.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::enums;
use super::query::{ComponentFilter, Pairs, allow_only, values};
use crate::http::{Json, Problem};
use crate::store::{Group, Store, StoreError};

/// Routes added to the scoped SMD router.
pub fn router() -> Router<Store> {
    Router::new()
        .route("/hsm/v2/groups/labels", get(labels))
        .route("/hsm/v2/memberships", get(memberships))
}

/// SMD's group field rule (labels, tags, exclusiveGroup), after lower-casing.
pub fn check_field(what: &str, v: &str) -> Result<String, Problem> {
    let v = v.to_ascii_lowercase();
    if v.is_empty()
        || !v
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-:._".contains(&b))
    {
        return Err(Problem::bad_request(format!(
            "invalid {what} {v:?}: use lower-case letters, digits, - : . _"
        )));
    }
    Ok(v)
}

/// Normalises a group as SMD's `NewGroup` does; members must be xnames.
pub fn check_group(mut g: Group) -> Result<Group, Problem> {
    g.label = check_field("group label", &g.label)?;
    g.tags = g
        .tags
        .iter()
        .map(|t| check_field("tag", t))
        .collect::<Result<_, _>>()?;
    if let Some(Value::String(x)) = g.extra.get("exclusiveGroup")
        && !x.is_empty()
    {
        let x = check_field("exclusiveGroup", x)?;
        g.extra.insert("exclusiveGroup".into(), x.into());
    }
    let mut ids = Vec::with_capacity(g.members.ids.len());
    for id in &g.members.ids {
        let (id, _) = enums::normalize_xname(id)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    g.members.ids = ids;
    Ok(g)
}

pub async fn list(
    State(s): State<Store>,
    Query(q): Query<Pairs>,
) -> Result<Json<Vec<Group>>, Problem> {
    allow_only(&q, "GET /groups", &["group", "tag", "partition"])?;
    if !values(&q, "partition").is_empty() {
        return Err(Problem::bad_request(
            "partition: rackboot has no partitions (the rack is one partition); drop the filter",
        ));
    }
    let labels: Vec<String> = values(&q, "group")
        .into_iter()
        .map(|l| check_field("group label", l))
        .collect::<Result<_, _>>()?;
    let tags: Vec<String> = values(&q, "tag")
        .into_iter()
        .map(|t| check_field("tag", t))
        .collect::<Result<_, _>>()?;
    let list = s
        .list_groups()
        .await?
        .into_iter()
        .filter(|g| labels.is_empty() || labels.contains(&g.label.to_ascii_lowercase()))
        .filter(|g| {
            tags.is_empty()
                || g.tags
                    .iter()
                    .any(|t| tags.contains(&t.to_ascii_lowercase()))
        })
        .collect();
    Ok(Json(list))
}

/// `GET /groups/{label}` and `/groups/{label}/members` take only `partition`, which a rack does
/// not have.
pub fn no_partition(q: &[(String, String)], op: &str) -> Result<(), Problem> {
    allow_only(q, op, &["partition"])?;
    if values(q, "partition").is_empty() {
        Ok(())
    } else {
        Err(Problem::bad_request(
            "partition: rackboot has no partitions (the rack is one partition); drop the filter",
        ))
    }
}

async fn labels(
    State(s): State<Store>,
    Query(q): Query<Pairs>,
) -> Result<Json<Vec<String>>, Problem> {
    allow_only(&q, "GET /groups/labels", &[])?;
    Ok(Json(
        s.list_groups()
            .await?
            .into_iter()
            .map(|g| g.label)
            .collect(),
    ))
}

fn member_uri(label: &str, id: &str) -> Value {
    json!({"URI": format!("/hsm/v2/groups/{label}/members/{id}")})
}

#[derive(serde::Deserialize)]
pub struct Member {
    id: String,
}

/// `POST /groups/{label}/members` `{"id": xname}`: 201 `[{"URI": …}]`, 409 if already there.
pub async fn post_member(
    State(s): State<Store>,
    Path(label): Path<String>,
    Json(m): Json<Member>,
) -> Result<Response, Problem> {
    let label = check_field("group label", &label)?;
    let (id, _) = enums::normalize_xname(&m.id)?;
    let (l, i) = (label.clone(), id.clone());
    s.update_group(label.clone(), move |g| {
        if g.members.ids.contains(&i) {
            return Err(StoreError::Conflict(format!(
                "{i} is already a member of {l}"
            )));
        }
        g.members.ids.push(i);
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!([member_uri(&label, &id)]))).into_response())
}

/// `PUT /groups/{label}/members` `{"group": label, "ids": […]}` replaces the member list; SMD
/// answers 201 with one URI per member (204 when the list is now empty).
#[derive(serde::Deserialize)]
pub struct MembersPut {
    #[serde(default)]
    group: Option<String>,
    ids: Vec<String>,
}

pub async fn put_members(
    State(s): State<Store>,
    Path(label): Path<String>,
    Json(m): Json<MembersPut>,
) -> Result<Response, Problem> {
    let label = check_field("group label", &label)?;
    if let Some(g) = &m.group
        && !g.is_empty()
        && !g.eq_ignore_ascii_case(&label)
    {
        return Err(Problem::bad_request(format!(
            "body names group {g:?} but the URL names {label:?}"
        )));
    }
    let mut ids = Vec::with_capacity(m.ids.len());
    let mut bad = Vec::new();
    for id in m.ids {
        match enums::normalize_xname(&id) {
            Ok((id, _)) if !ids.contains(&id) => ids.push(id),
            Ok(_) => {}
            Err(_) => bad.push(id),
        }
    }
    if !bad.is_empty() {
        return Err(Problem::bad_request(format!(
            "invalid xname IDs: {}",
            bad.join(", ")
        )));
    }
    let g = s
        .update_group(label.clone(), move |g| {
            g.members.ids = ids;
            Ok(())
        })
        .await?;
    if g.members.ids.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let uris: Vec<Value> = g
        .members
        .ids
        .iter()
        .map(|id| member_uri(&label, id))
        .collect();
    Ok((StatusCode::CREATED, Json(Value::Array(uris))).into_response())
}

/// The membership of `id`: its groups (and no partition: a rack has none).
fn membership(id: &str, groups: &[Group]) -> Value {
    let labels: Vec<&str> = groups
        .iter()
        .filter(|g| g.members.ids.iter().any(|m| m == id))
        .map(|g| g.label.as_str())
        .collect();
    json!({ "id": id, "groupLabels": labels, "partitionName": "" })
}

/// `GET /memberships`: one entry per Component that passes SMD's component filter.
async fn memberships(
    State(s): State<Store>,
    Query(q): Query<Pairs>,
) -> Result<Json<Vec<Value>>, Problem> {
    let f = ComponentFilter::from_query(&q, "GET /memberships", false)?;
    let groups = s.list_groups().await?;
    let comps = f.apply(s.list_components().await?, &groups);
    Ok(Json(
        comps.iter().map(|c| membership(&c.id, &groups)).collect(),
    ))
}

/// `GET /memberships/{xname}`: 400 for a malformed xname, 404 when the xname is neither a
/// Component nor a member of any group (SMD keys memberships by Component; rackboot also
/// answers for group members it has no Component for).
pub async fn membership_of(
    State(s): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let (id, _) = enums::normalize_xname(&id)?;
    let groups = s.list_groups().await?;
    let member = groups.iter().any(|g| g.members.ids.contains(&id));
    if !member && s.get_component(id.clone()).await?.is_none() {
        return Err(Problem::not_found(format!("No such xname: {id}")));
    }
    Ok(Json(membership(&id, &groups)))
}
