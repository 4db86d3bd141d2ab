//! Starts every listener of `rackboot serve` and keeps their tasks for shutdown.

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, Authenticator};
use crate::http::{self, server::HttpLimits};
use crate::images::{self, ImageStore};
use crate::ipxe::IpxeDir;
use crate::serve::Settings;

/// The running services.
pub struct Services {
    tasks: JoinSet<()>,
}

impl Services {
    /// Waits up to `grace` for every service to finish after shutdown was requested.
    pub async fn join(mut self, grace: Duration) {
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(?grace, "services did not stop in time; aborting them");
            self.tasks.abort_all();
        }
    }
}

/// Binds every listener (failing with the flag to fix), then spawns the services.
pub async fn start(
    settings: &Settings,
    ready: watch::Receiver<bool>,
    shutdown: CancellationToken,
) -> anyhow::Result<Services> {
    let _ = ready;
    let data_dir = &settings.data_dir;
    let boot = &settings.config.boot;
    let ipxe = IpxeDir::open(&settings.ipxe_dir, &[&boot.bios, &boot.uefi_x64])?;
    let authn = Authenticator::from_config(data_dir, &settings.config.auth).with_context(|| {
        format!(
            "cannot load the token issuer key from {} (--data-dir)",
            data_dir.display()
        )
    })?;
    let images = ImageStore::open(data_dir).with_context(|| {
        format!(
            "cannot open the image store in {} (--data-dir)",
            data_dir.display()
        )
    })?;
    let mut tasks = JoinSet::new();

    let app = http_app(&authn, ipxe, images);
    let listener = tokio::net::TcpListener::bind(settings.http_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen for HTTP on {} (--http-listen)",
                settings.http_listen
            )
        })?;
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let served = http::server::serve(listener, app, HttpLimits::default(), async move {
            stop.cancelled().await
        });
        if let Err(err) = served.await {
            tracing::error!(error = %err, "HTTP service failed");
        }
    });
    Ok(Services { tasks })
}

/// The whole HTTP surface. Boot-path routes (firmware and nodes call them) are open; every
/// admin router is wrapped in a scope check for its area (ARCHITECTURE invariant 4).
fn http_app(authn: &Authenticator, ipxe: IpxeDir, images: ImageStore) -> Router {
    let mut open = Router::new()
        .merge(ipxe.router())
        .merge(images::public_router(images.clone()));
    if let Some(issuer) = authn.local() {
        open = open.merge(auth::jwks_router(issuer));
    }
    let admin = Router::new()
        .merge(images::admin_router(images).layer(auth::require(authn.clone(), "images")));
    Router::new()
        .merge(open)
        .merge(admin)
        .fallback(crate::http::problem::not_found_fallback)
}
