//! `[discovery]`: Redfish BMC discovery and control.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    #[serde(with = "super::units::humantime_serde_compat")]
    pub probe_timeout: Duration,
    /// Addresses probed at once.
    pub probe_parallel: usize,
    /// BMCs crawled at once.
    pub max_parallel: usize,
    #[serde(with = "super::units::humantime_serde_compat")]
    pub request_timeout: Duration,
    /// `power off` waits this long for GracefulShutdown before ForceOff.
    #[serde(with = "super::units::humantime_serde_compat")]
    pub off_timeout: Duration,
    /// A firmware update task that has not ended after this long is reported as failed.
    #[serde(with = "super::units::humantime_serde_compat")]
    pub firmware_timeout: Duration,
    /// "first-last": a device that takes a DHCP lease in this range is a BMC; rackboot discovers
    /// it on its own. Unset: discovery only on request.
    pub bmc_pool: Option<String>,
    /// An auto-discovered BMC is not scanned again on lease renewals for this long.
    #[serde(with = "super::units::humantime_serde_compat")]
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
