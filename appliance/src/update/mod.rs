//! Appliance updates (issue 15): signed update bundles for the A/B root slots.
//!
//! `cargo xtask image appliance` writes `rackboot-update.rbu` beside the disk image: the root
//! slot image (squashfs + dm-verity), one Secure-Boot-signed UKI per slot, and a manifest of
//! their sizes and SHA-256s signed with the release's Ed25519 update key (`bundle.rs` has the
//! format and why it is this one). The image carries the public half in
//! `/etc/rackboot/update-keys/*.pub`; a bundle verifies only against those keys, and only for
//! the board named in `/etc/rackboot/board`.
//!
//! The store is called only to confirm a trial's migration (`store::trial`).
//!
//! Owns: the update bundle format, the A/B slot installer and its state (`<data-dir>/update/`),
//! `rackboot appliance`, `/rackboot/v1/appliance`, the root updater (`daemon.rs`). May call: `client`,
//! `http`, `output`, `seal`, `store`, `version`.

pub mod api;
pub mod bundle;
pub mod cli;
pub mod daemon;
pub mod efi;
pub mod install;
pub mod schedule;
pub mod state;
mod system;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

/// Where the running image keeps the trusted update keys.
pub const KEY_DIR: &str = "/etc/rackboot/update-keys";
/// The running image's board name (written by the image build).
pub const BOARD_FILE: &str = "/etc/rackboot/board";

/// The board this rackboot runs on: `/etc/rackboot/board`, or an error saying how to name one.
pub fn board(explicit: Option<String>) -> anyhow::Result<String> {
    if let Some(b) = explicit {
        return Ok(b);
    }
    match std::fs::read_to_string(BOARD_FILE) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        _ => anyhow::bail!(
            "{BOARD_FILE} is missing: this is not a rackboot appliance image; name the board with --board"
        ),
    }
}

/// The key directory: `explicit`, else [`KEY_DIR`].
pub fn key_dir(explicit: Option<PathBuf>) -> PathBuf {
    explicit.unwrap_or_else(|| PathBuf::from(KEY_DIR))
}
