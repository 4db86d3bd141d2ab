//! `[backup]`: scheduled backups by `rackboot serve` (docs/runbook-backup.md).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Scheduled backups into a target directory, keeping the newest `keep`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Backup {
    /// The target directory; unset = no scheduled backups.
    pub dir: Option<PathBuf>,
    /// Time between backups (measured from the newest archive in `dir`, so a restart does
    /// not take an extra one).
    #[serde(with = "super::units::humantime_serde_compat")]
    pub interval: Duration,
    /// Archives kept; older ones, and blobs no kept archive needs, are deleted.
    pub keep: u32,
    /// File whose first line is the passphrase (read before every backup).
    pub passphrase_file: Option<PathBuf>,
    /// age X25519 recipients (`age1…`) to encrypt to instead of a passphrase: the appliance
    /// then holds nothing that decrypts its backups.
    pub recipients: Vec<String>,
}

impl Default for Backup {
    fn default() -> Self {
        Self {
            dir: None,
            interval: Duration::from_secs(86_400),
            keep: 7,
            passphrase_file: None,
            recipients: Vec::new(),
        }
    }
}

impl Backup {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.dir.is_none() {
            return Ok(());
        }
        if self.keep == 0 {
            anyhow::bail!("backup.keep must be at least 1");
        }
        if self.interval < Duration::from_secs(1) {
            anyhow::bail!("backup.interval must be at least 1s");
        }
        match (&self.passphrase_file, self.recipients.is_empty()) {
            (None, true) => anyhow::bail!(
                "backup.dir is set but neither backup.passphrase_file nor backup.recipients: \
                 scheduled backups need one (docs/runbook-backup.md)"
            ),
            (Some(_), false) => {
                anyhow::bail!("set backup.passphrase_file or backup.recipients, not both")
            }
            _ => Ok(()),
        }
    }
}
