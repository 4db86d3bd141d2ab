//! `[timeline]`, `[store]`, `[cloud_init]` and `[auth]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ByteSize;

/// The boot timeline (`/rackboot/v1/status`, `rackboot status`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Timeline {
    /// Boots kept per node (older ones are deleted).
    pub boots_per_node: u32,
    /// A node whose boot has not moved on for this long is flagged stuck, e.g. "5m".
    #[serde(with = "super::units::humantime_serde_compat")]
    pub stuck_after: Duration,
    /// Events older than this are deleted (checked hourly), e.g. "30d".
    #[serde(with = "super::units::humantime_serde_compat")]
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
