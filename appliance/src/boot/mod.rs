//! The BSS-compatible boot API (`/boot/v1`): boot parameters and iPXE boot scripts.
//!
//! Owns: BSS routes (`/boot/v1`: bootparameters, bootscript, hosts, dumpstate, endpoint-history,
//! service), `rackboot boot`. May call: `client`, `http`, `identity`, `inventory`, `output`,
//! `store`, `timeline`.

pub mod cli;
mod history;
mod script;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::http::{Json, Problem};
use crate::inventory::{normalize_mac, xname};
use crate::store::{BootParameters, BootSelector, Store};
use crate::timeline::{Subject, stage};

/// What the open boot routes need.
#[derive(Clone)]
pub struct BootScriptContext {
    pub store: Store,
    /// Flipped by `serve` once every listener is up.
    pub ready: watch::Receiver<bool>,
    /// `http://<advertised address>`, used when a request has no usable Host header.
    pub fallback_base: String,
    /// Bound of the retry chain.
    pub max_retries: u32,
    pub timeline: crate::timeline::Timeline,
    /// When set, a known node's kernel command line may get a join token, the CA fingerprint
    /// and the HTTPS URL (`rackboot.join=`, `rackboot.ca=`, `rackboot.url=`): only when the
    /// request is the node's own (`identity::join`).
    pub identity: Option<std::sync::Arc<crate::identity::join::BootTokens>>,
    /// When set, an unknown MAC is looked up upstream before the unknown-node script.
    pub upstream: Option<crate::timeline::UnknownLookup>,
}

/// `/boot/v1/bootparameters` (no auth inside: `serve` wraps it with the `boot` scope).
pub fn admin_router(store: Store) -> Router {
    Router::new()
        .route(
            "/boot/v1/bootparameters",
            get(get_params)
                .post(post_params)
                .put(put_params)
                .patch(patch_params)
                .delete(delete_params),
        )
        .with_state(store.clone())
        .merge(history::admin_router(store))
}

/// `/boot/v1/bootscript` and `/boot/v1/service/status`: open, firmware calls them.
pub fn public_router(ctx: BootScriptContext) -> Router {
    Router::new()
        .route("/boot/v1/bootscript", get(bootscript))
        .route("/boot/v1/service/status", get(status))
        .with_state(ctx.clone())
        .merge(history::service_router(ctx.store))
}

fn values(q: &[(String, String)], key: &str) -> Vec<String> {
    q.iter()
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

pub(crate) fn selector(q: &[(String, String)]) -> Result<BootSelector, Problem> {
    let macs = values(q, "mac")
        .iter()
        .map(|m| normalize_mac(m))
        .collect::<Result<_, _>>()?;
    let nids = values(q, "nid")
        .iter()
        .map(|n| {
            n.parse::<i64>()
                .map_err(|_| Problem::bad_request(format!("invalid nid {n:?}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(BootSelector {
        hosts: values(q, "name"),
        macs,
        nids,
    })
}

/// Validates and normalises a BootParameters body (MACs lowercase, hosts node xnames, no
/// newlines anywhere a script line is built from).
pub(crate) fn check(mut bp: BootParameters, need_key: bool) -> Result<BootParameters, Problem> {
    bp.macs = bp
        .macs
        .iter()
        .map(|m| normalize_mac(m))
        .collect::<Result<_, _>>()?;
    for h in &bp.hosts {
        if !h.starts_with("Unknown-") {
            xname::parse_node(h).map_err(Problem::bad_request)?;
        }
    }
    if need_key && bp.selector().is_empty() {
        return Err(Problem::bad_request(
            "boot parameters need at least one of hosts, macs or nids",
        ));
    }
    for (field, v) in [
        ("kernel", &bp.kernel),
        ("initrd", &bp.initrd),
        ("params", &bp.params),
    ] {
        if v.contains(['\n', '\r']) {
            return Err(Problem::bad_request(format!(
                "{field} must be a single line (it is written into an iPXE script)"
            )));
        }
    }
    for (field, v) in [("kernel", &bp.kernel), ("initrd", &bp.initrd)] {
        if v.contains(char::is_whitespace) {
            return Err(Problem::bad_request(format!(
                "{field} must be a URL without spaces"
            )));
        }
    }
    Ok(bp)
}

async fn get_params(
    State(s): State<Store>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Vec<BootParameters>>, Problem> {
    // An ignored filter would answer with every node's parameters.
    crate::inventory::query::allow_only(
        &q,
        "GET /boot/v1/bootparameters",
        &["mac", "name", "nid"],
    )?;
    let sel = selector(&q)?;
    let found = s.find_boot_parameters(sel.clone()).await?;
    if found.is_empty() && !sel.is_empty() {
        return Err(Problem::not_found(
            "no boot parameters match the given mac/name/nid",
        ));
    }
    Ok(Json(found))
}

async fn post_params(
    State(s): State<Store>,
    Json(bp): Json<BootParameters>,
) -> Result<StatusCode, Problem> {
    let bp = check(bp, true)?;
    // BSS answers a duplicate with 400 and a detail, not 409.
    s.insert_boot_parameters(bp).await.map_err(|e| match e {
        crate::store::StoreError::Conflict(m) => Problem::bad_request(m),
        other => other.into(),
    })?;
    Ok(StatusCode::CREATED)
}

async fn put_params(
    State(s): State<Store>,
    Json(bp): Json<BootParameters>,
) -> Result<StatusCode, Problem> {
    s.upsert_boot_parameters(check(bp, true)?).await?;
    Ok(StatusCode::OK)
}

async fn patch_params(
    State(s): State<Store>,
    Json(patch): Json<Value>,
) -> Result<StatusCode, Problem> {
    let as_bp: BootParameters = serde_json::from_value(patch.clone())
        .map_err(|e| Problem::bad_request(format!("invalid boot parameters: {e}")))?;
    let as_bp = check(as_bp, true)?;
    s.patch_boot_parameters(as_bp.selector(), patch).await?;
    Ok(StatusCode::OK)
}

async fn delete_params(
    State(s): State<Store>,
    Json(bp): Json<BootParameters>,
) -> Result<StatusCode, Problem> {
    let bp = check(bp, true)?;
    if s.delete_boot_parameters(bp.selector()).await? == 0 {
        return Err(Problem::not_found(
            "no boot parameters match the given hosts/macs/nids",
        ));
    }
    Ok(StatusCode::OK)
}

async fn status(State(ctx): State<BootScriptContext>) -> Response {
    if *ctx.ready.borrow() {
        Json(json!({"bss-status": "running"})).into_response()
    } else {
        Problem::service_unavailable("rackboot is starting; not every listener is up yet")
            .into_response()
    }
}

async fn bootscript(
    State(ctx): State<BootScriptContext>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, Problem> {
    let first = |k: &str| values(&q, k).into_iter().next();
    let mac = first("mac").map(|m| normalize_mac(&m)).transpose()?;
    let mut name = first("name");
    if let Some(n) = &name {
        xname::parse(n).map_err(Problem::bad_request)?;
    }
    let mut nid = first("nid")
        .map(|n| {
            n.parse::<i64>()
                .map_err(|_| Problem::bad_request(format!("invalid nid {n:?}")))
        })
        .transpose()?;
    if mac.is_none() && name.is_none() && nid.is_none() {
        return Err(Problem::bad_request(
            "bootscript needs one of mac=, name= or nid=",
        ));
    }
    let retry = first("retry")
        .and_then(|r| r.parse::<u32>().ok())
        .unwrap_or(0);
    let arch = first("arch").filter(|a| a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    let base = crate::http::base_url(&headers, &ctx.fallback_base);
    // Only a MAC the request itself carried counts for a join token (a name or NID lookup
    // below fills `mac` in from the inventory).
    let asked_mac = mac
        .as_deref()
        .and_then(|m| m.parse::<pxe_core::MacAddr>().ok());
    let mut mac = mac;
    // BSS keeps parameters set by MAC under the node's xname and NID too: a request by name or
    // NID finds them through the node's interfaces.
    let node = match (&mac, &name, nid) {
        (None, Some(x), _) => Some((x.clone(), history::macs_of(&ctx.store, x).await?)),
        (None, None, Some(n)) => history::node_for_nid(&ctx.store, n).await?,
        _ => None,
    };
    if let Some((x, macs)) = node {
        // Boot parameters may be keyed by any of the node's MACs: take the first that has some.
        for m in macs {
            if ctx
                .store
                .boot_parameters_for(Some(m.clone()), Some(x.clone()), nid)
                .await?
                .is_some()
            {
                mac = Some(m);
                break;
            }
        }
        name = Some(x);
    }
    if let Some(m) = &mac
        && let Ok(parsed) = m.parse::<pxe_core::MacAddr>()
        && let Some((x, n)) = ctx.store.node_for_mac(parsed).await?
    {
        name = name.or(Some(x));
        nid = nid.or(n);
    }
    let mut bp = ctx
        .store
        .boot_parameters_for(mac.clone(), name.clone(), nid)
        .await?;
    if bp.is_none()
        && let (Some(up), Some(m)) = (&ctx.upstream, &mac)
        && let Ok(parsed) = m.parse::<pxe_core::MacAddr>()
        && let crate::timeline::Admission::Asking(lookup) = up(parsed)
        && lookup.await
    {
        if let Some((x, n)) = ctx.store.node_for_mac(parsed).await? {
            name = name.or(Some(x));
            nid = nid.or(n);
        }
        bp = ctx
            .store
            .boot_parameters_for(mac.clone(), name.clone(), nid)
            .await?;
    }
    let mut known = true;
    if bp.is_none()
        && let Some(a) = &arch
    {
        bp = ctx
            .store
            .boot_parameters_for(None, Some(format!("Unknown-{a}")), None)
            .await?;
        known = false;
    }
    let subject = match mac
        .as_deref()
        .and_then(|m| m.parse::<pxe_core::MacAddr>().ok())
    {
        Some(m) => Some(Subject::Mac(m)),
        None => name.clone().map(Subject::Xname),
    };
    let body = match bp.filter(|b| !b.kernel.is_empty()) {
        Some(bp) => {
            if let Some(who) = subject {
                let (st, ok) = if retry > 0 {
                    (stage::BOOTSCRIPT_RETRY, false)
                } else {
                    (stage::BOOTSCRIPT, true)
                };
                let mut detail = serde_json::json!({ "retry": retry, "kernel": bp.kernel });
                if retry > 0
                    && let Some(o) = detail.as_object_mut()
                {
                    o.insert(
                        "error".into(),
                        format!("the node is retrying its boot (attempt {retry})").into(),
                    );
                    // The script served now reboots the node instead of chaining again.
                    if retry >= ctx.max_retries {
                        o.insert("gave_up".into(), true.into());
                    }
                }
                ctx.timeline.record(who, st, ok, detail);
            }
            tracing::debug!(
                mac = mac.as_deref().unwrap_or(""),
                xname = name.as_deref().unwrap_or(""),
                retry,
                stage = "bootscript",
                "boot script served"
            );
            let extra = match (&ctx.identity, known, &name) {
                (Some(tokens), true, Some(x)) => {
                    let peer = extensions
                        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                        .and_then(|c| match c.0.ip() {
                            std::net::IpAddr::V4(ip) => Some(ip),
                            std::net::IpAddr::V6(ip) => ip.to_ipv4_mapped(),
                        });
                    let req = crate::identity::join::BootRequest {
                        xname: x,
                        mac: asked_mac,
                        peer,
                    };
                    tokens.kernel_params(&req).await
                }
                _ => String::new(),
            };
            script::node(&script::NodeScript {
                base: &base,
                mac: mac.as_deref(),
                xname: if known { name.as_deref() } else { None },
                nid: if known { nid } else { None },
                kernel: &bp.kernel,
                initrd: &bp.initrd,
                params: &bp.params,
                extra: &extra,
                retry,
                max_retries: ctx.max_retries,
            })
        }
        None => {
            tracing::debug!(
                mac = mac.as_deref().unwrap_or(""),
                retry,
                stage = "bootscript",
                "unknown node: waiting script served"
            );
            if let Some(who) = subject {
                ctx.timeline.record(
                    who,
                    stage::BOOTSCRIPT_UNKNOWN,
                    false,
                    serde_json::json!({ "retry": retry, "error": "no boot parameters for this node" }),
                );
            }
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            script::unknown(
                &base,
                mac.as_deref(),
                name.as_deref(),
                retry,
                ctx.max_retries,
                ts,
            )
        }
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}
