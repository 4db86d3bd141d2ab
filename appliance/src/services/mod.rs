//! Starts every listener of `rackboot serve` and keeps their tasks for shutdown.
//!
//! Start-up order matters for readiness: every listener is bound first (so a port conflict or a
//! missing interface address fails fast with the flag to fix), then `ready` flips and
//! `GET /boot/v1/service/status` starts answering 200.
//!
//! Owns: starts every listener and task, assembles the HTTP surface, `services::run`. May call:
//! `version`, `config`, `netif`, `sys`, `seal`, `output`, `store`, `http`, `metrics`, `auth`,
//! `client`, `inventory`, `timeline`, `ipxe`, `tftp`, `dhcp`, `images`, `cloudinit`, `identity`,
//! `boot`, `discovery`, `federation`, `backup`, `ansible`, `dns`, `serve`, `update`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pxe_core::boot::{self, BootPolicy};
use pxe_core::dhcp::server::{MAX_SUBNETS, Mode, ServerConfig, SubnetConfig};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::boot::BootScriptContext;
use crate::config::{self, DhcpMode};
use crate::images::ImageStore;
use crate::ipxe::IpxeDir;
use crate::metrics::Metrics;
use crate::serve::Settings;
use crate::store::Store;
use crate::timeline::{Observers, Timeline};

mod web;
use web::{Observe, http_surface, https_url, spawn_http, spawn_https};

/// The running services.
pub struct Services {
    tasks: JoinSet<()>,
    store: Store,
    _packets: PacketRuntime,
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

/// The runtime of the boot path's packet services, DHCP and TFTP: one worker thread of their
/// own (`rackboot-packets`). On the main runtime they shared its workers with HTTP, and in a
/// boot storm the image downloads (copied into sockets by those workers) delayed boot-file
/// packets and DHCP answers behind them (docs/benchmarks.md, Storm). Their own thread is
/// scheduled by the kernel beside the HTTP workers instead of queued behind them.
struct PacketRuntime(Option<tokio::runtime::Runtime>);

impl PacketRuntime {
    fn new() -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rackboot-packets")
            .enable_all()
            .build()
            .context("cannot start the DHCP/TFTP runtime")?;
        Ok(Self(Some(rt)))
    }

    fn handle(&self) -> anyhow::Result<&tokio::runtime::Handle> {
        self.0
            .as_ref()
            .map(tokio::runtime::Runtime::handle)
            .context("the DHCP/TFTP runtime is gone")
    }
}

impl Drop for PacketRuntime {
    /// Dropping a runtime blocks, which an async context forbids: its tasks have been joined
    /// or aborted by then ([`Services::join`]), so it is let go in the background.
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Binds every listener (failing with the flag to fix), then spawns the services.
pub async fn start(
    settings: &Settings,
    ready: watch::Receiver<bool>,
    shutdown: CancellationToken,
) -> anyhow::Result<Services> {
    let data_dir = &settings.data_dir;
    let boot = &settings.config.boot;
    let ipxe = IpxeDir::open(&settings.ipxe_dir, &[&boot.bios, &boot.uefi_x64])?;
    // Before any key is read or made: with RACKBOOT_TPM=auto on a machine with a TPM, plain key
    // files (from before, or a restored backup) are sealed to it.
    let keys = crate::seal::keyfile::seal_existing(data_dir)
        .context("cannot seal the data dir's private keys to the TPM (RACKBOOT_TPM)")?;
    tracing::info!(keys = %keys.summary(), "private keys at rest");
    let authn = Authenticator::from_config(data_dir, &settings.config.auth).with_context(|| {
        format!(
            "cannot load the token issuer key from {} (--data-dir)",
            data_dir.display()
        )
    })?;
    // On an appliance update's trial boot, or the previous slot's after a failed one, a schema
    // migration is guarded by a copy of the store (store/trial.rs).
    let migration =
        crate::update::state::migration_mode(data_dir, std::path::Path::new("/proc/cmdline"));
    let store = Store::open_for(data_dir, migration).with_context(|| {
        format!(
            "cannot open the store in {} (--data-dir)",
            data_dir.display()
        )
    })?;
    store.set_min_free(settings.config.store.min_free.map(|b| b.0));
    let images = ImageStore::open(store.clone(), data_dir)
        .await
        .with_context(|| {
            format!(
                "cannot open the image store in {} (--data-dir)",
                data_dir.display()
            )
        })?;
    let mut tasks = JoinSet::new();
    let packets = PacketRuntime::new()?;
    let metrics = Arc::new(Metrics::new());
    metrics.count_tasks_of(packets.handle()?.clone());
    let timeline = Timeline::spawn(
        &mut tasks,
        store.clone(),
        metrics.clone(),
        settings.config.timeline.boots_per_node,
        shutdown.clone(),
    );
    Timeline::spawn_pruner(
        &mut tasks,
        store.clone(),
        settings.config.timeline.max_age,
        settings.config.timeline.max_events,
        shutdown.clone(),
    );

    let sealer = crate::seal::Sealer::open(data_dir).with_context(|| {
        format!(
            "cannot open the BMC credentials key in {} (--data-dir)",
            data_dir.display()
        )
    })?;
    let discovery =
        crate::discovery::Discovery::new(store.clone(), sealer, settings.config.discovery.clone());
    let on_lease = discovery.spawn_auto(&mut tasks, shutdown.clone())?;
    let upstream = match &settings.config.upstream {
        Some(cfg) => {
            let f = crate::federation::Federation::with_metrics(
                cfg.clone(),
                store.clone(),
                metrics.clone(),
            )
            .context("cannot set up the upstream ([upstream] in --config)")?;
            f.spawn(&mut tasks, shutdown.clone());
            tracing::info!(smd = %cfg.smd, "federated with an upstream");
            Some(f)
        }
        None => None,
    };
    crate::backup::schedule::spawn(
        &mut tasks,
        &settings.config.backup,
        data_dir,
        settings.config_file.clone(),
        metrics.clone(),
        shutdown.clone(),
    )?;
    let identity = if settings.config.identity.enabled {
        Some(
            crate::identity::Identity::open(
                data_dir,
                store.clone(),
                settings.config.identity.clone(),
                timeline.clone(),
            )
            .with_context(|| {
                format!(
                    "cannot open the rack CA in {} (--data-dir; or set identity.enabled = false)",
                    data_dir.display()
                )
            })?,
        )
    } else {
        None
    };
    if identity.is_some() {
        crate::identity::join::spawn_pruner(&mut tasks, store.clone(), shutdown.clone());
    }

    let dhcp = dhcp_config(settings)?;
    let pool_size: i64 = dhcp
        .subnets
        .iter()
        .filter_map(|s| s.pool)
        .map(|(a, b)| i64::from(u32::from(b)) - i64::from(u32::from(a)) + 1)
        .sum();
    if settings.config.listen.dhcp_port != 0 {
        let probe = crate::dhcp::service::spawn(
            &mut tasks,
            packets.handle()?,
            &settings.iface.name,
            settings.config.listen.dhcp_port,
            dhcp,
            store.clone(),
            Observers {
                metrics: metrics.clone(),
                timeline: timeline.clone(),
                on_lease: on_lease.clone(),
                on_unknown: upstream
                    .as_ref()
                    .map(crate::federation::Federation::unknown_lookup),
            },
            shutdown.clone(),
        )
        .await?;
        // Ready only with an engine that answers: an appliance update whose DHCP cannot serve
        // fails its health check here, and the previous slot comes back.
        let answered = probe
            .run(std::time::Duration::from_secs(10))
            .await
            .map_err(|e| anyhow::anyhow!("DHCP self-test failed: {e}"))?;
        tracing::info!(result = %answered, "DHCP self-test passed");
    }

    if settings.config.dns.enabled && settings.config.dns.port != 0 {
        crate::dns::spawn(
            &mut tasks,
            &settings.config.dns,
            &settings.iface.name,
            settings.iface.addr,
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
        )
        .await?;
    }

    const _: () = assert!(
        crate::config::TFTP_MAX_TRANSFERS == crate::tftp::MAX_TRANSFERS,
        "the configurable TFTP limit must fit the TFTP table"
    );
    if settings.config.listen.tftp_port != 0 {
        crate::tftp::spawn(
            &mut tasks,
            packets.handle()?,
            &settings.iface.name,
            settings.iface.addr,
            crate::tftp::Listen {
                port: settings.config.listen.tftp_port,
                max_transfers: settings.config.listen.tftp_max_transfers,
            },
            ipxe.clone(),
            Observers {
                metrics: metrics.clone(),
                timeline: timeline.clone(),
                on_lease: on_lease.clone(),
                on_unknown: None,
            },
            shutdown.clone(),
        )?;
    }
    let boot_ctx = BootScriptContext {
        store: store.clone(),
        ready,
        fallback_base: settings.base_url(),
        max_retries: boot.max_retries,
        timeline: timeline.clone(),
        identity: identity.clone().map(|id| {
            Arc::new(crate::identity::join::BootTokens::new(
                id,
                https_url(settings),
                Some(metrics.clone()),
            ))
        }),
        upstream: upstream
            .as_ref()
            .map(crate::federation::Federation::unknown_lookup),
    };
    let observe = Observe {
        metrics,
        timeline,
        pool_size,
        stuck_after: settings.config.timeline.stuck_after,
        cloud_init: settings.config.cloud_init.clone(),
        base: settings.base_url(),
        discovery,
        identity: identity.clone(),
        upstream,
        data_dir: data_dir.clone(),
    };
    let surface = http_surface(&authn, ipxe, images, store.clone(), boot_ctx, observe);
    let rack_device = settings.rack_device();
    let listener =
        crate::netif::tcp_listener(rack_device, settings.http_listen).with_context(|| {
            format!(
                "cannot listen for HTTP on {}{} (--http-listen)",
                settings.http_listen,
                rack_device.map(|d| format!(" on {d}")).unwrap_or_default()
            )
        })?;
    let boot_app = match &settings.admin {
        // The admin API lives on its own listeners; the rack network gets the boot path only.
        Some(admin) => {
            for iface in &admin.interfaces {
                let bind = std::net::SocketAddr::from(([0, 0, 0, 0], admin.port));
                let listener =
                    crate::netif::tcp_listener(Some(iface), bind).with_context(|| {
                        format!(
                            "cannot listen for the admin API on {iface} port {} \
                         (--admin-interface / listen.admin_port)",
                            admin.port
                        )
                    })?;
                spawn_http(&mut tasks, listener, surface.full.clone(), shutdown.clone());
                tracing::info!(interface = %iface, port = admin.port, "admin API listening");
            }
            surface.boot_only
        }
        None => surface.full,
    };
    spawn_http(&mut tasks, listener, boot_app, shutdown.clone());
    if let Some(id) = identity {
        spawn_https(&mut tasks, settings, id, shutdown).await?;
    }
    Ok(Services {
        tasks,
        store,
        _packets: packets,
    })
}

/// The DHCP engine configuration: the interface's own subnet (pool = upper half unless configured)
/// plus every configured relay subnet.
pub fn dhcp_config(settings: &Settings) -> anyhow::Result<ServerConfig> {
    let cfg = &settings.config;
    let bounded = |s: &str, what: &str| {
        boot::short::<128>(s).map_err(|_| anyhow::anyhow!("{what} is longer than 128 bytes"))
    };
    let policy = BootPolicy {
        bios: bounded(&cfg.boot.bios, "boot.bios")?,
        uefi_x64: bounded(&cfg.boot.uefi_x64, "boot.uefi_x64")?,
        uefi_ia32: bounded(&cfg.boot.uefi_ia32, "boot.uefi_ia32")?,
        uefi_arm64: bounded(&cfg.boot.uefi_arm64, "boot.uefi_arm64")?,
        http_base: bounded(&settings.base_url(), "the advertised base URL")?,
    };
    let mut subnets = heapless::Vec::new();
    let own = settings.iface.net;
    let own_cfg = cfg.dhcp.subnets.iter().find(|s| s.network.trunc() == own);
    let too_many = |_| {
        anyhow::anyhow!(
            "more than {MAX_SUBNETS} DHCP subnets (the interface's own plus [[dhcp.subnets]]); \
             run one rackboot per {MAX_SUBNETS} relayed subnets"
        )
    };
    subnets
        .push(subnet(settings, own, own_cfg)?)
        .map_err(too_many)?;
    for s in cfg.dhcp.subnets.iter().filter(|s| s.network.trunc() != own) {
        subnets
            .push(subnet(settings, s.network.trunc(), Some(s))?)
            .map_err(too_many)?;
    }
    Ok(ServerConfig {
        subnets,
        mode: match cfg.dhcp.mode {
            DhcpMode::Authoritative => Mode::Authoritative,
            DhcpMode::Proxy => Mode::Proxy,
        },
        boot: policy,
        offer_hold: pxe_core::Duration::from_secs(30),
        decline_quarantine: pxe_core::Duration::from_secs(600),
    })
}

fn subnet(
    settings: &Settings,
    net: ipnet::Ipv4Net,
    cfg: Option<&crate::config::Subnet>,
) -> anyhow::Result<SubnetConfig> {
    let pool = match cfg.and_then(|c| c.pool.as_deref()) {
        Some(p) => Some(config::parse_pool(p)?),
        None => config::default_pool(net),
    };
    let mut dns = heapless::Vec::new();
    for d in cfg.map(|c| c.dns.as_slice()).unwrap_or(&[]) {
        dns.push(*d)
            .map_err(|_| anyhow::anyhow!("dhcp.subnet {net}: at most 4 dns servers"))?;
    }
    // With rackboot's DNS on, nodes resolve through it (option 6) in its zone (option 15),
    // where their DHCP hostname (option 12) is their name; a subnet's own settings win.
    let ours = &settings.config.dns;
    let ours_on = ours.enabled && ours.port != 0;
    if ours_on && dns.is_empty() {
        let _ = dns.push(settings.iface.addr);
    }
    let domain = match cfg.and_then(|c| c.domain.as_deref()) {
        Some(d) => d,
        None if ours_on => ours.domain.as_str(),
        None => "",
    };
    Ok(SubnetConfig {
        network: net.network(),
        prefix: net.prefix_len(),
        server_ip: settings.iface.addr,
        router: cfg.and_then(|c| c.router),
        dns,
        domain: heapless::String::try_from(domain)
            .map_err(|_| anyhow::anyhow!("dhcp.subnet {net}: domain longer than 64 bytes"))?,
        lease_time: cfg
            .and_then(|c| c.lease_time)
            .unwrap_or(settings.config.dhcp.lease_time)
            .into(),
        pool,
    })
}

/// `rackboot serve`: resolves the settings, starts everything, then serves until SIGTERM or
/// SIGINT and shuts down gracefully.
pub async fn run(args: crate::serve::ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(args)?;
    crate::sys::raise_open_files_limit();
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = watch::channel(false);
    let services = start(&settings, ready_rx, shutdown.clone())
        .await
        .context("rackboot could not start")?;
    let _ = ready_tx.send(true);
    tracing::info!(
        version = crate::version::LONG,
        interface = %settings.iface.name,
        ip = %settings.iface.addr,
        subnet = %settings.iface.net,
        http = %settings.http_listen,
        admin = %settings
            .admin
            .as_ref()
            .map(|a| format!("{}:{}", a.interfaces.join(","), a.port))
            .unwrap_or_else(|| "with the boot path".to_owned()),
        data_dir = %settings.data_dir.display(),
        "rackboot ready"
    );
    crate::sys::notify_ready(&format!(
        "serving on {} ({})",
        settings.iface.name, settings.iface.addr
    ));
    let store = services.store.clone();
    let watchdog = tokio::spawn(crate::sys::watchdog(move || {
        let store = store.clone();
        async move { store.read(|_| Ok(())).await.is_ok() }
    }));
    let heap_trim = tokio::spawn(crate::sys::return_free_heap());
    wait_for_signal().await;
    crate::sys::notify_stopping();
    watchdog.abort();
    heap_trim.abort();
    tracing::info!("shutting down: no new requests; waiting for in-flight ones");
    shutdown.cancel();
    services.join(Duration::from_secs(10)).await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
