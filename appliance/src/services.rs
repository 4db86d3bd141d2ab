//! Starts every listener of `rackboot serve` and keeps their tasks for shutdown.

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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
    let boot = &settings.config.boot;
    let ipxe = IpxeDir::open(&settings.ipxe_dir, &[&boot.bios, &boot.uefi_x64])?;
    let mut tasks = JoinSet::new();

    let app = Router::new()
        .merge(ipxe.router())
        .fallback(crate::http::problem::not_found_fallback);
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
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::error!(error = %err, "HTTP service failed");
        }
    });
    Ok(Services { tasks })
}
