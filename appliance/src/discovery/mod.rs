//! Redfish BMC discovery, power and boot control (the job of OpenCHAMI's magellan + PCS).
//!
//! Discovery: targets (URLs, IPs, CIDRs) → probe TCP 443 then 80 → `GET /redfish/v1/` →
//! log in (session, else basic) → crawl Systems (UUID, model, serial, BIOS, power state,
//! reset types, every NIC MAC) and Managers (the BMC's own MAC, firmware) → write the
//! inventory in **one transaction per BMC**: the RedfishEndpoint (magellan's shape), the
//! Components (BMC and nodes) and the node EthernetInterfaces. A node's first NIC gets an
//! address from the node-address rule, so its next PXE boot gets a static lease. Nothing is
//! written for a BMC whose crawl failed part-way, and one BMC's failure never stops the scan.
//!
//! xnames, in order: an existing RedfishEndpoint for the same address keeps its ID
//! (re-discovery updates in place); `discovery.xnames` maps a BMC address or MAC to a BMC
//! xname; otherwise the next free slot `<cabinet>c<chassis>s<N>b0`. A BMC's systems become
//! nodes `<bmc>n0`, `<bmc>n1`, … in the order of their Redfish paths.
//!
//! Owns: Redfish probe/crawl, `bmc_*` tables, power, firmware, lease-driven discovery task,
//! `/rackboot/v1/{discovery,bmc,power,reprovision,firmware}`, `rackboot
//! discover/bmc/power/firmware`. May call: `client`, `config`, `http`, `images`, `inventory`,
//! `netif`, `output`, `seal`, `store`, `sys`, `timeline`.

mod auto;
pub mod cli;
mod crawl;
mod firmware;
mod hardware;
mod power;
mod record;
pub mod routes;

pub use firmware::{FirmwareImage, FirmwareRow};

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use redfish::{Bmc, Credentials, Limits, TlsPolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Mutex, Semaphore};

use crate::config::{self};
use crate::seal::Sealer;
use crate::store::Store;

/// Most addresses one discovery request may scan (a /16).
pub const MAX_SCAN: usize = 65_536;

/// The discovery and power service. Cheap to clone.
#[derive(Clone)]
pub struct Discovery {
    store: Store,
    sealer: Arc<Sealer>,
    cfg: config::Discovery,
    /// Serialises inventory writes (NID and slot allocation).
    apply: Arc<Mutex<()>>,
}

/// What happened to one target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetResult {
    pub target: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeFound>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeFound {
    pub xname: String,
    pub nid: i64,
    pub macs: Vec<String>,
    pub ip: Option<String>,
    pub power: Option<String>,
}

/// A power action, with OpenCHAMI PCS's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PowerAction {
    On,
    /// GracefulShutdown, then ForceOff if still on after the timeout.
    Off,
    SoftOff,
    ForceOff,
    Restart,
    Status,
}

/// The result of an action on one node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeResult {
    pub xname: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<String>,
    /// The BIOS version read back after a firmware update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn host_of(base: &str) -> String {
    let rest = base.split("://").nth(1).unwrap_or(base);
    let hostport = rest.split('/').next().unwrap_or(rest);
    match hostport.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => h.to_owned(),
        _ => hostport.to_owned(),
    }
    .trim_matches(['[', ']'])
    .to_owned()
}

impl Discovery {
    pub fn new(store: Store, sealer: Sealer, cfg: config::Discovery) -> Discovery {
        Discovery {
            store,
            sealer: Arc::new(sealer),
            cfg,
            apply: Arc::new(Mutex::new(())),
        }
    }

    /// Seals and stores credentials for `target` ("default" or a BMC address).
    pub async fn set_credentials(
        &self,
        target: &str,
        username: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        let sealed = self.sealer.seal(target, password)?;
        self.store
            .put_bmc_credentials(target.to_owned(), username.to_owned(), sealed)
            .await?;
        Ok(())
    }

    async fn credentials(&self, host: &str) -> Option<Credentials> {
        for target in [host, "default"] {
            if let Ok(Some((username, sealed))) =
                self.store.bmc_credentials(target.to_owned()).await
            {
                match self.sealer.open_sealed(target, &sealed) {
                    Ok(password) => return Some(Credentials { username, password }),
                    Err(e) => tracing::error!(target, error = %e, "BMC credentials unusable"),
                }
            }
        }
        None
    }

    /// A logged-in client for `base`, with its pin (or the configured CA bundle / opt-out).
    async fn connect(&self, base: &str, insecure: bool) -> Result<Bmc, String> {
        let host = host_of(base);
        let tls = if insecure || self.cfg.tls == config::BmcTls::Insecure {
            TlsPolicy::Insecure
        } else if let Some(ca) = &self.cfg.ca_bundle {
            let pem = std::fs::read_to_string(ca)
                .map_err(|e| format!("cannot read discovery.ca_bundle {}: {e}", ca.display()))?;
            TlsPolicy::CaBundle(pem)
        } else {
            TlsPolicy::Pin(self.store.bmc_pin(base.to_owned()).await.ok().flatten())
        };
        let creds = self.credentials(&host).await;
        let mut bmc = Bmc::new(base, tls, creds, self.limits()).map_err(|e| e.to_string())?;
        bmc.login().await.map_err(|e| e.to_string())?;
        if let Some(sha) = bmc.certificate_sha256()
            && base.starts_with("https://")
        {
            let _ = self.store.pin_bmc(base.to_owned(), sha).await;
        }
        Ok(bmc)
    }

    fn limits(&self) -> Limits {
        Limits {
            request_timeout: self.cfg.request_timeout,
            ..Limits::default()
        }
    }

    /// Discovers every target; one result per target (per BMC found, for ranges).
    pub async fn discover(&self, targets: &[String], insecure: bool) -> Vec<TargetResult> {
        let (progress, _) = tokio::sync::watch::channel(Progress::default());
        self.discover_watched(targets, insecure, &progress).await
    }

    /// [`Discovery::discover`], counting its progress into `progress` as it goes.
    pub async fn discover_watched(
        &self,
        targets: &[String],
        insecure: bool,
        progress: &tokio::sync::watch::Sender<Progress>,
    ) -> Vec<TargetResult> {
        let mut bases: Vec<(String, String)> = Vec::new(); // (target, base URL)
        let mut results = Vec::new();
        let mut probe: Vec<(String, Ipv4Addr)> = Vec::new();
        for t in targets {
            let t = t.trim();
            if t.starts_with("http://") || t.starts_with("https://") {
                bases.push((t.to_owned(), t.trim_end_matches('/').to_owned()));
            } else if let Ok(ip) = t.parse::<Ipv4Addr>() {
                probe.push((t.to_owned(), ip));
            } else if let Ok(net) = t.parse::<ipnet::Ipv4Net>() {
                let hosts: Vec<Ipv4Addr> = net.hosts().take(MAX_SCAN + 1).collect();
                if hosts.len() > MAX_SCAN {
                    results.push(TargetResult {
                        target: t.to_owned(),
                        ok: false,
                        bmc: None,
                        nodes: Vec::new(),
                        error: Some(format!(
                            "{t} has more than {MAX_SCAN} addresses; scan at most a /16 at a time"
                        )),
                    });
                    continue;
                }
                probe.extend(hosts.into_iter().map(|h| (t.to_owned(), h)));
            } else {
                results.push(TargetResult {
                    target: t.to_owned(),
                    ok: false,
                    bmc: None,
                    nodes: Vec::new(),
                    error: Some(format!(
                        "{t:?} is not a URL (https://host[:port]), an IPv4 address or a CIDR"
                    )),
                });
            }
        }
        // Probe: many at once, short timeouts; a silent /20 takes about one timeout.
        // rackboot's own addresses answer on :80 but are no BMC: a subnet scan skips them.
        let own = crate::netif::local_ipv4s();
        let before = probe.len();
        probe.retain(|(t, ip)| !own.contains(ip) || t.parse::<Ipv4Addr>().is_ok());
        if probe.len() < before {
            tracing::debug!(
                skipped = before - probe.len(),
                "scan skips rackboot's own addresses"
            );
        }
        progress.send_modify(|p| {
            p.addresses = probe.len();
            p.bmcs = bases.len();
        });
        // Two sockets per probe; leave room for everything else rackboot has open.
        let fd_room = crate::sys::open_files_limit().map_or(usize::MAX, |l| {
            usize::try_from(l.saturating_sub(512) / 2).unwrap_or(usize::MAX)
        });
        let parallel = self.cfg.probe_parallel.min(fd_room).max(1);
        if parallel < self.cfg.probe_parallel && !probe.is_empty() {
            tracing::warn!(
                configured = self.cfg.probe_parallel,
                parallel,
                "discovery.probe_parallel cut to fit the open-files limit (raise LimitNOFILE)"
            );
        }
        let gate = Arc::new(Semaphore::new(parallel));
        let timeout = self.cfg.probe_timeout;
        let mut probes = tokio::task::JoinSet::new();
        for (target, ip) in probe {
            let gate = gate.clone();
            probes.spawn(async move {
                let _permit = gate.acquire_owned().await.ok()?;
                // Both ports at once (a silent address costs one timeout, not two); 443 wins.
                let open = |port: u16| async move {
                    let addr = SocketAddr::new(IpAddr::V4(ip), port);
                    matches!(
                        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
                        Ok(Ok(_))
                    )
                };
                let (https, http) = tokio::join!(open(443), open(80));
                if https {
                    Some((target, format!("https://{ip}")))
                } else if http {
                    Some((target, format!("http://{ip}")))
                } else {
                    None
                }
            });
        }
        let mut single_missing: BTreeMap<String, bool> = BTreeMap::new();
        while let Some(r) = probes.join_next().await {
            let found = r.ok().flatten();
            progress.send_modify(|p| {
                p.probed += 1;
                p.bmcs += usize::from(found.is_some());
            });
            if let Some(found) = found {
                single_missing.insert(found.0.clone(), false);
                bases.push(found);
            }
        }
        for t in targets {
            if t.parse::<Ipv4Addr>().is_ok() && !single_missing.contains_key(t.trim()) {
                results.push(TargetResult {
                    target: t.clone(),
                    ok: false,
                    bmc: None,
                    nodes: Vec::new(),
                    error: Some("nothing answers on TCP 443 or 80".into()),
                });
            }
        }
        // Crawl the BMCs found, a bounded number at once.
        let gate = Arc::new(Semaphore::new(self.cfg.max_parallel.max(1)));
        let mut crawls = tokio::task::JoinSet::new();
        for (target, base) in bases {
            let (me, gate) = (self.clone(), gate.clone());
            crawls.spawn(async move {
                // The slot is for talking to BMCs; the inventory write queues without it.
                let permit = gate.acquire_owned().await;
                let crawl = me.crawl(&base, insecure).await;
                drop(permit);
                let r = match crawl {
                    Ok(c) => me.record(c).await,
                    Err(e) => Err(e),
                };
                (target, base, r)
            });
        }
        while let Some(r) = crawls.join_next().await {
            let Ok((target, base, r)) = r else { continue };
            progress.send_modify(|p| {
                p.crawled += 1;
                p.failed += usize::from(r.is_err());
            });
            results.push(match r {
                Ok((bmc, nodes)) => TargetResult {
                    target,
                    ok: true,
                    bmc: Some(bmc),
                    nodes,
                    error: None,
                },
                Err(e) => {
                    tracing::warn!(bmc = %base, error = %e, "discovery failed for this BMC");
                    TargetResult {
                        target: format!("{target} ({base})"),
                        ok: false,
                        bmc: None,
                        nodes: Vec::new(),
                        error: Some(e),
                    }
                }
            });
        }
        results.sort_by(|a, b| a.target.cmp(&b.target));
        results
    }

    /// The BMC base URL and system URI of node `xname`, from its RedfishEndpoint.
    async fn locate(&self, xname: &str) -> Result<(String, String, Vec<String>), String> {
        let endpoints = self
            .store
            .list_redfish_endpoints()
            .await
            .map_err(|e| e.to_string())?;
        for e in endpoints {
            let systems = e.extra.get("Systems").and_then(Value::as_array);
            for s in systems.into_iter().flatten() {
                if s.get("Node").and_then(Value::as_str) == Some(xname) {
                    let base = e
                        .extra
                        .get("URL")
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("RedfishEndpoint {} has no URL", e.id))?;
                    let uri = s.get("URI").and_then(Value::as_str).ok_or_else(|| {
                        format!("RedfishEndpoint {} lists {xname} without a URI", e.id)
                    })?;
                    return Ok((base.to_owned(), uri.to_owned(), Vec::new()));
                }
            }
        }
        Err(format!(
            "{xname} has no BMC in the inventory: run `rackboot discover` on its BMC first"
        ))
    }

    async fn each<F, Fut>(&self, xnames: &[String], f: F) -> Vec<NodeResult>
    where
        F: Fn(Discovery, String) -> Fut,
        Fut:
            std::future::Future<Output = Result<(Option<String>, String), String>> + Send + 'static,
    {
        let mut set = tokio::task::JoinSet::new();
        for x in xnames {
            let fut = f(self.clone(), x.clone());
            let x = x.clone();
            set.spawn(async move { (x, fut.await) });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            let Ok((xname, r)) = r else { continue };
            out.push(match r {
                Ok((power, detail)) => NodeResult {
                    xname,
                    ok: true,
                    power,
                    bios_version: None,
                    detail: Some(detail),
                    error: None,
                },
                Err(e) => NodeResult {
                    xname,
                    ok: false,
                    power: None,
                    bios_version: None,
                    detail: None,
                    error: Some(e),
                },
            });
        }
        out.sort_by(|a, b| a.xname.cmp(&b.xname));
        out
    }
}

/// How far a discovery run is: addresses probed, BMCs found and crawled.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Progress {
    /// Addresses to probe (IPs and CIDR hosts; URL targets are not probed).
    pub addresses: usize,
    pub probed: usize,
    /// BMCs to crawl: URL targets plus addresses that answered.
    pub bmcs: usize,
    pub crawled: usize,
    /// Crawls that failed (wrong password, garbage, timeouts, …).
    pub failed: usize,
}
