//! What the updater knows across reboots: which slot holds which version, the update in
//! progress (writing, then waiting for its trial boot), and the last failure and why. One JSON
//! file in the data dir, replaced atomically (write, fsync, rename, fsync the directory), so a
//! power cut leaves the old state or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::install::Slot;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// What each slot holds, as far as the updater wrote it (a slot never written by an update
    /// holds what the disk image was flashed with).
    #[serde(default)]
    pub slot_a: Option<SlotInfo>,
    #[serde(default)]
    pub slot_b: Option<SlotInfo>,
    /// The update being installed or on trial.
    #[serde(default)]
    pub pending: Option<Pending>,
    /// The last update that failed, and why.
    #[serde(default)]
    pub last_failure: Option<Failure>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SlotInfo {
    pub version: String,
    /// `installed` (written, never booted), `good` (booted and healthy), `failed`, `writing`.
    pub state: String,
    pub at: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pending {
    pub slot: Slot,
    pub version: String,
    /// `writing`, then `trial` (installed; the next boot tries it once).
    pub stage: String,
    pub at: String,
    /// Why the trial boot failed, recorded by that boot before it reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// When the updater reboots into the trial (RFC 3339), if the sysadmin chose a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_at: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failure {
    pub slot: Slot,
    pub version: String,
    pub reason: String,
    pub at: String,
}

impl State {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("update").join("state.json")
    }

    /// The state, or the empty one if none was ever written. A damaged file is an error.
    pub fn load(data_dir: &Path) -> anyhow::Result<State> {
        let path = Self::path(data_dir);
        match std::fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }

    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(data_dir);
        let dir = path.parent().unwrap_or(data_dir);
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(".state.json.new");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    /// What the boot scripts wrote when a trial slot's rackboot could not run at all (not even
    /// `boot-check --failed`), before they reset the machine: read, and removed, by the next
    /// slot's boot check.
    pub fn take_shell_note(data_dir: &Path) -> Option<String> {
        let path = data_dir.join("update").join("unhealthy-boot");
        let note = std::fs::read_to_string(&path).ok()?;
        let _ = std::fs::remove_file(&path);
        Some(note.trim().to_owned()).filter(|n| !n.is_empty())
    }

    pub fn slot(&self, s: Slot) -> Option<&SlotInfo> {
        match s {
            Slot::A => self.slot_a.as_ref(),
            Slot::B => self.slot_b.as_ref(),
        }
    }

    pub fn set_slot(&mut self, s: Slot, info: SlotInfo) {
        match s {
            Slot::A => self.slot_a = Some(info),
            Slot::B => self.slot_b = Some(info),
        }
    }
}

/// Now, RFC 3339 UTC.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// How this boot's `rackboot serve` treats a store migration (see `store::trial`): on the
/// trial boot of an update that has not failed yet, copy before migrating; on the previous slot
/// after a failed trial, go back to that copy if it must. Anything else (not an appliance, no
/// update, a state file that cannot be read) is a plain boot.
pub fn migration_mode(data_dir: &Path, cmdline: &Path) -> crate::store::Migration {
    use crate::store::Migration;
    let Ok(booted) = super::system::booted_slot(cmdline) else {
        return Migration::Plain;
    };
    let st = match State::load(data_dir) {
        Ok(st) => st,
        Err(e) => {
            tracing::warn!(error = %e, "the update state cannot be read: opening the store as on a plain boot");
            return Migration::Plain;
        }
    };
    match &st.pending {
        Some(p) if p.stage == "trial" && p.slot == booted && p.failed.is_none() => Migration::Trial,
        Some(p) if p.stage == "trial" => Migration::RolledBack,
        // boot-check already turned the trial into a failure (it runs once rackboot answers,
        // which a store it cannot open prevents, but a restart may come after it).
        None if st.last_failure.is_some() => Migration::RolledBack,
        _ => Migration::Plain,
    }
}
