//! `[dns]`: the rack's authoritative zone from the inventory, zone transfers, forwarding.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The DNS service (on by default, on the rack interface's address only).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// Serve DNS at all. When on, DHCP also hands out option 6 (this appliance) and option 15
    /// (`domain`) on the interface's subnet unless `[[dhcp.subnets]]` sets its own.
    pub enabled: bool,
    /// UDP and TCP port, bound to the interface's address only; 0 = no DNS service (as for
    /// `listen.*_port`).
    pub port: u16,
    /// The rack's zone: nodes and BMCs by xname and hostname, e.g. "rack1.cluster".
    pub domain: String,
    /// TTL of the zone's records.
    #[serde(with = "super::units::humantime_serde_compat")]
    pub ttl: Duration,
    /// Extra names in the zone: alias → target (a name in the zone or a fully-qualified one
    /// ending in "."), e.g. { "head" = "x1000c0s0b0n0" }.
    pub aliases: std::collections::BTreeMap<String, String>,
    /// Servers allowed to transfer the zones (AXFR) and sent NOTIFY when the serial changes.
    pub secondaries: Vec<Ipv4Addr>,
    /// Where NOTIFY goes (default: port 53 of every secondary).
    pub notify: Vec<SocketAddr>,
    /// Upstream resolvers for names outside the rack's zones (with a cache); none = REFUSED.
    pub forwarders: Vec<SocketAddr>,
    /// Queries handled at once over UDP, and TCP connections open at once.
    pub max_concurrent: usize,
    /// Entries in the forwarding cache.
    pub cache_size: usize,
}

impl Default for Dns {
    fn default() -> Self {
        Self {
            enabled: true,
            port: 53,
            domain: "rack.internal".to_owned(),
            ttl: Duration::from_secs(300),
            aliases: Default::default(),
            secondaries: Vec::new(),
            notify: Vec::new(),
            forwarders: Vec::new(),
            max_concurrent: 256,
            cache_size: 4096,
        }
    }
}

impl Dns {
    /// The NOTIFY targets: `notify`, else port 53 of each secondary.
    pub fn notify_targets(&self) -> Vec<SocketAddr> {
        if self.notify.is_empty() {
            self.secondaries
                .iter()
                .map(|ip| SocketAddr::from((*ip, 53)))
                .collect()
        } else {
            self.notify.clone()
        }
    }
}
