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
    /// TSIG keys (RFC 8945) shared with secondaries: a secondary listed under a key must sign
    /// its zone transfers with it, and NOTIFY to it is signed. Any request signed with one of
    /// these keys is verified and its answer signed.
    pub tsig_keys: Vec<TsigKey>,
}

/// One TSIG key (`[[dns.tsig_keys]]`). The secret lives in a file, never in the config.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TsigKey {
    /// The key's name, as the secondary knows it (`key "NAME"` in named.conf).
    pub name: String,
    /// "hmac-sha256" (the default), "hmac-sha384" or "hmac-sha512".
    #[serde(default = "default_tsig_algorithm")]
    pub algorithm: String,
    /// File holding the base64 secret: the secret alone, or `tsig-keygen`'s `key` clause.
    pub secret_file: std::path::PathBuf,
    /// Secondaries (from `dns.secondaries`) that must use this key.
    #[serde(default)]
    pub secondaries: Vec<Ipv4Addr>,
}

/// The TSIG algorithms rackboot signs and verifies with.
pub const TSIG_ALGORITHMS: [&str; 3] = ["hmac-sha256", "hmac-sha384", "hmac-sha512"];

fn default_tsig_algorithm() -> String {
    "hmac-sha256".to_owned()
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
            tsig_keys: Vec::new(),
        }
    }
}

impl Dns {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        let mut names = std::collections::BTreeSet::new();
        let mut keyed = std::collections::BTreeSet::new();
        for k in &self.tsig_keys {
            let name = k.name.trim_end_matches('.').to_ascii_lowercase();
            if name.is_empty()
                || name.len() > 250
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            {
                anyhow::bail!(
                    "dns.tsig_keys: name {:?}: use letters, digits, '.', '-' and '_'",
                    k.name
                );
            }
            if !names.insert(name) {
                anyhow::bail!("dns.tsig_keys: {:?} is listed twice", k.name);
            }
            if !TSIG_ALGORITHMS.contains(&k.algorithm.to_ascii_lowercase().as_str()) {
                anyhow::bail!(
                    "dns.tsig_keys {:?}: algorithm {:?} is not one of {TSIG_ALGORITHMS:?}",
                    k.name,
                    k.algorithm
                );
            }
            for ip in &k.secondaries {
                if !self.secondaries.contains(ip) {
                    anyhow::bail!("dns.tsig_keys {:?}: {ip} is not in dns.secondaries", k.name);
                }
                if !keyed.insert(*ip) {
                    anyhow::bail!("dns.tsig_keys: secondary {ip} has more than one key");
                }
            }
        }
        Ok(())
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, alg: &str, peers: &[Ipv4Addr]) -> TsigKey {
        TsigKey {
            name: name.to_owned(),
            algorithm: alg.to_owned(),
            secret_file: "/nonexistent".into(),
            secondaries: peers.to_vec(),
        }
    }

    #[test]
    fn tsig_keys_name_known_secondaries_once_with_a_supported_algorithm() {
        let a = Ipv4Addr::new(192, 0, 2, 53);
        let mut d = Dns {
            secondaries: vec![a],
            ..Dns::default()
        };
        d.tsig_keys = vec![key("xfr.rack1", "hmac-sha256", &[a])];
        assert!(d.validate().is_ok());
        d.tsig_keys = vec![key("xfr.rack1", "hmac-md5", &[a])];
        assert!(d.validate().is_err(), "unsupported algorithm");
        d.tsig_keys = vec![key("xfr", "hmac-sha256", &[Ipv4Addr::new(192, 0, 2, 9)])];
        assert!(d.validate().is_err(), "not a secondary");
        d.tsig_keys = vec![key("a", "hmac-sha256", &[a]), key("b", "hmac-sha512", &[a])];
        assert!(d.validate().is_err(), "two keys for one secondary");
        d.tsig_keys = vec![key("a", "hmac-sha256", &[]), key("A.", "hmac-sha256", &[])];
        assert!(d.validate().is_err(), "the same name twice");
        d.tsig_keys = vec![key("bad name", "hmac-sha256", &[])];
        assert!(d.validate().is_err());
    }
}
