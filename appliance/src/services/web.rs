//! The HTTP side of `rackboot serve`: the routes of both listeners (the full surface and the
//! boot path alone), their middleware (scopes, request metrics, local-write refusals), the
//! HTTPS listener for enrollment and mTLS, and `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, Authenticator};
use crate::boot::BootScriptContext;
use crate::cloudinit::routes::CiContext;
use crate::config::{self};
use crate::http::{self, server::HttpLimits};
use crate::images::{self, ImageStore};
use crate::ipxe::IpxeDir;
use crate::metrics::Metrics;
use crate::serve::Settings;
use crate::store::Store;
use crate::timeline::{Observers, Timeline};

/// Serves `app` on `listener` until shutdown.
pub(super) fn spawn_http(
    tasks: &mut JoinSet<()>,
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
) {
    tasks.spawn(async move {
        let served = http::server::serve(listener, app, http_limits(), async move {
            shutdown.cancelled().await
        });
        if let Err(err) = served.await {
            tracing::error!(error = %err, "HTTP service failed");
        }
    });
}

/// `https://<advertised address>[:port]`: what nodes enroll at.
pub(super) fn https_url(settings: &Settings) -> String {
    match settings.config.identity.listen.port() {
        443 => format!("https://{}", settings.advertise),
        p => format!("https://{}:{p}", settings.advertise),
    }
}

/// The HTTPS listener: enrollment and the mTLS routes, with a certificate from the rack CA
/// (the interface and advertised addresses, the hostname and `identity.names` as SANs), renewed
/// when a third of its lifetime is left.
pub(super) async fn spawn_https(
    tasks: &mut JoinSet<()>,
    settings: &Settings,
    id: crate::identity::Identity,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let cfg = &settings.config.identity;
    let mut names = vec![settings.advertise.to_string()];
    if settings.iface.addr != settings.advertise {
        names.push(settings.iface.addr.to_string());
    }
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim().to_owned();
        if !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
        {
            names.push(h);
        }
    }
    names.extend(cfg.names.iter().cloned());
    id.server_config(&names)
        .context("cannot issue the HTTPS certificate from the rack CA")?;
    let device = settings.rack_device();
    let listener = crate::netif::tcp_listener(device, cfg.listen).with_context(|| {
        format!(
            "cannot listen for HTTPS on {}{} (identity.listen; or identity.enabled = false)",
            cfg.listen,
            device.map(|d| format!(" on {d}")).unwrap_or_default()
        )
    })?;
    let app = Router::new()
        .merge(crate::identity::routes::public_router(id.clone()))
        .merge(crate::identity::routes::https_router(id.clone()))
        .fallback(crate::http::problem::not_found_fallback);
    let source: http::server::TlsSource = {
        let (id, names) = (id.clone(), names.clone());
        Arc::new(move || id.server_config(&names).ok())
    };
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let served = http::server::serve_tls(listener, app, http_limits(), source, async move {
            stop.cancelled().await
        });
        if let Err(err) = served.await {
            tracing::error!(error = %err, "HTTPS service failed");
        }
    });
    let every = cfg.server_cert_lifetime / 3;
    tasks.spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
            if let Err(e) = id.renew_server_cert(&names) {
                tracing::error!(error = %e, "could not renew the HTTPS certificate; the old one stays");
            }
        }
    });
    tracing::info!(listen = %cfg.listen, "HTTPS (enrollment, mTLS) listening");
    Ok(())
}

/// The HTTP surface, whole (boot path and admin API) and boot path only (the rack listener's
/// when the admin API has listeners of its own).
pub(super) struct Surface {
    pub(super) full: Router,
    pub(super) boot_only: Router,
}

/// The HTTP surface. Boot-path routes (firmware and nodes call them) are open; every admin
/// router is wrapped in a scope check for its area (ARCHITECTURE invariant 4).
pub(super) fn http_surface(
    authn: &Authenticator,
    ipxe: IpxeDir,
    images: ImageStore,
    store: Store,
    boot_ctx: BootScriptContext,
    obs: Observe,
) -> Surface {
    let ci = CiContext {
        store: store.clone(),
        timeline: obs.timeline.clone(),
        trusted_proxies: obs.cloud_init.trusted_proxies.clone(),
        check_source: obs.cloud_init.check_source,
        fallback_base: obs.base.clone(),
    };
    let image_obs = Observers {
        metrics: obs.metrics.clone(),
        timeline: obs.timeline.clone(),
        on_lease: None,
        on_unknown: None,
    };
    let mut open = Router::new()
        .merge(ipxe.router())
        .merge(images::public_router(images.clone(), Some(image_obs)))
        .merge(crate::boot::public_router(boot_ctx))
        .merge(crate::inventory::health_router())
        .merge(crate::cloudinit::routes::node_router(ci.clone()))
        .route("/openapi.json", axum::routing::get(openapi))
        .route(
            "/metrics",
            axum::routing::get(metrics_page).with_state((
                obs.metrics.clone(),
                store.clone(),
                obs.pool_size,
            )),
        );
    if let Some(issuer) = authn.local() {
        open = open.merge(auth::jwks_router(issuer));
    }
    let guard = |area: &'static str| auth::require(authn.clone(), area);
    let mut admin = Router::new();
    if let Some(id) = &obs.identity {
        open = open.merge(crate::identity::routes::public_router(id.clone()));
        admin =
            admin.merge(crate::identity::routes::admin_router(id.clone()).layer(guard("identity")));
    }
    // A federated rack with `allow_local = false` takes inventory and boot changes only from
    // its upstream (RedfishEndpoints stay writable: they are pushed up).
    let read_only = obs.upstream.as_ref().is_some_and(|u| !u.allows_local());
    let mirror = move |r: Router| {
        if read_only {
            r.layer(axum::middleware::from_fn(refuse_local_writes))
        } else {
            r
        }
    };
    let admin = admin
        .merge(images::admin_router(images.clone()).layer(guard("images")))
        .merge(mirror(crate::inventory::router(store.clone())).layer(guard("inventory")))
        .merge(crate::ansible::router(store.clone()).layer(guard("inventory")))
        .merge(mirror(crate::boot::admin_router(store.clone())).layer(guard("boot")))
        .merge(crate::dhcp::api::router(store.clone()).layer(guard("dhcp")))
        .merge(crate::cloudinit::routes::admin_router(ci).layer(guard("cloud-init")))
        .merge(
            crate::discovery::routes::discovery_router(obs.discovery.clone())
                .layer(guard("discovery")),
        )
        .merge(crate::discovery::routes::power_router(obs.discovery.clone()).layer(guard("power")))
        .merge(
            crate::discovery::routes::firmware_router(crate::discovery::routes::FirmwareCtx {
                discovery: obs.discovery,
                images: images.clone(),
                base_url: obs.base.clone(),
            })
            .layer(guard("firmware")),
        )
        .merge(
            crate::timeline::routes::router(store, obs.timeline.clone(), obs.stuck_after)
                .layer(guard("status")),
        )
        .merge(crate::federation::router(obs.upstream.clone()).layer(guard("status")))
        .merge(crate::update::api::router(obs.data_dir.clone()).layer(guard("appliance")));
    let metrics = obs.metrics;
    let counted = move |r: Router| {
        let metrics = metrics.clone();
        r.layer(axum::middleware::from_fn(move |req, next| {
            count_request(metrics.clone(), req, next)
        }))
    };
    Surface {
        full: counted(
            Router::new()
                .merge(open.clone())
                .merge(admin)
                .fallback(crate::http::problem::not_found_fallback),
        ),
        boot_only: counted(open.fallback(admin_elsewhere)),
    }
}

/// What the rack listener answers for any path it does not serve when the admin API has its own
/// listeners: the same 404 for an admin route as for a route that does not exist, with the reason.
async fn admin_elsewhere(uri: axum::http::Uri) -> crate::http::Problem {
    crate::http::Problem::not_found(format!(
        "no route for {} on the rack network: the admin API is served only on the management \
         interfaces (listen.admin_interfaces)",
        uri.path()
    ))
}

/// Refuses writes to upstream-mirrored inventory and boot data (`upstream.allow_local = false`).
async fn refuse_local_writes(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = req.uri().path();
    let write = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if write && !path.starts_with("/hsm/v2/Inventory/RedfishEndpoints") {
        return crate::http::Problem::conflict(
            "this rack mirrors its upstream (upstream.allow_local = false): make the change upstream",
        )
        .into_response();
    }
    next.run(req).await
}

/// What the HTTP surface reports to, and the settings of its observing routes.
pub(super) struct Observe {
    pub(super) metrics: Arc<Metrics>,
    pub(super) timeline: Timeline,
    pub(super) pool_size: i64,
    pub(super) stuck_after: Duration,
    pub(super) cloud_init: config::CloudInit,
    pub(super) base: String,
    pub(super) discovery: crate::discovery::Discovery,
    pub(super) identity: Option<crate::identity::Identity>,
    pub(super) upstream: Option<crate::federation::Federation>,
    /// For the appliance update routes (the updater's hand-over file lives there).
    pub(super) data_dir: std::path::PathBuf,
}

/// Counts every request by route class and status, with its time to response headers.
async fn count_request(
    metrics: Arc<Metrics>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let class = crate::metrics::route_class(req.uri().path());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    metrics.http_request(
        class,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

/// `GET /metrics`: Prometheus/OpenMetrics text. State gauges are computed from the store now.
async fn metrics_page(
    axum::extract::State((metrics, store, pool_size)): axum::extract::State<(
        Arc<Metrics>,
        Store,
        i64,
    )>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let now = crate::store::now_ms();
    let (active, dynamic) = match store.list_leases().await {
        Ok(l) => {
            let live: Vec<_> = l.iter().filter(|l| l.expires_ms > now).collect();
            let dynamic = live
                .iter()
                .filter(|l| l.kind == crate::store::LeaseRecordKind::Dynamic)
                .count();
            (live.len(), dynamic)
        }
        Err(_) => (0, 0),
    };
    let mut stages: Vec<(String, i64)> = Vec::new();
    if let Ok(rows) = store.boot_status().await {
        for r in rows {
            match stages.iter_mut().find(|(s, _)| *s == r.stage) {
                Some((_, n)) => *n += 1,
                None => stages.push((r.stage, 1)),
            }
        }
    }
    metrics.set_store(&store.health());
    metrics.set_tasks(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
    );
    metrics.set_state(
        i64::try_from(active).unwrap_or(i64::MAX),
        pool_size,
        i64::try_from(dynamic).unwrap_or(i64::MAX),
        &stages,
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

/// The HTTP limits of both listeners: image uploads stream (no body limit, no request timeout in
/// the server loop; the upload handler enforces its own).
fn http_limits() -> HttpLimits {
    HttpLimits {
        streaming_prefixes: vec![
            crate::images::ADMIN_PREFIX.to_owned(),
            crate::update::api::STREAMING_PREFIX.to_owned(),
        ],
        ..HttpLimits::default()
    }
}

/// The OpenAPI document of every route rackboot serves.
async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("../../openapi.json"),
    )
}
