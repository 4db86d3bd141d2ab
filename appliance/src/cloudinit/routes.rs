//! cloud-init HTTP routes.
//!
//! Node routes (open, as cloud-init in an initramfs has no credentials):
//! - `GET /cloud-init/{meta-data|user-data|vendor-data}`: the node is found by source address
//!   (the first `X-Forwarded-For` address only from `cloud_init.trusted_proxies`); an address
//!   that is no inventory node's gets 422;
//! - `GET /cloud-init/{xname}/{meta-data|user-data|vendor-data|<group>.yaml}`: the seed URL the
//!   boot script injects (`ds=nocloud;s=…`). The request must come from one of that node's
//!   inventory addresses (403 otherwise), so a stranger cannot read another node's data by name;
//!   `cloud_init.check_source = false` turns that off (proxyDHCP sites whose addresses are not
//!   in the inventory);
//! - `POST /cloud-init/phone-home/{xname}`: the node reports in (recorded on its timeline).
//!
//! Admin routes (scope `cloud-init:read|write`), OpenCHAMI's paths:
//! `/cloud-init/admin/cluster-defaults`, `/cloud-init/admin/groups[/{name}]`,
//! `/cloud-init/admin/instance-info/{xname}`, plus `/cloud-init/admin/render/{xname}`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{
    CiError, CiGroup, ClusterDefaults, Inputs, NodeData, NodeVars, check, decode,
    is_cloud_init_template, meta_data, render_template, to_yaml, user_data, vendor_data,
};
use crate::http::{Json, Problem};
use crate::inventory::xname;
use crate::store::{CLOUD_INIT_DEFAULTS_KEY, CiKind, Store};
use crate::timeline::{Subject, Timeline, stage};

/// Shared by the cloud-init routes.
#[derive(Clone)]
pub struct CiContext {
    pub store: Store,
    pub timeline: Timeline,
    pub trusted_proxies: Vec<ipnet::Ipv4Net>,
    pub check_source: bool,
    /// `http://<advertised address>` when a request has no usable Host header.
    pub fallback_base: String,
}

impl From<CiError> for Problem {
    fn from(e: CiError) -> Self {
        Problem::bad_request(e.to_string())
    }
}

/// The open node routes.
pub fn node_router(ctx: CiContext) -> Router {
    Router::new()
        .route("/cloud-init/{doc}", get(by_address))
        .route("/cloud-init/{xname}/{doc}", get(by_name))
        .route("/cloud-init/phone-home/{xname}", post(phone_home))
        .with_state(ctx)
}

/// The admin routes (wrap with `auth::require(.., "cloud-init")`).
pub fn admin_router(ctx: CiContext) -> Router {
    Router::new()
        .route(
            "/cloud-init/admin/cluster-defaults",
            get(get_defaults).put(put_defaults).post(put_defaults),
        )
        .route(
            "/cloud-init/admin/groups",
            get(list_groups).post(post_group),
        )
        .route(
            "/cloud-init/admin/groups/{name}",
            get(get_group).put(put_group).delete(delete_group),
        )
        .route(
            "/cloud-init/admin/instance-info/{xname}",
            get(get_node).put(put_node).delete(delete_node),
        )
        .route("/cloud-init/admin/render/{xname}", get(render))
        .with_state(ctx)
}

fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    }
}

/// The client's address: the peer, or the first `X-Forwarded-For` entry if the peer is a
/// trusted proxy.
pub fn client_ip(
    trusted: &[ipnet::Ipv4Net],
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Option<Ipv4Addr> {
    let peer = v4(peer.ip())?;
    if trusted.iter().any(|n| n.contains(&peer))
        && let Some(xff) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok())
    {
        return xff.split(',').next()?.trim().parse().ok();
    }
    Some(peer)
}

/// Everything needed to render `x`'s documents.
pub async fn load(store: &Store, x: &str) -> Result<(Inputs, NodeVars), Problem> {
    let node = store
        .node_info(x.to_owned())
        .await?
        .ok_or_else(|| Problem::not_found(format!("no node {x} in the inventory")))?;
    let defaults: ClusterDefaults = match store
        .get_cloud_init(CiKind::Defaults, CLOUD_INIT_DEFAULTS_KEY.into())
        .await?
    {
        Some(v) => serde_json::from_value(v).map_err(Problem::internal)?,
        None => ClusterDefaults::default(),
    };
    let mut inp = Inputs {
        defaults,
        ..Default::default()
    };
    for g in store.list_groups().await? {
        if g.members.ids.iter().any(|m| m == x) {
            if let Some(doc) = store.get_cloud_init(CiKind::Group, g.label.clone()).await? {
                inp.groups
                    .push(serde_json::from_value(doc).map_err(Problem::internal)?);
            }
            inp.group_labels.push(g.label);
        }
    }
    if let Some(doc) = store.get_cloud_init(CiKind::Node, x.to_owned()).await? {
        inp.node = serde_json::from_value(doc).map_err(Problem::internal)?;
    }
    inp.sort();
    let first = node.interfaces.iter().find(|(_, ip)| ip.is_some());
    let vars = NodeVars {
        xname: node.xname.clone(),
        nid: node.nid,
        hostname: node.hostname.clone(),
        ip: first.and_then(|(_, ip)| ip.map(|i| i.to_string())),
        mac: first.or(node.interfaces.first()).map(|(m, _)| m.clone()),
        groups: inp.group_labels.clone(),
        cluster_name: inp.defaults.cluster_name.clone(),
    };
    Ok((inp, vars))
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/yaml; charset=utf-8")], body).into_response()
}

/// Renders document `doc` of node `x` and records it on the node's timeline.
async fn serve_doc(
    ctx: &CiContext,
    x: &str,
    doc: &str,
    headers: &HeaderMap,
) -> Result<Response, Problem> {
    let (inp, vars) = load(&ctx.store, x).await?;
    let base = crate::http::base_url(headers, &ctx.fallback_base);
    let (out, st) = match doc {
        "meta-data" => (
            Ok(to_yaml(&meta_data(&inp, &vars))),
            stage::CLOUD_INIT_META_DATA,
        ),
        "user-data" => (user_data(&inp, &vars), stage::CLOUD_INIT_USER_DATA),
        "vendor-data" => (
            Ok(vendor_data(&inp, &base, x)),
            stage::CLOUD_INIT_VENDOR_DATA,
        ),
        other => {
            let Some(group) = other.strip_suffix(".yaml") else {
                return Err(Problem::not_found(format!(
                    "no cloud-init document {other:?}: use meta-data, user-data, vendor-data or <group>.yaml"
                )));
            };
            let g = inp.groups.iter().find(|g| g.name == group).ok_or_else(|| {
                Problem::not_found(format!(
                    "{x} is not in a group {group:?} with cloud-init data"
                ))
            })?;
            let body = match &g.file {
                Some(f) => {
                    let t = decode(f, &format!("group {group}"))?;
                    if is_cloud_init_template(&t) {
                        t
                    } else {
                        render_template(&t, &vars, &format!("group {group}"))?
                    }
                }
                None => String::new(),
            };
            return Ok(text(body));
        }
    };
    match out {
        Ok(body) => {
            ctx.timeline.record(
                Subject::Xname(x.to_owned()),
                st,
                true,
                json!({ "bytes": body.len(), "ip": vars.ip }),
            );
            Ok(text(body))
        }
        Err(e) => {
            ctx.timeline.record(
                Subject::Xname(x.to_owned()),
                stage::CLOUD_INIT_ERROR,
                false,
                json!({ "document": doc, "error": e.to_string() }),
            );
            Err(Problem::internal(e))
        }
    }
}

async fn by_address(
    State(ctx): State<CiContext>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(doc): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    if !matches!(doc.as_str(), "meta-data" | "user-data" | "vendor-data") {
        return Err(Problem::not_found(format!(
            "no cloud-init document {doc:?}: use meta-data, user-data or vendor-data"
        )));
    }
    let ip = client_ip(&ctx.trusted_proxies, peer, &headers)
        .ok_or_else(|| Problem::unprocessable("cloud-init needs an IPv4 client address"))?;
    let x = ctx.store.xname_for_ip(ip).await?.ok_or_else(|| {
        Problem::unprocessable(format!(
            "no inventory node has address {ip}: add it to /hsm/v2/Inventory/EthernetInterfaces, \
             or use the seed URL /cloud-init/<xname>/"
        ))
    })?;
    serve_doc(&ctx, &x, &doc, &headers).await
}

/// 403 unless the request comes from one of `x`'s inventory addresses.
async fn check_source(
    ctx: &CiContext,
    x: &str,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), Problem> {
    xname::parse(x).map_err(Problem::bad_request)?;
    if !ctx.check_source {
        return Ok(());
    }
    let ip = client_ip(&ctx.trusted_proxies, peer, headers);
    let node = ctx
        .store
        .node_info(x.to_owned())
        .await?
        .ok_or_else(|| Problem::not_found(format!("no node {x} in the inventory")))?;
    if ip.is_some_and(|ip| node.interfaces.iter().any(|(_, a)| *a == Some(ip))) {
        Ok(())
    } else {
        let shown = ip.map_or_else(|| peer.ip().to_string(), |i| i.to_string());
        Err(Problem::forbidden(format!(
            "{shown} is not an address of {x}: a node reads only its own cloud-init data"
        )))
    }
}

async fn by_name(
    State(ctx): State<CiContext>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((x, doc)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    check_source(&ctx, &x, peer, &headers).await?;
    serve_doc(&ctx, &x, &doc, &headers).await
}

async fn phone_home(
    State(ctx): State<CiContext>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(x): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Problem> {
    check_source(&ctx, &x, peer, &headers).await?;
    // cloud-init's phone_home posts a form (pub_key_*, instance_id, hostname, fqdn).
    let mut detail = serde_json::Map::new();
    for (k, v) in form_urlencoded_pairs(&body) {
        if matches!(k.as_str(), "instance_id" | "hostname" | "fqdn") {
            detail.insert(k, Value::String(v.chars().take(256).collect()));
        }
    }
    if let Some(ip) = client_ip(&ctx.trusted_proxies, peer, &headers) {
        detail.insert("ip".into(), Value::String(ip.to_string()));
    }
    ctx.timeline.record(
        Subject::Xname(x.clone()),
        stage::PHONE_HOME,
        true,
        Value::Object(detail),
    );
    tracing::info!(xname = %x, stage = "phone_home", "node phoned home");
    Ok(StatusCode::OK)
}

/// `application/x-www-form-urlencoded` pairs (lossy, bounded).
fn form_urlencoded_pairs(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .take(64)
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((unescape(k), unescape(v)))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(v) = hex {
                    out.push(v);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- admin ---------------------------------------------------------------------------------

async fn get_defaults(State(ctx): State<CiContext>) -> Result<Json<Value>, Problem> {
    let doc = ctx
        .store
        .get_cloud_init(CiKind::Defaults, CLOUD_INIT_DEFAULTS_KEY.into())
        .await?
        .unwrap_or_else(|| serde_json::to_value(ClusterDefaults::default()).unwrap_or_default());
    Ok(Json(doc))
}

async fn put_defaults(
    State(ctx): State<CiContext>,
    Json(d): Json<ClusterDefaults>,
) -> Result<Json<Value>, Problem> {
    check(d.file.as_ref(), "cluster defaults")?;
    let doc = serde_json::to_value(&d).map_err(Problem::internal)?;
    ctx.store
        .put_cloud_init(
            CiKind::Defaults,
            CLOUD_INIT_DEFAULTS_KEY.into(),
            doc.clone(),
        )
        .await?;
    Ok(Json(doc))
}

fn check_group_name(name: &str) -> Result<(), Problem> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Problem::bad_request(format!(
            "invalid group name {name:?}: use letters, digits, - _ . (it is an SMD group label)"
        )))
    }
}

async fn list_groups(State(ctx): State<CiContext>) -> Result<Json<Vec<Value>>, Problem> {
    Ok(Json(
        ctx.store
            .list_cloud_init(CiKind::Group)
            .await?
            .into_iter()
            .map(|(_, v)| v)
            .collect(),
    ))
}

async fn store_group(ctx: &CiContext, g: CiGroup) -> Result<Value, Problem> {
    check_group_name(&g.name)?;
    check(g.file.as_ref(), &format!("group {}", g.name))?;
    let doc = serde_json::to_value(&g).map_err(Problem::internal)?;
    ctx.store
        .put_cloud_init(CiKind::Group, g.name.clone(), doc.clone())
        .await?;
    Ok(doc)
}

async fn post_group(
    State(ctx): State<CiContext>,
    Json(g): Json<CiGroup>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    check_group_name(&g.name)?;
    if ctx
        .store
        .get_cloud_init(CiKind::Group, g.name.clone())
        .await?
        .is_some()
    {
        return Err(Problem::conflict(format!(
            "cloud-init group {} exists; PUT /cloud-init/admin/groups/{} replaces it",
            g.name, g.name
        )));
    }
    Ok((StatusCode::CREATED, Json(store_group(&ctx, g).await?)))
}

async fn get_group(
    State(ctx): State<CiContext>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    ctx.store
        .get_cloud_init(CiKind::Group, name.clone())
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no cloud-init group {name}")))
}

async fn put_group(
    State(ctx): State<CiContext>,
    Path(name): Path<String>,
    Json(mut g): Json<CiGroup>,
) -> Result<Json<Value>, Problem> {
    if g.name.is_empty() {
        g.name.clone_from(&name);
    }
    if g.name != name {
        return Err(Problem::bad_request(format!(
            "body names group {:?} but the URL names {name:?}",
            g.name
        )));
    }
    Ok(Json(store_group(&ctx, g).await?))
}

async fn delete_group(
    State(ctx): State<CiContext>,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    if ctx
        .store
        .delete_cloud_init(CiKind::Group, name.clone())
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!("no cloud-init group {name}")))
    }
}

async fn get_node(
    State(ctx): State<CiContext>,
    Path(x): Path<String>,
) -> Result<Json<Value>, Problem> {
    xname::parse(&x).map_err(Problem::bad_request)?;
    ctx.store
        .get_cloud_init(CiKind::Node, x.clone())
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no cloud-init data for {x}")))
}

async fn put_node(
    State(ctx): State<CiContext>,
    Path(x): Path<String>,
    Json(n): Json<NodeData>,
) -> Result<Json<Value>, Problem> {
    xname::parse(&x).map_err(Problem::bad_request)?;
    check(n.file.as_ref(), &format!("node {x}"))?;
    let doc = serde_json::to_value(&n).map_err(Problem::internal)?;
    ctx.store
        .put_cloud_init(CiKind::Node, x, doc.clone())
        .await?;
    Ok(Json(doc))
}

async fn delete_node(
    State(ctx): State<CiContext>,
    Path(x): Path<String>,
) -> Result<StatusCode, Problem> {
    xname::parse(&x).map_err(Problem::bad_request)?;
    if ctx.store.delete_cloud_init(CiKind::Node, x.clone()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!("no cloud-init data for {x}")))
    }
}

/// `{meta-data, user-data, vendor-data}` exactly as node `x` will get them.
async fn render(
    State(ctx): State<CiContext>,
    Path(x): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, Problem> {
    xname::parse(&x).map_err(Problem::bad_request)?;
    let (inp, vars) = load(&ctx.store, &x).await?;
    let base = crate::http::base_url(&headers, &ctx.fallback_base);
    Ok(Json(json!({
        "xname": x,
        "meta-data": to_yaml(&meta_data(&inp, &vars)),
        "user-data": user_data(&inp, &vars)?,
        "vendor-data": vendor_data(&inp, &base, &x),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::Ipv4Net> = vec!["10.0.0.5/32".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "192.0.2.50, 10.9.9.9".parse().unwrap());
        let proxy: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let stranger: SocketAddr = "192.0.2.99:4000".parse().unwrap();
        assert_eq!(
            client_ip(&trusted, proxy, &h),
            Some(Ipv4Addr::new(192, 0, 2, 50))
        );
        assert_eq!(
            client_ip(&trusted, stranger, &h),
            Some(Ipv4Addr::new(192, 0, 2, 99))
        );
        assert_eq!(client_ip(&[], proxy, &h), Some(Ipv4Addr::new(10, 0, 0, 5)));
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_ip(&trusted, proxy, &h), None);
    }

    #[test]
    fn phone_home_form_is_decoded() {
        let pairs =
            form_urlencoded_pairs(b"instance_id=i-x1&hostname=nid%30001&pub_key_rsa=ssh+rsa+AAA");
        assert_eq!(pairs[0], ("instance_id".into(), "i-x1".into()));
        assert_eq!(pairs[1], ("hostname".into(), "nid0001".into()));
        assert_eq!(pairs[2].1, "ssh rsa AAA");
        assert_eq!(unescape("%zz%4"), "%zz%4");
    }
}
