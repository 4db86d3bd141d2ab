//! Discovery (`discovery` scope), power and reprovisioning (`power` scope) over HTTP.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};

use super::{Discovery, FirmwareImage, NodeResult, PowerAction, TargetResult};
use crate::http::{Json, Problem};
use crate::inventory::xname;

#[derive(Debug, Deserialize, Serialize)]
pub struct DiscoverRequest {
    /// URLs (`https://10.0.0.5`), IPv4 addresses or CIDRs.
    pub targets: Vec<String>,
    /// Accept any BMC certificate for this run (logged).
    #[serde(default)]
    pub insecure: bool,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct DiscoverResponse {
    pub results: Vec<TargetResult>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct CredentialsRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct PowerRequest {
    pub xnames: Vec<String>,
    pub action: PowerAction,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct NodesRequest {
    pub xnames: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct FirmwareRequest {
    pub xnames: Vec<String>,
    /// The name of an image in rackboot's image store (served at /images/NAME).
    pub image: String,
    /// Redfish URI to update; default: the node's ComputerSystem.
    #[serde(default)]
    pub target: Option<String>,
    /// Push the image (multipart, `MultipartHttpPushUri`) even where SimpleUpdate is offered.
    #[serde(default)]
    pub push: bool,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct NodeResults {
    pub results: Vec<NodeResult>,
}

/// `/rackboot/v1/discovery`, `/rackboot/v1/bmc/…` (wrap with the `discovery` scope).
pub fn discovery_router(d: Discovery) -> Router {
    Router::new()
        .route("/rackboot/v1/discovery", post(discover))
        .route("/rackboot/v1/bmc/credentials", get(list_credentials))
        .route(
            "/rackboot/v1/bmc/credentials/{target}",
            put(set_credentials),
        )
        .route("/rackboot/v1/bmc/pins", axum::routing::delete(unpin))
        .with_state(d)
}

/// What the firmware routes need besides discovery: the image store and the base URL BMCs
/// fetch images from.
#[derive(Clone)]
pub struct FirmwareCtx {
    pub discovery: Discovery,
    pub images: crate::images::ImageStore,
    pub base_url: String,
}

/// `/rackboot/v1/firmware` (wrap with the `firmware` scope).
pub fn firmware_router(ctx: FirmwareCtx) -> Router {
    Router::new()
        .route("/rackboot/v1/firmware", get(firmware_list))
        .route("/rackboot/v1/firmware/update", post(firmware_update))
        .with_state(ctx)
}

async fn firmware_list(
    State(c): State<FirmwareCtx>,
) -> Result<Json<Vec<super::FirmwareRow>>, Problem> {
    Ok(Json(
        c.discovery
            .firmware_list()
            .await
            .map_err(Problem::internal)?,
    ))
}

async fn firmware_update(
    State(c): State<FirmwareCtx>,
    Json(req): Json<FirmwareRequest>,
) -> Result<Json<NodeResults>, Problem> {
    check_xnames(&req.xnames)?;
    let rec = c.images.get(&req.image).await?.ok_or_else(|| {
        Problem::not_found(format!(
            "no image {:?}: import it first (rackboot image import NAME FILE)",
            req.image
        ))
    })?;
    let blob = c.images.mapped(&rec).await?;
    let image = FirmwareImage {
        uri: format!("{}/images/{}", c.base_url, rec.name),
        name: rec.name,
        data: bytes::Bytes::from_owner(blob),
        push: req.push,
    };
    Ok(Json(NodeResults {
        results: c
            .discovery
            .firmware_update(&req.xnames, image, req.target)
            .await,
    }))
}

/// `/rackboot/v1/power`, `/rackboot/v1/reprovision` (wrap with the `power` scope).
pub fn power_router(d: Discovery) -> Router {
    Router::new()
        .route("/rackboot/v1/power", post(power))
        .route("/rackboot/v1/reprovision", post(reprovision))
        .with_state(d)
}

/// Media type of the streamed discovery answer: one JSON object per line, `{"progress": …}`
/// while it runs, then `{"results": […]}`.
pub const NDJSON: &str = "application/x-ndjson";

async fn discover(
    State(d): State<Discovery>,
    headers: axum::http::HeaderMap,
    Json(req): Json<DiscoverRequest>,
) -> Result<axum::response::Response, Problem> {
    use axum::response::IntoResponse;
    if req.targets.is_empty() {
        return Err(Problem::bad_request(
            "targets is empty: give URLs, IPv4 addresses or CIDRs",
        ));
    }
    if req.targets.len() > 4096 {
        return Err(Problem::bad_request("at most 4096 targets per request"));
    }
    let streamed = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(NDJSON));
    if !streamed {
        return Ok(Json(DiscoverResponse {
            results: d.discover(&req.targets, req.insecure).await,
        })
        .into_response());
    }
    let (progress_tx, progress) = tokio::sync::watch::channel(super::Progress::default());
    let (lines_tx, lines) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    tokio::spawn(async move {
        let run = d.discover_watched(&req.targets, req.insecure, &progress_tx);
        tokio::pin!(run);
        let line = |v: serde_json::Value| bytes::Bytes::from(format!("{v}\n"));
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last = None;
        let results = loop {
            tokio::select! {
                r = &mut run => break r,
                _ = tick.tick() => {
                    let p = *progress.borrow();
                    if last != Some(p) {
                        last = Some(p);
                        // Never wait for a slow reader; a client that went away stops
                        // nothing either: the run still lands in the inventory.
                        let _ = lines_tx.try_send(line(serde_json::json!({"progress": p})));
                    }
                }
            }
        };
        let p = *progress.borrow();
        let _ = lines_tx
            .send(line(serde_json::json!({"progress": p, "results": results})))
            .await;
    });
    let body = futures_util::stream::unfold(lines, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, NDJSON)],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

async fn list_credentials(State(d): State<Discovery>) -> Result<Json<serde_json::Value>, Problem> {
    let list = d.store.list_bmc_credentials().await?;
    Ok(Json(serde_json::Value::Array(
        list.into_iter()
            .map(|(t, u)| serde_json::json!({"target": t, "username": u}))
            .collect(),
    )))
}

async fn set_credentials(
    State(d): State<Discovery>,
    Path(target): Path<String>,
    Json(c): Json<CredentialsRequest>,
) -> Result<StatusCode, Problem> {
    let ok = target == "default"
        || target.parse::<std::net::Ipv4Addr>().is_ok()
        || (!target.is_empty()
            && target.len() <= 253
            && target
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b)));
    if !ok {
        return Err(Problem::bad_request(format!(
            "credential target {target:?}: use \"default\", a BMC IPv4 address or host name"
        )));
    }
    if c.username.is_empty() {
        return Err(Problem::bad_request("username is empty"));
    }
    d.set_credentials(&target, &c.username, &c.password)
        .await
        .map_err(Problem::internal)?;
    tracing::info!(target = %target, username = %c.username, "BMC credentials stored (sealed)");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct PinQuery {
    base: String,
}

async fn unpin(
    State(d): State<Discovery>,
    Query(q): Query<PinQuery>,
) -> Result<StatusCode, Problem> {
    if d.store.unpin_bmc(q.base.clone()).await? {
        tracing::warn!(bmc = %q.base, "BMC certificate pin cleared");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!(
            "no pinned certificate for {}",
            q.base
        )))
    }
}

fn check_xnames(xnames: &[String]) -> Result<(), Problem> {
    if xnames.is_empty() {
        return Err(Problem::bad_request("xnames is empty"));
    }
    for x in xnames {
        xname::parse(x).map_err(Problem::bad_request)?;
    }
    Ok(())
}

async fn power(
    State(d): State<Discovery>,
    Json(req): Json<PowerRequest>,
) -> Result<Json<NodeResults>, Problem> {
    check_xnames(&req.xnames)?;
    Ok(Json(NodeResults {
        results: d.power(&req.xnames, req.action).await,
    }))
}

async fn reprovision(
    State(d): State<Discovery>,
    Json(req): Json<NodesRequest>,
) -> Result<Json<NodeResults>, Problem> {
    check_xnames(&req.xnames)?;
    Ok(Json(NodeResults {
        results: d.reprovision(&req.xnames).await,
    }))
}
