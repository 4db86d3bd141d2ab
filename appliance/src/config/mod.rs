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
//!
//! One file per group of sections (`backup.rs`, `upstream.rs`, `identity.rs`, `discovery.rs`, `dns.rs`, `network.rs`,
//! `services.rs`; value types in `units.rs`). They stay in this module, at the bottom of the
//! module graph, rather than beside the capabilities they configure: every capability reads its
//! section, and `config` depends on none of them.
//!
//! Owns: the TOML file, `RACKBOOT_*` env, validation. May call: nothing of ours.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

mod backup;
mod discovery;
mod dns;
mod identity;
mod network;
mod services;
mod units;
mod upstream;

pub use backup::Backup;
pub use discovery::{BmcTls, Discovery, XnameRule};
pub use dns::{Dns, TsigKey};
pub use identity::{EnrollPolicy, Identity, Tpm};
pub use network::{
    Boot, Dhcp, DhcpMode, Listen, Subnet, TFTP_MAX_TRANSFERS, default_pool, parse_pool,
};
pub use services::{Auth, CloudInit, Issuer, StoreConfig, Timeline};
pub use units::ByteSize;
pub use upstream::{OAuth2, Upstream};

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
    pub dns: Dns,
    pub upstream: Option<Upstream>,
    pub backup: Backup,
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
        self.backup.validate()?;
        self.dns.validate()?;
        if !(1..=network::TFTP_MAX_TRANSFERS).contains(&self.listen.tftp_max_transfers) {
            bail!(
                "listen.tftp_max_transfers = {}: use 1 to {}",
                self.listen.tftp_max_transfers,
                network::TFTP_MAX_TRANSFERS
            );
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
        self.identity.tpm.validate()?;
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
            if u.lookup_concurrency == 0 || u.lookup_burst == 0 {
                bail!("upstream.lookup_concurrency and upstream.lookup_burst must be at least 1");
            }
            if !(u.lookup_rate.is_finite() && u.lookup_rate > 0.0) {
                bail!("upstream.lookup_rate must be a number of lookups per second above 0");
            }
            if u.max_body.0 < 1024 {
                bail!("upstream.max_body must be at least 1 KiB");
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
    fn backup_needs_exactly_one_key_source() {
        let c = Config::load(
            None,
            env(&[
                ("RACKBOOT_BACKUP__DIR", "/mnt/b"),
                ("RACKBOOT_BACKUP__INTERVAL", "6h"),
                ("RACKBOOT_BACKUP__RECIPIENTS", "[\"age1x\"]"),
            ]),
        )
        .unwrap();
        assert_eq!(c.backup.interval, Duration::from_secs(6 * 3600));
        assert_eq!(c.backup.keep, 7);
        let err = format!(
            "{:#}",
            Config::load(None, env(&[("RACKBOOT_BACKUP__DIR", "/mnt/b")])).unwrap_err()
        );
        assert!(err.contains("passphrase_file"), "{err}");
        let err = format!(
            "{:#}",
            Config::load(
                None,
                env(&[
                    ("RACKBOOT_BACKUP__DIR", "/mnt/b"),
                    ("RACKBOOT_BACKUP__KEEP", "0"),
                    ("RACKBOOT_BACKUP__PASSPHRASE_FILE", "/p"),
                ])
            )
            .unwrap_err()
        );
        assert!(err.contains("backup.keep"), "{err}");
        // No dir: nothing scheduled, nothing required.
        assert!(Config::load(None, env(&[])).unwrap().backup.dir.is_none());
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
        for bad in ["0", "4097"] {
            let err = format!(
                "{:#}",
                Config::load(None, env(&[("RACKBOOT_LISTEN__TFTP_MAX_TRANSFERS", bad)]))
                    .unwrap_err()
            );
            assert!(err.contains("listen.tftp_max_transfers"), "{err}");
        }
        let c = Config::load(
            None,
            env(&[("RACKBOOT_LISTEN__TFTP_MAX_TRANSFERS", "4096")]),
        )
        .unwrap();
        assert_eq!(c.listen.tftp_max_transfers, 4096);
    }

    #[test]
    fn tpm_golden_pcrs_are_checked_when_loaded() {
        let ok = format!(r#"{{ compute = {{ "0" = "{}" }} }}"#, "ab".repeat(32));
        let c = Config::load(
            None,
            env(&[
                ("RACKBOOT_IDENTITY__POLICY", "tpm"),
                ("RACKBOOT_IDENTITY__TPM__GOLDEN_PCRS", &ok),
            ]),
        )
        .unwrap();
        assert_eq!(c.identity.policy, EnrollPolicy::Tpm);
        assert!(c.identity.tpm.tofu);
        for bad in [
            r#"{ compute = { "8" = "00" } }"#.to_owned(),
            r#"{ compute = { "0" = "not hex" } }"#.to_owned(),
        ] {
            let e = Config::load(None, env(&[("RACKBOOT_IDENTITY__TPM__GOLDEN_PCRS", &bad)]))
                .unwrap_err();
            assert!(format!("{e:#}").contains("golden_pcrs"), "{e:#}");
        }
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
