//! `[upstream]`: federation with an OpenCHAMI management API.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    #[serde(
        default = "default_sync_interval",
        with = "super::units::humantime_serde_compat"
    )]
    pub interval: Duration,
    #[serde(
        default = "default_upstream_timeout",
        with = "super::units::humantime_serde_compat"
    )]
    pub timeout: Duration,
    /// How long a bootscript request for an unknown MAC waits for the upstream.
    #[serde(
        default = "default_lookup_deadline",
        with = "super::units::humantime_serde_compat"
    )]
    pub lookup_deadline: Duration,
    /// On-demand lookups (unknown MACs from DHCP and bootscript) running at once; a lookup
    /// past this is not made (counted as `dropped_busy`): a DISCOVER is dropped for the client to
    /// retransmit (asked about first then), a bootscript request gets the unknown-node script.
    #[serde(default = "default_lookup_concurrency")]
    pub lookup_concurrency: usize,
    /// On-demand lookups started per second at most (a token bucket), so a flood of new MACs
    /// cannot become a flood of upstream requests; past it: `dropped_rate`.
    #[serde(default = "default_lookup_rate")]
    pub lookup_rate: f64,
    /// Lookups the bucket allows at once after a quiet spell (its size); the last quarter is kept
    /// for MACs asking again after a refusal (retransmissions go first).
    #[serde(default = "default_lookup_burst")]
    pub lookup_burst: u32,
    /// A MAC the upstream did not know (or whose lookup failed) is not asked about again
    /// within this long (`cached_negative`).
    #[serde(
        default = "default_lookup_negative_ttl",
        with = "super::units::humantime_serde_compat"
    )]
    pub lookup_negative_ttl: Duration,
    /// Largest upstream answer read (SMD, BSS, cloud-init, the token endpoint); a longer one
    /// is an error naming the URL and this cap.
    #[serde(default = "default_max_body")]
    pub max_body: super::ByteSize,
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
fn default_lookup_concurrency() -> usize {
    8
}
fn default_lookup_rate() -> f64 {
    20.0
}
fn default_lookup_burst() -> u32 {
    20
}
fn default_lookup_negative_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_max_body() -> super::ByteSize {
    super::ByteSize(32 << 20)
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
