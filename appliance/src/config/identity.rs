//! `[identity]`: the rack CA, node certificates, join tokens, secrets.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    #[serde(with = "super::units::humantime_serde_compat")]
    pub token_ttl: Duration,
    #[serde(with = "super::units::humantime_serde_compat")]
    pub cert_lifetime: Duration,
    /// The HTTPS certificate's lifetime; it is renewed when a third of it is left.
    #[serde(with = "super::units::humantime_serde_compat")]
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
