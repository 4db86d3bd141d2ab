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

mod auto;
pub mod cli;
mod firmware;
mod power;
pub mod routes;

pub use firmware::{FirmwareImage, FirmwareRow};

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use redfish::{Bmc, Credentials, Limits, Res, TlsPolicy};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, Semaphore};

use crate::config::{self, XnameRule};
use crate::seal::Sealer;
use crate::store::{Component, EthernetInterface, IpAddressEntry, RedfishEndpoint, Store};

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

/// What a crawl of one BMC found (nothing written yet).
#[derive(Debug, Clone)]
struct Crawl {
    base: String,
    host: String,
    redfish_version: Option<String>,
    bmc_mac: Option<String>,
    manager: Map<String, Value>,
    systems: Vec<System>,
    cert_sha256: Option<String>,
    user: Option<String>,
}

#[derive(Debug, Clone)]
struct System {
    uri: String,
    uuid: Option<String>,
    model: Option<String>,
    manufacturer: Option<String>,
    serial: Option<String>,
    bios: Option<String>,
    power: Option<String>,
    reset_types: Vec<String>,
    macs: Vec<String>,
    /// Where the MACs came from: `EthernetInterfaces` or `NetworkAdapters`.
    macs_from: &'static str,
    /// The system's chassis and its `Location` (slot for the location xname rule).
    chassis: Option<String>,
    location: Option<Value>,
    slot: Option<u32>,
    /// `SerialConsole` / `GraphicalConsole` as advertised by the system.
    consoles: Map<String, Value>,
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

    async fn crawl(&self, base: &str, insecure: bool) -> Result<Crawl, String> {
        let mut bmc = self.connect(base, insecure).await?;
        let result = async {
            let root = bmc.service_root().await.map_err(|e| e.to_string())?;
            // A lone chassis stands for systems that do not link theirs.
            let lone_chassis = match root.link("Chassis") {
                Some(coll) => {
                    let m = bmc.get(&coll).await.map_err(|e| e.to_string())?.members();
                    if m.len() == 1 {
                        m.into_iter().next()
                    } else {
                        None
                    }
                }
                None => None,
            };
            let mut systems = Vec::new();
            if let Some(coll) = root.link("Systems") {
                let mut members = bmc.get(&coll).await.map_err(|e| e.to_string())?.members();
                members.sort();
                for uri in members {
                    let s = bmc.get(&uri).await.map_err(|e| e.to_string())?;
                    let mut macs = nic_macs(&bmc, &s).await?;
                    let mut macs_from = "EthernetInterfaces";
                    let chassis_uri =
                        s.0.pointer("/Links/Chassis/0")
                            .and_then(redfish::model::odata_id)
                            .or_else(|| lone_chassis.clone());
                    let chassis = match &chassis_uri {
                        Some(u) => Some(bmc.get(u).await.map_err(|e| e.to_string())?),
                        None => None,
                    };
                    if macs.is_empty()
                        && let Some(ch) = &chassis
                    {
                        macs = adapter_macs(&bmc, ch).await?;
                        macs_from = "NetworkAdapters";
                    }
                    let location = chassis
                        .as_ref()
                        .and_then(|c| c.0.get("Location"))
                        .filter(|l| l.is_object())
                        .cloned();
                    let slot = location.as_ref().and_then(location_slot);
                    let mut consoles = Map::new();
                    for k in ["SerialConsole", "GraphicalConsole", "CommandShell"] {
                        if let Some(v) = s.0.get(k).filter(|v| v.is_object()) {
                            consoles.insert(k.to_owned(), v.clone());
                        }
                    }
                    systems.push(System {
                        macs_from,
                        chassis: chassis_uri,
                        location,
                        slot,
                        consoles,
                        uuid: s.str("UUID"),
                        model: s.str("Model"),
                        manufacturer: s.str("Manufacturer"),
                        serial: s.str("SerialNumber"),
                        bios: s.str("BiosVersion"),
                        power: s.str("PowerState"),
                        reset_types: s.reset_types(),
                        macs,
                        uri,
                    });
                }
            }
            let mut manager = Map::new();
            let mut bmc_mac = None;
            if let Some(coll) = root.link("Managers")
                && let Some(uri) = bmc
                    .get(&coll)
                    .await
                    .map_err(|e| e.to_string())?
                    .members()
                    .first()
            {
                let m = bmc.get(uri).await.map_err(|e| e.to_string())?;
                bmc_mac = nic_macs(&bmc, &m).await?.into_iter().next();
                for k in ["Model", "FirmwareVersion", "ManagerType", "UUID"] {
                    if let Some(v) = m.str(k) {
                        manager.insert(k.to_owned(), Value::String(v));
                    }
                }
                // Console access (serial-over-LAN, KVM, shell) as the BMC advertises it.
                for k in ["SerialConsole", "GraphicalConsole", "CommandShell"] {
                    if let Some(v) = m.0.get(k).filter(|v| v.is_object()) {
                        manager.insert(k.to_owned(), v.clone());
                    }
                }
                manager.insert("URI".into(), Value::String(uri.clone()));
            }
            Ok::<_, String>((root, systems, manager, bmc_mac))
        }
        .await;
        bmc.logout().await;
        let (root, systems, manager, bmc_mac) = result?;
        Ok(Crawl {
            base: base.to_owned(),
            host: host_of(base),
            redfish_version: root.str("RedfishVersion"),
            bmc_mac,
            manager,
            systems,
            cert_sha256: bmc.certificate_sha256(),
            user: self.credentials(&host_of(base)).await.map(|c| c.username),
        })
    }

    /// Writes one crawl into the inventory (one transaction).
    async fn record(&self, c: Crawl) -> Result<(String, Vec<NodeFound>), String> {
        let _serial = self.apply.lock().await;
        // Indexed lookups, not the whole inventory: one BMC's write must not cost more as the
        // rack fills up.
        let names = self
            .store
            .discovery_names(c.host.clone(), Vec::new())
            .await
            .map_err(|e| e.to_string())?;
        let (bmc_x, rule) = match names.existing {
            Some(id) => (id, "existing"),
            None => {
                let port = self
                    .store
                    .bmc_relay_port(c.host.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                self.name_bmc(&c, port.as_ref(), &names.endpoint_ids)?
            }
        };
        let node_xnames: Vec<String> = (0..c.systems.len())
            .map(|i| format!("{bmc_x}n{i}"))
            .collect();
        let nids = self
            .store
            .discovery_names(c.host.clone(), node_xnames)
            .await
            .map_err(|e| e.to_string())?
            .node_nids;
        let mut next_nid = names.max_nid.unwrap_or(0) + 1;
        let mut components = vec![component(&bmc_x, "NodeBMC", None, None)];
        let mut interfaces = Vec::new();
        let mut found = Vec::new();
        let mut systems_doc = Vec::new();
        for (i, s) in c.systems.iter().enumerate() {
            let node_x = format!("{bmc_x}n{i}");
            let nid = match nids.get(&node_x) {
                Some(n) => *n,
                None => {
                    let n = next_nid;
                    next_nid += 1;
                    n
                }
            };
            let ip = self.cfg.node_ip_base.and_then(|b| {
                u32::try_from(nid)
                    .ok()
                    .and_then(|n| u32::from(b).checked_add(n))
                    .map(Ipv4Addr::from)
            });
            let state = match s.power.as_deref() {
                Some("On") => "On",
                Some("Off") => "Off",
                _ => "Populated",
            };
            components.push(component(&node_x, "Node", Some(nid), Some(state)));
            for (k, mac) in s.macs.iter().enumerate() {
                interfaces.push(EthernetInterface {
                    id: mac.replace(':', ""),
                    description: Some(format!("discovered via Redfish {}{}", c.base, s.uri)),
                    mac_address: mac.clone(),
                    ip_addresses: match (k, ip) {
                        (0, Some(ip)) => vec![IpAddressEntry {
                            ip_address: ip.to_string(),
                            network: None,
                        }],
                        _ => Vec::new(),
                    },
                    last_update: Some(crate::timeline::routes::rfc3339(crate::store::now_ms())),
                    component_id: Some(node_x.clone()),
                    kind: Some("Node".into()),
                    extra: Map::new(),
                });
            }
            systems_doc.push(json!({
                "URI": s.uri, "UUID": s.uuid, "Model": s.model, "Manufacturer": s.manufacturer,
                "SerialNumber": s.serial, "BiosVersion": s.bios, "PowerState": s.power,
                "ResetTypes": s.reset_types, "Node": node_x,
                "Chassis": s.chassis, "Location": s.location, "MACsFrom": s.macs_from,
                "Consoles": s.consoles,
                "EthernetInterfaces": s.macs.iter().map(|m| json!({"MACAddress": m})).collect::<Vec<_>>(),
            }));
            found.push(NodeFound {
                xname: node_x,
                nid,
                macs: s.macs.clone(),
                ip: ip.map(|i| i.to_string()),
                power: s.power.clone(),
            });
        }
        let mut doc = Map::new();
        for (k, v) in [
            ("Type", json!("NodeBMC")),
            ("Name", json!(c.host)),
            ("Hostname", json!(c.host)),
            ("Domain", json!("")),
            ("FQDN", json!(c.host)),
            ("IPAddress", json!(c.host)),
            ("URL", json!(c.base)),
            ("Enabled", json!(true)),
            ("User", json!(c.user)),
            ("MACRequired", json!(false)),
            ("MACAddr", json!(c.bmc_mac)),
            ("RediscoverOnUpdate", json!(false)),
            ("SchemaVersion", json!(1)),
            ("Systems", Value::Array(systems_doc)),
            ("Managers", json!([c.manager])),
            ("TLS", json!({"sha256": c.cert_sha256})),
            (
                "DiscoveryInfo",
                json!({
                    "LastDiscoveryStatus": "DiscoverOK",
                    "LastDiscoveryAttempt": crate::timeline::routes::rfc3339(crate::store::now_ms()),
                    "RedfishVersion": c.redfish_version,
                }),
            ),
        ] {
            doc.insert(k.to_owned(), v);
        }
        doc.insert("XnameRule".into(), json!(rule));
        let endpoint = RedfishEndpoint {
            id: bmc_x.clone(),
            extra: doc,
        };
        self.store
            .apply_discovery(endpoint, components, interfaces)
            .await
            .map_err(|e| format!("inventory write failed (nothing written): {e}"))?;
        tracing::info!(bmc = %c.base, xname = %bmc_x, rule, nodes = found.len(), "BMC discovered");
        Ok((bmc_x, found))
    }

    /// A new BMC's xname: the first of `discovery.xname_rules` that yields an xname no other
    /// BMC holds. Returns the xname and the rule that gave it.
    fn name_bmc(
        &self,
        c: &Crawl,
        port: Option<&(String, String)>,
        endpoint_ids: &std::collections::HashSet<String>,
    ) -> Result<(String, &'static str), String> {
        let free = |x: &str| !endpoint_ids.contains(x);
        let slot = |n: u32| format!("{}c{}s{n}b0", self.cfg.cabinet, self.cfg.chassis);
        for rule in &self.cfg.xname_rules {
            let (name, candidate) = match rule {
                XnameRule::Map => {
                    let Some(x) = self
                        .cfg
                        .xnames
                        .get(&c.host)
                        .or_else(|| c.bmc_mac.as_ref().and_then(|m| self.cfg.xnames.get(m)))
                    else {
                        continue;
                    };
                    crate::inventory::xname::parse(x)
                        .map_err(|e| format!("discovery.xnames maps {} to {x:?}: {e}", c.host))?;
                    ("map", x.clone())
                }
                XnameRule::RelayPort => {
                    let Some((circuit, remote)) = port else {
                        continue;
                    };
                    let Some(n) = self
                        .cfg
                        .relay_ports
                        .get(&format!("{remote}/{circuit}"))
                        .or_else(|| self.cfg.relay_ports.get(circuit))
                    else {
                        tracing::info!(bmc = %c.host, circuit, remote, "switch port not in discovery.relay_ports");
                        continue;
                    };
                    ("relay-port", slot(*n))
                }
                XnameRule::Location => {
                    let Some(n) = c.systems.iter().find_map(|s| s.slot) else {
                        continue;
                    };
                    ("location", slot(n))
                }
                XnameRule::Sequential => {
                    let x = (0..4096)
                        .map(slot)
                        .find(|x| free(x))
                        .ok_or("no free slot left for a BMC xname")?;
                    ("sequential", x)
                }
            };
            if free(&candidate) {
                return Ok((candidate, name));
            }
            tracing::warn!(bmc = %c.host, xname = %candidate, rule = name, "xname already held by another BMC; trying the next rule");
        }
        Err(format!(
            "no xname rule named {} (discovery.xname_rules = {:?}); add `sequential` as the last rule",
            c.host, self.cfg.xname_rules
        ))
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

fn component(id: &str, kind: &str, nid: Option<i64>, state: Option<&str>) -> Component {
    Component {
        id: id.to_owned(),
        kind: Some(kind.to_owned()),
        state: Some(state.unwrap_or("Ready").to_owned()),
        flag: Some("OK".into()),
        enabled: Some(true),
        role: (kind == "Node").then(|| "Compute".to_owned()),
        sub_role: None,
        nid,
        arch: (kind == "Node").then(|| "X86".to_owned()),
        class: None,
        extra: Map::new(),
    }
}

/// Every MAC of a System or Manager (its EthernetInterfaces; for systems without any, the
/// NetworkAdapters' ports are not read yet).
async fn nic_macs(bmc: &Bmc, res: &Res) -> Result<Vec<String>, String> {
    let Some(coll) = res.link("EthernetInterfaces") else {
        return Ok(Vec::new());
    };
    let mut members = bmc.get(&coll).await.map_err(|e| e.to_string())?.members();
    members.sort();
    let mut macs = Vec::new();
    for m in members {
        if let Some(mac) = bmc.get(&m).await.map_err(|e| e.to_string())?.mac()
            && !macs.contains(&mac)
        {
            macs.push(mac);
        }
    }
    Ok(macs)
}

/// NIC MACs from a chassis's NetworkAdapters, for systems without EthernetInterfaces:
/// NetworkDeviceFunctions (`Ethernet.MACAddress`), Ports (`Ethernet.AssociatedMACAddresses`)
/// and the older NetworkPorts (`AssociatedNetworkAddresses`).
async fn adapter_macs(bmc: &Bmc, chassis: &Res) -> Result<Vec<String>, String> {
    let Some(coll) = chassis.link("NetworkAdapters") else {
        return Ok(Vec::new());
    };
    let mut adapters = bmc.get(&coll).await.map_err(|e| e.to_string())?.members();
    adapters.sort();
    let mut macs = Vec::new();
    let mut add = |v: Option<&Value>| {
        let list = match v {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>(),
            Some(Value::String(m)) => vec![m.as_str()],
            _ => Vec::new(),
        };
        for m in list.into_iter().filter_map(redfish::model::normalize_mac) {
            if !macs.contains(&m) {
                macs.push(m);
            }
        }
    };
    for a in adapters {
        let adapter = bmc.get(&a).await.map_err(|e| e.to_string())?;
        for (coll, pointers) in [
            (
                "NetworkDeviceFunctions",
                &["/Ethernet/MACAddress", "/Ethernet/PermanentMACAddress"][..],
            ),
            ("Ports", &["/Ethernet/AssociatedMACAddresses"][..]),
            ("NetworkPorts", &["/AssociatedNetworkAddresses"][..]),
        ] {
            let Some(uri) = adapter.link(coll) else {
                continue;
            };
            let mut members = bmc.get(&uri).await.map_err(|e| e.to_string())?.members();
            members.sort();
            for m in members {
                let r = bmc.get(&m).await.map_err(|e| e.to_string())?;
                for p in pointers {
                    add(r.0.pointer(p));
                }
            }
        }
    }
    Ok(macs)
}

/// The slot number in a Redfish `Location`: `PartLocation.LocationOrdinalValue` when the
/// location type is a slot (or unstated).
fn location_slot(location: &Value) -> Option<u32> {
    let part = location.get("PartLocation")?;
    let kind = part.get("LocationType").and_then(Value::as_str);
    if kind.is_some_and(|k| k != "Slot" && k != "Bay") {
        return None;
    }
    let n = part.get("LocationOrdinalValue")?;
    n.as_u64()
        .or_else(|| n.as_str().and_then(|s| s.trim().parse().ok()))
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n < 4096)
}
