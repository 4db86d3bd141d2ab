//! Configuration: flags, `RACKBOOT_*` env vars and the optional TOML file.
//!
//! Precedence, lowest to highest: built-in defaults < `--config FILE` < `RACKBOOT_<SECTION>__<KEY>`
//! env vars < command-line flags. With no file at all, `rackboot serve --interface IF` derives
//! the subnet from the interface's IPv4 address and uses the upper half of it as the dynamic pool.
//!
//! Every key of the file can be overridden from the environment: the path of the key, upper-cased,
//! with `__` between levels, e.g. `RACKBOOT_DHCP__LEASE_TIME=2h` or `RACKBOOT_BOOT__MAX_RETRIES=3`.
//! Values are read as TOML when they parse as TOML (numbers, booleans, arrays, inline tables),
//! otherwise as strings.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The whole configuration file. Unknown keys are refused so typos are not silently ignored.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The rack interface (same as `--interface`).
    pub interface: Option<String>,
    /// Where the store, images and keys live (same as `--data-dir`).
    pub data_dir: Option<PathBuf>,
    /// Directory with the iPXE binaries (same as `--ipxe-dir`).
    pub ipxe_dir: Option<PathBuf>,
    /// The address written into boot URLs; defaults to the interface address.
    pub advertise: Option<Ipv4Addr>,
    pub listen: Listen,
    pub dhcp: Dhcp,
    pub boot: Boot,
    pub auth: Auth,
    pub timeline: Timeline,
    pub store: StoreConfig,
    pub cloud_init: CloudInit,
    pub discovery: Discovery,
    pub identity: Identity,
    pub upstream: Option<Upstream>,
}

/// Federation with an upstream OpenCHAMI management API (SMD, BSS).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// SMD base URL (…/hsm/v2 is appended), e.g. "https://demo.openchami.cluster:8443".
    pub smd: String,
    /// BSS base URL (…/boot/v1 is appended); default: the SMD URL.
    #[serde(default)]
    pub bss: Option<String>,
    /// cloud-init base URL (…/cloud-init/admin/… is appended); default: the SMD URL.
    #[serde(default)]
    pub cloud_init: Option<String>,
    /// The rack's scope: components whose xname starts with this (e.g. "x1000c0")…
    #[serde(default)]
    pub xname_prefix: Option<String>,
    /// …or the members of this upstream SMD group.
    #[serde(default)]
    pub group: Option<String>,
    /// Bearer token file, re-read when it changes (e.g. written by a tokensmith sidecar).
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// OAuth2 client credentials instead of a token file.
    #[serde(default)]
    pub oauth2: Option<OAuth2>,
    /// Client certificate and key (PEM) for mTLS to the upstream.
    #[serde(default)]
    pub client_cert: Option<std::path::PathBuf>,
    #[serde(default)]
    pub client_key: Option<std::path::PathBuf>,
    /// PEM CA bundle for the upstream's certificate (default: the system roots).
    #[serde(default)]
    pub ca_bundle: Option<std::path::PathBuf>,
    #[serde(default = "default_sync_interval", with = "humantime_serde_compat")]
    pub interval: Duration,
    #[serde(default = "default_upstream_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// How long a bootscript request for an unknown MAC waits for the upstream.
    #[serde(default = "default_lookup_deadline", with = "humantime_serde_compat")]
    pub lookup_deadline: Duration,
    /// Also accept inventory and boot changes made here (kept as `local` next to the upstream's).
    /// false: the API refuses them with 409; RedfishEndpoints stay writable (they are pushed).
    #[serde(default = "yes")]
    pub allow_local: bool,
}

fn default_sync_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_lookup_deadline() -> Duration {
    Duration::from_secs(2)
}
fn yes() -> bool {
    true
}

/// OAuth2 client-credentials grant.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OAuth2 {
    pub token_url: String,
    pub client_id: String,
    /// File holding the client secret (never the secret itself in the config).
    pub client_secret_file: std::path::PathBuf,
    #[serde(default)]
    pub scope: Option<String>,
}

/// How an enrollment with a valid join token is decided.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EnrollPolicy {
    /// The token is enough: the certificate is issued at once.
    #[default]
    Token,
    /// The request waits for `rackboot cert approve ID`.
    Approval,
}

/// Machine identity: the rack CA, node certificates, secrets.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Identity {
    /// Off: no CA, no HTTPS listener, no join tokens on kernel command lines.
    pub enabled: bool,
    /// Trust domain in node certificates: `spiffe://<cluster>/node/<xname>`.
    pub cluster: String,
    /// HTTPS listener (enrollment and the mTLS routes).
    pub listen: std::net::SocketAddr,
    /// Extra names for the HTTPS certificate (the interface address and hostname are always in).
    pub names: Vec<String>,
    pub policy: EnrollPolicy,
    /// Per SMD group: { "login" = "approval" } (a group's policy wins over `policy`).
    pub group_policy: std::collections::BTreeMap<String, EnrollPolicy>,
    #[serde(with = "humantime_serde_compat")]
    pub token_ttl: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub cert_lifetime: Duration,
    /// The HTTPS certificate's lifetime; it is renewed when a third of it is left.
    #[serde(with = "humantime_serde_compat")]
    pub server_cert_lifetime: Duration,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            enabled: true,
            cluster: "rack".into(),
            listen: std::net::SocketAddr::from(([0, 0, 0, 0], 443)),
            names: Vec::new(),
            policy: EnrollPolicy::Token,
            group_policy: Default::default(),
            token_ttl: Duration::from_secs(900),
            cert_lifetime: Duration::from_secs(86_400),
            server_cert_lifetime: Duration::from_secs(30 * 86_400),
        }
    }
}

/// How BMC certificates are checked when no `ca_bundle` is set.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum BmcTls {
    /// Pin each BMC's certificate on first use, then require it.
    #[default]
    Pin,
    /// Accept any certificate (logged on every connection).
    Insecure,
}

/// One way of naming a newly discovered BMC (`discovery.xname_rules`, tried in order).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum XnameRule {
    /// `discovery.xnames`: the BMC's address or MAC.
    Map,
    /// `discovery.relay_ports`: the switch port (DHCP option 82) the BMC's lease came through.
    RelayPort,
    /// The slot in the BMC's Redfish Chassis `Location` (`PartLocation.LocationOrdinalValue`).
    Location,
    /// The next free slot.
    Sequential,
}

/// Redfish BMC discovery and control.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Discovery {
    /// BMC address or MAC → BMC xname, e.g. { "192.0.2.201" = "x1000c0s7b0" }.
    pub xnames: std::collections::BTreeMap<String, String>,
    /// Switch port → slot: option 82 circuit-id, or "remote-id/circuit-id" (more specific),
    /// e.g. { "Gi1/0/7" = 7, "sw2/Gi1/0/7" = 23 }.
    pub relay_ports: std::collections::BTreeMap<String, u32>,
    /// How a new BMC gets its xname; the first rule that yields a free xname wins.
    pub xname_rules: Vec<XnameRule>,
    /// Cabinet and chassis of the slot-based rules (`<cabinet>c<chassis>s<N>b0`).
    pub cabinet: String,
    pub chassis: u32,
    /// Node address rule: a node's first NIC gets `node_ip_base + NID` (static DHCP lease).
    /// Unset: discovered NICs get no address (and no static lease).
    pub node_ip_base: Option<Ipv4Addr>,
    pub tls: BmcTls,
    /// PEM CA bundle that signed the BMC certificates (instead of pinning).
    pub ca_bundle: Option<PathBuf>,
    #[serde(with = "humantime_serde_compat")]
    pub probe_timeout: Duration,
    /// Addresses probed at once.
    pub probe_parallel: usize,
    /// BMCs crawled at once.
    pub max_parallel: usize,
    #[serde(with = "humantime_serde_compat")]
    pub request_timeout: Duration,
    /// `power off` waits this long for GracefulShutdown before ForceOff.
    #[serde(with = "humantime_serde_compat")]
    pub off_timeout: Duration,
    /// A firmware update task that has not ended after this long is reported as failed.
    #[serde(with = "humantime_serde_compat")]
    pub firmware_timeout: Duration,
    /// "first-last": a device that takes a DHCP lease in this range is a BMC; rackboot discovers
    /// it on its own. Unset: discovery only on request.
    pub bmc_pool: Option<String>,
    /// An auto-discovered BMC is not scanned again on lease renewals for this long.
    #[serde(with = "humantime_serde_compat")]
    pub auto_rediscover_after: Duration,
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            xnames: Default::default(),
            relay_ports: Default::default(),
            xname_rules: vec![
                XnameRule::Map,
                XnameRule::RelayPort,
                XnameRule::Location,
                XnameRule::Sequential,
            ],
            cabinet: "x1000".into(),
            chassis: 0,
            node_ip_base: None,
            tls: BmcTls::Pin,
            ca_bundle: None,
            probe_timeout: Duration::from_secs(1),
            probe_parallel: 1024,
            max_parallel: 64,
            request_timeout: Duration::from_secs(15),
            off_timeout: Duration::from_secs(60),
            firmware_timeout: Duration::from_secs(1800),
            bmc_pool: None,
            auto_rediscover_after: Duration::from_secs(3600),
        }
    }
}

/// The boot timeline (`/rackboot/v1/status`, `rackboot status`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Timeline {
    /// Boots kept per node (older ones are deleted).
    pub boots_per_node: u32,
    /// A node whose boot has not moved on for this long is flagged stuck, e.g. "5m".
    #[serde(with = "humantime_serde_compat")]
    pub stuck_after: Duration,
    /// Events older than this are deleted (checked hourly), e.g. "30d".
    #[serde(with = "humantime_serde_compat")]
    pub max_age: Duration,
    /// At most this many events are kept in all; the oldest go first.
    pub max_events: u64,
}

impl Default for Timeline {
    fn default() -> Self {
        Self {
            boots_per_node: 5,
            stuck_after: Duration::from_secs(300),
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_events: 500_000,
        }
    }
}

/// The data partition (`[store]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Bytes an image import must leave free on the data partition, e.g. "64MiB" or 67108864.
    /// Default: 64 MiB or 5% of the partition, whichever is smaller.
    pub min_free: Option<ByteSize>,
}

/// A byte count written as a number or as "<n>[KiB|MiB|GiB|TiB]".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size (e.g. \"64MiB\")"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" | "k" => 1 << 10,
            "MiB" | "M" => 1 << 20,
            "GiB" | "G" => 1 << 30,
            "TiB" | "T" => 1 << 40,
            other => {
                return Err(format!(
                    "{s:?}: unknown unit {other:?} (use KiB, MiB, GiB or TiB)"
                ));
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size in bytes, or a string like \"64MiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("size {n} is negative")))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// cloud-init (NoCloud over HTTP).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CloudInit {
    /// Reverse proxies whose first `X-Forwarded-For` address is believed, e.g. ["10.0.0.5/32"].
    /// Requests from anywhere else are identified by their source address only.
    pub trusted_proxies: Vec<ipnet::Ipv4Net>,
    /// `/cloud-init/<xname>/…` answers only requests from that node's inventory addresses.
    /// Turn off only where nodes' addresses are not in the inventory (proxyDHCP sites).
    pub check_source: bool,
}

impl Default for CloudInit {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            check_source: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// UDP port for DHCP (67). 0 disables the DHCP service.
    pub dhcp_port: u16,
    /// UDP port for TFTP (69). 0 disables the TFTP service.
    pub tftp_port: u16,
    /// HTTP listen address. Defaults to the interface address on port 80.
    pub http: Option<SocketAddr>,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            dhcp_port: 67,
            tftp_port: 69,
            http: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// Hand out addresses (static from inventory, dynamic pool for unknown clients) and boot info.
    #[default]
    Authoritative,
    /// Another DHCP server assigns addresses; rackboot only adds PXE boot information.
    Proxy,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Dhcp {
    pub mode: DhcpMode,
    /// Default lease time, e.g. "1h".
    #[serde(with = "humantime_serde_compat")]
    pub lease_time: Duration,
    /// Subnets served. Empty = one subnet derived from the interface address.
    #[serde(rename = "subnet")]
    pub subnets: Vec<Subnet>,
}

impl Default for Dhcp {
    fn default() -> Self {
        Self {
            mode: DhcpMode::Authoritative,
            lease_time: Duration::from_secs(3600),
            subnets: Vec::new(),
        }
    }
}

/// One served subnet: the interface's own, or one behind a DHCP relay (chosen by giaddr).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    /// e.g. "192.0.2.0/24"
    pub network: ipnet::Ipv4Net,
    /// Dynamic pool, "first-last". Defaults to the upper half of the subnet.
    pub pool: Option<String>,
    pub router: Option<Ipv4Addr>,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    #[serde(default, with = "humantime_serde_compat::option")]
    pub lease_time: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Boot {
    /// BIOS PXE boot file.
    pub bios: String,
    /// UEFI x64 boot file (snponly.efi: uses the firmware's NIC driver; preferred over ipxe.efi).
    pub uefi_x64: String,
    /// UEFI IA32 boot file.
    pub uefi_ia32: String,
    /// UEFI ARM64 boot file.
    pub uefi_arm64: String,
    /// Upper bound of the boot script's retry chain before it reboots the node.
    pub max_retries: u32,
}

impl Default for Boot {
    fn default() -> Self {
        Self {
            bios: "undionly.kpxe".into(),
            uefi_x64: "snponly.efi".into(),
            uefi_ia32: "ipxe-i386.efi".into(),
            uefi_arm64: "snponly-arm64.efi".into(),
            max_retries: 10,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// External token issuers (OIDC, tokensmith) whose JWTs are accepted next to the local issuer.
    #[serde(rename = "issuer")]
    pub issuers: Vec<Issuer>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
}

impl Config {
    /// Reads `path` (if given), then applies `RACKBOOT_*__*` overrides from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut doc = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| {
                    format!("cannot read config file {} (--config)", p.display())
                })?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("config file {} is not valid TOML", p.display()))?
            }
            None => toml::Table::new(),
        };
        for (key, value) in env {
            let Some(rest) = key.strip_prefix("RACKBOOT_") else {
                continue;
            };
            if !rest.contains("__") {
                // Plain RACKBOOT_X variables are flags (clap reads them), not file keys.
                continue;
            }
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            set_path(&mut doc, &path, parse_env_value(&value))
                .with_context(|| format!("environment variable {key}"))?;
        }
        let config: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{}", e.message()))
            .with_context(|| match path {
                Some(p) => format!("invalid configuration in {} or RACKBOOT_* env", p.display()),
                None => "invalid configuration in RACKBOOT_* env".to_owned(),
            })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        for s in &self.dhcp.subnets {
            if let Some(pool) = &s.pool {
                let (a, b) = parse_pool(pool)?;
                if !s.network.contains(&a) || !s.network.contains(&b) {
                    bail!(
                        "dhcp.subnet {}: pool {pool} is outside the subnet",
                        s.network
                    );
                }
            }
        }
        if self.boot.max_retries == 0 {
            bail!("boot.max_retries must be at least 1");
        }
        let c = &self.identity.cluster;
        if c.is_empty()
            || c.len() > 200
            || !c
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            bail!(
                "identity.cluster {c:?}: use letters, digits, '.' and '-' (a SPIFFE trust domain)"
            );
        }
        if self.identity.cert_lifetime < Duration::from_secs(1) {
            bail!("identity.cert_lifetime must be at least 1s");
        }
        if let Some(u) = &self.upstream {
            if u.xname_prefix.is_some() == u.group.is_some() {
                bail!(
                    "upstream: set exactly one of xname_prefix (e.g. \"x1000c0\") or group (an SMD group label)"
                );
            }
            if !(u.smd.starts_with("http://") || u.smd.starts_with("https://")) {
                bail!("upstream.smd {:?} is not an http(s) URL", u.smd);
            }
            if u.token_file.is_some() && u.oauth2.is_some() {
                bail!("upstream: use token_file or oauth2, not both");
            }
            if u.interval < Duration::from_millis(100) {
                bail!("upstream.interval must be at least 100ms");
            }
        }
        if self.discovery.xname_rules.is_empty() {
            bail!("discovery.xname_rules is empty: list at least \"sequential\"");
        }
        if let Some(pool) = &self.discovery.bmc_pool {
            parse_pool(pool).context("discovery.bmc_pool")?;
        }
        if self.timeline.boots_per_node == 0 {
            bail!("timeline.boots_per_node must be at least 1");
        }
        if self.timeline.max_events == 0 {
            bail!("timeline.max_events must be at least 1");
        }
        Ok(())
    }
}

/// Parses a pool range "first-last" (inclusive) with first <= last.
pub fn parse_pool(s: &str) -> anyhow::Result<(Ipv4Addr, Ipv4Addr)> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("pool {s:?}: expected \"first-last\""))?;
    let a: Ipv4Addr = a
        .trim()
        .parse()
        .with_context(|| format!("pool {s:?}: bad first address"))?;
    let b: Ipv4Addr = b
        .trim()
        .parse()
        .with_context(|| format!("pool {s:?}: bad last address"))?;
    if a > b {
        bail!("pool {s:?}: first address is after the last");
    }
    Ok((a, b))
}

/// The default dynamic pool: the upper half of `net`, minus the broadcast address.
pub fn default_pool(net: ipnet::Ipv4Net) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let base = u32::from(net.network());
    let size = 1u64 << (32 - u32::from(net.prefix_len()));
    if size < 8 {
        return None;
    }
    let half = u32::try_from(size / 2).ok()?;
    let first = base.checked_add(half)?;
    let last = u32::from(net.broadcast()).checked_sub(1)?;
    Some((Ipv4Addr::from(first), Ipv4Addr::from(last)))
}

fn parse_env_value(v: &str) -> toml::Value {
    // `x = <v>` parses for numbers, booleans, arrays and inline tables; anything else is a string.
    match format!("x = {v}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("x")
            .unwrap_or_else(|| toml::Value::String(v.to_owned())),
        Err(_) => toml::Value::String(v.to_owned()),
    }
}

fn set_path(doc: &mut toml::Table, path: &[String], value: toml::Value) -> anyhow::Result<()> {
    match path {
        [] => bail!("empty key"),
        [last] => {
            doc.insert(last.clone(), value);
            Ok(())
        }
        [head, rest @ ..] => {
            let entry = doc
                .entry(head.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => bail!("{head} is not a section"),
            }
        }
    }
}

/// Durations as human strings ("90s", "1h") in TOML.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }

    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let s = Option::<String>::deserialize(d)?;
            s.map(|s| {
                humantime::parse_duration(&s)
                    .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
            })
            .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_config_has_defaults() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.dhcp_port, 67);
        assert_eq!(c.dhcp.lease_time, Duration::from_secs(3600));
    }

    #[test]
    fn file_and_env_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rackboot.toml");
        std::fs::write(
            &p,
            r#"
interface = "br0"
[dhcp]
lease_time = "30m"
[[dhcp.subnet]]
network = "198.51.100.0/24"
pool = "198.51.100.100-198.51.100.200"
router = "198.51.100.1"
"#,
        )
        .unwrap();
        let c = Config::load(
            Some(&p),
            env(&[
                ("RACKBOOT_DHCP__LEASE_TIME", "2h"),
                ("RACKBOOT_BOOT__MAX_RETRIES", "3"),
                ("RACKBOOT_URL", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.interface.as_deref(), Some("br0"));
        assert_eq!(c.dhcp.lease_time, Duration::from_secs(7200));
        assert_eq!(c.boot.max_retries, 3);
        assert_eq!(c.dhcp.subnets.len(), 1);
        assert_eq!(
            c.dhcp.subnets[0].router,
            Some(Ipv4Addr::new(198, 51, 100, 1))
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_context() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "intrface = \"br0\"\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&p), env(&[])).unwrap_err());
        assert!(err.contains("intrface"), "{err}");
        let err = format!(
            "{:#}",
            Config::load(None, env(&[("RACKBOOT_DHCP__LEASE_TIME", "soon")])).unwrap_err()
        );
        assert!(err.contains("soon"), "{err}");
        let err = format!(
            "{:#}",
            Config::load(None, env(&[("RACKBOOT_DHCP__NOPE", "1")])).unwrap_err()
        );
        assert!(err.contains("nope"), "{err}");
        std::fs::write(
            &p,
            "[[dhcp.subnet]]\nnetwork = \"192.0.2.0/24\"\npool = \"198.51.100.1-198.51.100.9\"\n",
        )
        .unwrap();
        let err = format!("{:#}", Config::load(Some(&p), env(&[])).unwrap_err());
        assert!(err.contains("outside the subnet"), "{err}");
    }

    #[test]
    fn store_min_free_takes_sizes_and_refuses_garbage() {
        let c = Config::load(None, env(&[("RACKBOOT_STORE__MIN_FREE", "64MiB")])).unwrap();
        assert_eq!(c.store.min_free, Some(ByteSize(64 << 20)));
        let c = Config::load(None, env(&[("RACKBOOT_STORE__MIN_FREE", "1048576")])).unwrap();
        assert_eq!(c.store.min_free, Some(ByteSize(1 << 20)));
        assert_eq!("2 GiB".parse::<ByteSize>(), Ok(ByteSize(2 << 30)));
        for bad in ["lots", "12 parsecs", "99999999999999999999TiB", "-1"] {
            let err = format!(
                "{:#}",
                Config::load(None, env(&[("RACKBOOT_STORE__MIN_FREE", bad)])).unwrap_err()
            );
            assert!(
                err.contains("min_free") || err.contains(bad),
                "{bad}: {err}"
            );
        }
        assert_eq!(Config::default().store.min_free, None);
    }

    #[test]
    fn default_pool_is_upper_half_without_broadcast() {
        let net: ipnet::Ipv4Net = "192.0.2.0/24".parse().unwrap();
        assert_eq!(
            default_pool(net),
            Some((Ipv4Addr::new(192, 0, 2, 128), Ipv4Addr::new(192, 0, 2, 254)))
        );
        let net: ipnet::Ipv4Net = "10.1.0.0/16".parse().unwrap();
        assert_eq!(
            default_pool(net),
            Some((Ipv4Addr::new(10, 1, 128, 0), Ipv4Addr::new(10, 1, 255, 254)))
        );
        assert_eq!(default_pool("10.0.0.0/30".parse().unwrap()), None);
    }
}
