//! `/rackboot/v1/status`, `/rackboot/v1/nodes/{xname}/timeline` and the `/rackboot/v1/events`
//! server-sent-events stream (admin area `status`).

use std::convert::Infallible;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::{Timeline, stage};
use crate::http::{Json, Problem};
use crate::inventory::xname;
use crate::store::{BootEvent, Store, StoreHealth, now_ms};
use crate::version::BuildInfo;

#[derive(Clone)]
struct Ctx {
    store: Store,
    timeline: Timeline,
    stuck_after: Duration,
}

pub fn router(store: Store, timeline: Timeline, stuck_after: Duration) -> Router {
    Router::new()
        .route("/rackboot/v1/status", get(status))
        .route("/rackboot/v1/nodes/{xname}/timeline", get(node_timeline))
        .route("/rackboot/v1/events", get(events))
        .with_state(Ctx {
            store,
            timeline,
            stuck_after,
        })
}

/// One node in `/rackboot/v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeStatus {
    pub xname: Option<String>,
    pub mac: String,
    pub ip: Option<String>,
    /// Boot number (per MAC); 0 when never seen booting.
    pub boot: i64,
    /// The latest stage ("-" when never seen).
    pub stage: String,
    /// When the latest stage happened (RFC 3339).
    pub since: Option<String>,
    /// Seconds since the latest stage.
    pub idle_s: Option<u64>,
    /// When this boot started (RFC 3339).
    pub started: Option<String>,
    pub last_error: Option<String>,
    /// No progress for longer than `timeline.stuck_after`, and not done.
    pub stuck: bool,
}

/// `/rackboot/v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RackStatus {
    pub stuck_after_s: u64,
    /// Whether the store is storing (ok, full, failing) and the data partition's free space.
    #[serde(default)]
    pub store: Option<StoreHealth>,
    /// The running binary: version, git commit, whether its tree was dirty (`rackboot --version`).
    #[serde(default)]
    pub build: Option<BuildInfo>,
    pub nodes: Vec<NodeStatus>,
}

pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// The status of every node with events, plus inventory nodes never seen booting.
pub async fn rack_status(store: &Store, stuck_after: Duration) -> Result<RackStatus, Problem> {
    let now = now_ms();
    let stuck_ms = i64::try_from(stuck_after.as_millis()).unwrap_or(i64::MAX);
    let mut nodes: Vec<NodeStatus> = store
        .boot_status()
        .await?
        .into_iter()
        .map(|r| {
            let idle = now.saturating_sub(r.since_ms);
            NodeStatus {
                stuck: !stage::is_done(&r.stage) && idle > stuck_ms,
                xname: r.xname,
                mac: r.mac,
                ip: r.ip,
                boot: r.boot,
                since: Some(rfc3339(r.since_ms)),
                idle_s: Some(u64::try_from(idle / 1000).unwrap_or(0)),
                started: Some(rfc3339(r.started_ms)),
                stage: r.stage,
                last_error: r.last_error,
            }
        })
        .collect();
    for r in store.reservations().await? {
        let mac = r.mac.to_string();
        if nodes.iter().any(|n| n.mac == mac) {
            continue;
        }
        nodes.push(NodeStatus {
            xname: (!r.xname.is_empty()).then_some(r.xname),
            mac,
            ip: Some(r.ip.to_string()),
            boot: 0,
            stage: "-".into(),
            since: None,
            idle_s: None,
            started: None,
            last_error: None,
            stuck: false,
        });
    }
    nodes.sort_by(|a, b| (&a.xname, &a.mac).cmp(&(&b.xname, &b.mac)));
    Ok(RackStatus {
        stuck_after_s: stuck_after.as_secs(),
        store: Some(store.health()),
        build: Some(BuildInfo::current()),
        nodes,
    })
}

async fn status(State(c): State<Ctx>) -> Result<Json<RackStatus>, Problem> {
    Ok(Json(rack_status(&c.store, c.stuck_after).await?))
}

/// `/rackboot/v1/nodes/{xname}/timeline`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeTimeline {
    pub xname: String,
    pub boots: Vec<BootRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BootRun {
    pub mac: String,
    pub boot: i64,
    pub events: Vec<TimelineEvent>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TimelineEvent {
    pub at: String,
    /// Milliseconds since the boot's first event.
    pub t_ms: i64,
    pub stage: String,
    pub ok: bool,
    #[serde(default)]
    pub detail: serde_json::Value,
}

async fn node_timeline(
    State(c): State<Ctx>,
    Path(x): Path<String>,
) -> Result<Json<NodeTimeline>, Problem> {
    xname::parse(&x).map_err(Problem::bad_request)?;
    let events = c.store.node_timeline(x.clone()).await?;
    if events.is_empty() && c.store.node_info(x.clone()).await?.is_none() {
        return Err(Problem::not_found(format!(
            "no node {x} in the inventory and no boot events for it"
        )));
    }
    let mut boots: Vec<BootRun> = Vec::new();
    // The first event's time of each run, for `t_ms`.
    let mut starts: Vec<i64> = Vec::new();
    for e in events {
        let BootEvent {
            mac,
            boot,
            ts_ms,
            stage,
            ok,
            detail,
            ..
        } = e;
        if !matches!(boots.last(), Some(b) if b.mac == mac && b.boot == boot) {
            boots.push(BootRun {
                mac,
                boot,
                events: Vec::new(),
            });
            starts.push(ts_ms);
        }
        let base = starts.last().copied().unwrap_or(ts_ms);
        if let Some(run) = boots.last_mut() {
            run.events.push(TimelineEvent {
                at: rfc3339(ts_ms),
                t_ms: ts_ms - base,
                stage,
                ok,
                detail,
            });
        }
    }
    Ok(Json(NodeTimeline { xname: x, boots }))
}

async fn events(
    State(c): State<Ctx>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let rx = c.timeline.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let ev = match rx.recv().await {
            Ok(e) => Event::default()
                .event("boot")
                .json_data(&e)
                .unwrap_or_else(|_| Event::default().comment("unencodable event")),
            // A slow reader skipped events: say so rather than end the stream.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => Event::default()
                .event("lagged")
                .data(format!("{n} events skipped")),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(ev), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
