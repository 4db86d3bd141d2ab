//! Identity HTTP routes.
//!
//! - HTTPS and HTTP, open: `GET /identity/v1/ca.pem`, `GET /identity/v1/crl`.
//! - HTTPS, open (the join token is the credential): `POST /identity/v1/enroll`,
//!   `GET /identity/v1/enroll/{id}`.
//! - HTTPS with a client certificate (`/identity/v1/node/…`): renew, secrets, cloud-init
//!   user-data, phone-home, whoami.
//! - HTTP admin API (scope `identity`): CA info, certificates, revocation, approvals, audit,
//!   secrets, join tokens issued by an administrator.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};

use super::{Enrolled, Identity, NodeIdentity};
use crate::http::server::PeerCertificate;
use crate::http::{Json, Problem};
use crate::inventory::xname;
use crate::store::SecretScope;
use crate::timeline::{Subject, stage};

#[derive(Debug, Deserialize, Serialize)]
pub struct EnrollBody {
    pub token: String,
    pub csr: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct RenewBody {
    pub csr: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RevokeBody {
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NodeQuery {
    #[serde(default)]
    node: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ScopeQuery {
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
}

pub(super) fn v4(peer: SocketAddr) -> Result<Ipv4Addr, Problem> {
    match peer.ip() {
        IpAddr::V4(ip) => Ok(ip),
        IpAddr::V6(ip) => ip
            .to_ipv4_mapped()
            .ok_or_else(|| Problem::forbidden("enrollment is IPv4 only")),
    }
}

/// Routes open on both listeners.
pub fn public_router(id: Identity) -> Router {
    Router::new()
        .route("/identity/v1/ca.pem", get(ca_pem))
        .route("/identity/v1/crl", get(crl))
        .with_state(id)
}

/// Routes of the HTTPS listener (besides [`public_router`]).
pub fn https_router(id: Identity) -> Router {
    let node = Router::new()
        .route("/identity/v1/node/whoami", get(whoami))
        .route("/identity/v1/node/renew", post(renew))
        .route("/identity/v1/node/secrets/{name}", get(node_secret))
        .route(
            "/identity/v1/node/cloud-init/user-data",
            get(node_user_data),
        )
        .route("/identity/v1/node/phone-home", post(node_phone_home))
        .route("/identity/v1/node/events", post(node_event))
        .layer(axum::middleware::from_fn_with_state(
            id.clone(),
            require_node_cert,
        ));
    Router::new()
        .route("/identity/v1/enroll", post(enroll))
        .route("/identity/v1/enroll/{id}", get(enroll_status))
        .with_state(id.clone())
        .merge(super::tpm_routes::https_router(id.clone()))
        .merge(node.with_state(id))
}

/// The admin API (wrap with the `identity` scope).
pub fn admin_router(id: Identity) -> Router {
    Router::new()
        .route("/identity/v1/ca", get(ca_info))
        .route("/identity/v1/certs", get(list_certs))
        .route("/identity/v1/certs/revoke", post(revoke))
        .route("/identity/v1/requests", get(list_requests))
        .route("/identity/v1/requests/{id}/approve", post(approve))
        .route("/identity/v1/audit", get(audit))
        .route("/identity/v1/join-tokens", post(issue_join_token))
        .route("/identity/v1/secrets", get(list_secrets))
        .route(
            "/identity/v1/secrets/{name}",
            put(set_secret).delete(delete_secret),
        )
        .with_state(id.clone())
        .merge(super::tpm_routes::admin_router(id))
}

/// Maps the verified client certificate to its node, or refuses.
async fn require_node_cert(State(id): State<Identity>, mut req: Request, next: Next) -> Response {
    let Some(PeerCertificate(der)) = req.extensions().get::<PeerCertificate>().cloned() else {
        return Problem::unauthorized(
            "this route needs a client certificate from the rack CA (enroll first: `rackboot agent enroll`)",
        )
        .into_response();
    };
    match id.node_for_cert(&der).await {
        Ok(node) => {
            req.extensions_mut().insert(node);
            next.run(req).await
        }
        Err(p) => {
            tracing::warn!(reason = %p.detail, "mTLS request refused");
            p.into_response()
        }
    }
}

async fn ca_pem(State(id): State<Identity>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        id.ca().chain_pem().to_owned(),
    )
        .into_response()
}

async fn crl(State(id): State<Identity>) -> Result<Response, Problem> {
    Ok((
        [(header::CONTENT_TYPE, "application/pkix-crl")],
        id.crl().await?,
    )
        .into_response())
}

fn enrolled(e: Enrolled) -> Response {
    let status = if e.state == "issued" {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (status, Json(e)).into_response()
}

async fn enroll(
    State(id): State<Identity>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(b): Json<EnrollBody>,
) -> Result<Response, Problem> {
    let peer = v4(peer)?;
    Ok(enrolled(id.enroll(peer, &b.token, &b.csr).await?))
}

async fn enroll_status(
    State(id): State<Identity>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(req): Path<String>,
) -> Result<Response, Problem> {
    let peer = v4(peer)?;
    Ok(enrolled(id.enroll_status(peer, &req).await?))
}

async fn whoami(axum::Extension(node): axum::Extension<NodeIdentity>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"xname": node.xname, "serial": node.serial}))
}

async fn renew(
    State(id): State<Identity>,
    axum::Extension(node): axum::Extension<NodeIdentity>,
    Json(b): Json<RenewBody>,
) -> Result<Response, Problem> {
    Ok(enrolled(id.renew(&node, &b.csr).await?))
}

fn check_secret_name(name: &str) -> Result<(), Problem> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(Problem::bad_request(format!(
            "secret name {name:?}: use 1-128 letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(())
}

async fn node_secret(
    State(id): State<Identity>,
    axum::Extension(node): axum::Extension<NodeIdentity>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    check_secret_name(&name)?;
    let value = id.secret(&node, &name).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        value,
    )
        .into_response())
}

async fn node_user_data(
    State(id): State<Identity>,
    axum::Extension(node): axum::Extension<NodeIdentity>,
) -> Result<Response, Problem> {
    let (inp, vars) = crate::cloudinit::routes::load(id.store(), &node.xname).await?;
    let doc = crate::cloudinit::user_data(&inp, &vars)
        .map_err(|e| Problem::unprocessable(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/yaml; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        doc,
    )
        .into_response())
}

async fn node_phone_home(
    State(id): State<Identity>,
    axum::Extension(node): axum::Extension<NodeIdentity>,
) -> StatusCode {
    id.inner.timeline.record(
        Subject::Xname(node.xname.clone()),
        stage::PHONE_HOME,
        true,
        serde_json::json!({"via": "mtls", "serial": node.serial}),
    );
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct NodeEvent {
    stage: String,
    #[serde(default = "yes")]
    ok: bool,
    #[serde(default)]
    detail: serde_json::Value,
}

fn yes() -> bool {
    true
}

/// A boot event the node reports itself (any timeline stage), authenticated by its certificate.
async fn node_event(
    State(id): State<Identity>,
    axum::Extension(node): axum::Extension<NodeIdentity>,
    Json(e): Json<NodeEvent>,
) -> Result<StatusCode, Problem> {
    let Some(st) = stage::ALL.iter().find(|s| **s == e.stage) else {
        return Err(Problem::bad_request(format!(
            "unknown stage {:?}; known: {}",
            e.stage,
            stage::ALL.join(", ")
        )));
    };
    if e.detail.to_string().len() > 4096 {
        return Err(Problem::payload_too_large(
            "detail is at most 4 KiB of JSON",
        ));
    }
    id.inner.timeline.record(
        Subject::Xname(node.xname.clone()),
        st,
        e.ok,
        serde_json::json!({"via": "mtls", "serial": node.serial, "detail": e.detail}),
    );
    Ok(StatusCode::NO_CONTENT)
}

async fn ca_info(State(id): State<Identity>) -> Result<Json<super::ca::CaInfo>, Problem> {
    Ok(Json(id.ca().info().map_err(Problem::internal)?))
}

fn check_node(x: &Option<String>) -> Result<(), Problem> {
    if let Some(x) = x {
        xname::parse(x).map_err(Problem::bad_request)?;
    }
    Ok(())
}

async fn list_certs(
    State(id): State<Identity>,
    Query(q): Query<NodeQuery>,
) -> Result<Json<Vec<crate::store::CertRow>>, Problem> {
    check_node(&q.node)?;
    Ok(Json(id.store().list_certs(q.node).await?))
}

async fn revoke(
    State(id): State<Identity>,
    Json(b): Json<RevokeBody>,
) -> Result<Json<serde_json::Value>, Problem> {
    check_node(&b.node)?;
    if b.serial.is_none() == b.node.is_none() {
        return Err(Problem::bad_request(
            "give exactly one of serial (one certificate) or node (all of a node's certificates)",
        ));
    }
    let serial = b
        .serial
        .map(|s| s.trim().to_ascii_lowercase().replace(':', ""));
    let revoked = id
        .store()
        .revoke_certs(
            serial.clone(),
            b.node.clone(),
            b.reason
                .unwrap_or_else(|| "revoked by an administrator".into()),
        )
        .await?;
    if revoked.is_empty() {
        return Err(Problem::not_found(format!(
            "no unrevoked certificate {}",
            serial.or(b.node).unwrap_or_default()
        )));
    }
    tracing::warn!(serials = ?revoked, "certificates revoked");
    Ok(Json(serde_json::json!({ "revoked": revoked })))
}

#[derive(Debug, Deserialize)]
struct IssueBody {
    node: String,
}

/// An administrator's join token for a node (bound to its first inventory address, superseding
/// its unused one), e.g. to enroll it by hand or for a benchmark; audited like the boot path's.
async fn issue_join_token(
    State(id): State<Identity>,
    Json(b): Json<IssueBody>,
) -> Result<Json<serde_json::Value>, Problem> {
    xname::parse_node(&b.node).map_err(Problem::bad_request)?;
    let info = id
        .store()
        .node_info(b.node.clone())
        .await?
        .ok_or_else(|| Problem::not_found(format!("no node {} in the inventory", b.node)))?;
    let ip = info
        .interfaces
        .iter()
        .find_map(|(_, ip)| *ip)
        .ok_or_else(|| {
            Problem::unprocessable(format!(
                "{} has no EthernetInterface with an address to bind a token to",
                b.node
            ))
        })?;
    // A busy or full store is the store's problem (503 with Retry-After, 507), not a 500.
    let token = id.mint_join_token(&b.node, ip).await.map_err(|e| match e
        .downcast::<crate::store::StoreError>()
    {
        Ok(store) => Problem::from(store),
        Err(other) => Problem::internal(other),
    })?;
    tracing::info!(xname = %b.node, %ip, "join token issued through the admin API");
    Ok(Json(serde_json::json!({
        "node": b.node,
        "token": token,
        "bound_to": ip.to_string(),
        "ca": id.ca().fingerprint(),
    })))
}

async fn list_requests(
    State(id): State<Identity>,
) -> Result<Json<Vec<crate::store::EnrollRequest>>, Problem> {
    Ok(Json(id.store().list_enroll_requests().await?))
}

async fn approve(State(id): State<Identity>, Path(req): Path<String>) -> Result<Response, Problem> {
    Ok(enrolled(id.approve(&req).await?))
}

async fn audit(
    State(id): State<Identity>,
    Query(q): Query<NodeQuery>,
) -> Result<Json<Vec<crate::store::AuditRow>>, Problem> {
    check_node(&q.node)?;
    Ok(Json(id.store().list_audit(q.node).await?))
}

async fn list_secrets(State(id): State<Identity>) -> Result<Json<serde_json::Value>, Problem> {
    let list = id.store().list_secrets().await?;
    Ok(Json(serde_json::Value::Array(
        list.into_iter()
            .map(|(name, s)| serde_json::json!({"name": name, s.kind: s.scope}))
            .collect(),
    )))
}

fn scope_of(q: ScopeQuery) -> Result<SecretScope, Problem> {
    match (q.node, q.group) {
        (Some(n), None) => {
            xname::parse(&n).map_err(Problem::bad_request)?;
            Ok(SecretScope {
                kind: "node".into(),
                scope: n,
            })
        }
        (None, Some(g)) if !g.is_empty() && g.len() <= 128 => Ok(SecretScope {
            kind: "group".into(),
            scope: g,
        }),
        _ => Err(Problem::bad_request(
            "give exactly one of ?node=XNAME or ?group=LABEL",
        )),
    }
}

async fn set_secret(
    State(id): State<Identity>,
    Path(name): Path<String>,
    Query(q): Query<ScopeQuery>,
    body: axum::body::Bytes,
) -> Result<StatusCode, Problem> {
    check_secret_name(&name)?;
    let scope = scope_of(q)?;
    let value = std::str::from_utf8(&body)
        .map_err(|_| Problem::bad_request("a secret is UTF-8 text (base64-encode binary data)"))?;
    if value.len() > 64 * 1024 {
        return Err(Problem::payload_too_large("a secret is at most 64 KiB"));
    }
    id.set_secret(&name, scope, value).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_secret(
    State(id): State<Identity>,
    Path(name): Path<String>,
    Query(q): Query<ScopeQuery>,
) -> Result<StatusCode, Problem> {
    check_secret_name(&name)?;
    let scope = scope_of(q)?;
    if id.store().delete_secret(name.clone(), scope).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!(
            "no secret {name} for that scope"
        )))
    }
}
