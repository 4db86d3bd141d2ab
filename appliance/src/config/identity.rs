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
    /// The node proves its TPM: an EK certificate from `identity.tpm.ek_ca`, an AK on that TPM
    /// (credential activation), a quote over the CSR (docs/runbook-identity.md).
    Tpm,
}

/// `[identity.tpm]`: TPM-attested enrollment (policy `tpm`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Tpm {
    /// PEM bundle of the TPM manufacturers' EK CA certificates (every one a trust anchor).
    pub ek_ca: Option<std::path::PathBuf>,
    /// Bind a node's EK on its first enrollment when no EK hash was pre-registered
    /// (trust on first use, audited); off: only pre-registered EKs enroll.
    pub tofu: bool,
    /// How long a credential challenge stays valid.
    #[serde(with = "super::units::humantime_serde_compat")]
    pub challenge_ttl: Duration,
    /// Per SMD group, the PCR values (SHA-256, hex, by index 0-7) a member's quote must show:
    /// { compute = { "0" = "ab12…" } }. A mismatch refuses the enrollment.
    pub golden_pcrs: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
}

impl Tpm {
    /// Golden PCR keys are 0-7 and values 32-byte hex.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (group, pcrs) in &self.golden_pcrs {
            for (k, v) in pcrs {
                if !matches!(k.parse::<u8>(), Ok(0..=7)) {
                    anyhow::bail!(
                        "identity.tpm.golden_pcrs.{group}: PCR {k:?} is not one of 0-7 (the quoted PCRs)"
                    );
                }
                if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                    anyhow::bail!(
                        "identity.tpm.golden_pcrs.{group}.{k}: give the SHA-256 PCR value as 64 hex digits"
                    );
                }
            }
        }
        Ok(())
    }
}

impl Default for Tpm {
    fn default() -> Self {
        Self {
            ek_ca: None,
            tofu: true,
            challenge_ttl: Duration::from_secs(300),
            golden_pcrs: Default::default(),
        }
    }
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
    pub tpm: Tpm,
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
            tpm: Tpm::default(),
        }
    }
}
