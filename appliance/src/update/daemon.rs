//! The privileged half of an update through the API: `rackboot appliance updater`, run by init
//! as root, because writing the inactive slot, the ESP and EFI variables needs root and
//! `rackboot serve` runs without it (user `rackboot`, one capability).
//!
//! The split keeps what root trusts small. `serve` stores an uploaded bundle at the one fixed
//! path `<data-dir>/update/incoming.rbu` and asks over a Unix socket (root:rackboot 0660) for
//! it to be installed; the request carries nothing but the reboot choice. The updater opens that
//! path itself (no symlinks followed), verifies the signature against the image's keys, and
//! only then writes, exactly as `rackboot appliance update` does. A compromised `serve` can ask
//! for an install, never for an unsigned one.
//!
//! Protocol: one JSON line in (`{"reboot":"now"|"never"|"at <RFC 3339>","allow_downgrade":false}`),
//! JSON lines out:
//! `{"say":"..."}` per step, then `{"ok":true,"slot":..,"version":..}` or
//! `{"ok":false,"error":".."}`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::cli::{SystemArgs, TrustArgs};
use super::schedule::{self, Reboot};

/// Where `serve` and the updater meet.
pub const SOCKET: &str = "/run/rackboot/updater.sock";

/// The bundle `serve` hands over.
pub fn incoming(data_dir: &Path) -> PathBuf {
    data_dir.join("update").join("incoming.rbu")
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub reboot: String,
    /// Install a bundle older than the running version.
    #[serde(default)]
    pub allow_downgrade: bool,
}

/// Serves requests one at a time, forever.
pub fn run(socket: &Path, group: &str, trust: &TrustArgs, sys: &SystemArgs) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(socket);
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(socket)
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", socket.display()))?;
    let gid = nix::unistd::Group::from_name(group)?
        .ok_or_else(|| anyhow::anyhow!("no group {group}"))?
        .gid;
    nix::unistd::chown(socket, None, Some(gid))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    tracing::info!(socket = %socket.display(), "appliance updater listening");
    {
        let data_dir = sys.data_dir.clone();
        let cmdline = sys.cmdline.clone();
        std::thread::Builder::new()
            .name("reboot-schedule".into())
            .spawn(move || scheduled_reboot(&data_dir, &cmdline))?;
    }
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let reboot = match serve_one(conn, trust, sys) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "appliance updater: request failed");
                false
            }
        };
        if reboot {
            tracing::info!("appliance updater: rebooting into the new slot");
            super::system::reboot()?;
        }
    }
    Ok(())
}

/// Reboots when a pending update's chosen time comes (`--reboot at TIME`, `?reboot=at …`),
/// reading the state again at least every [`schedule::POLL`]: `rackboot appliance update`
/// schedules through the state file, not through this socket.
fn scheduled_reboot(data_dir: &Path, cmdline: &Path) {
    loop {
        let Ok(booted) = super::system::booted_slot(cmdline) else {
            return;
        };
        let due = match super::state::State::load(data_dir) {
            Ok(st) => schedule::due(&st, booted, std::time::SystemTime::now()),
            Err(e) => {
                tracing::warn!(error = %e, "appliance updater: cannot read the update state");
                schedule::Due::Wait(schedule::POLL)
            }
        };
        match due {
            schedule::Due::Nothing => std::thread::sleep(schedule::POLL),
            schedule::Due::Wait(d) => std::thread::sleep(d),
            schedule::Due::Reboot => {
                tracing::info!(
                    "appliance updater: the scheduled time has come; rebooting into the new slot"
                );
                if let Err(e) = super::system::reboot() {
                    tracing::warn!(error = %e, "appliance updater: the scheduled reboot failed");
                    std::thread::sleep(schedule::POLL);
                }
            }
        }
    }
}

/// One request; returns whether to reboot now.
fn serve_one(conn: UnixStream, trust: &TrustArgs, sys: &SystemArgs) -> anyhow::Result<bool> {
    let mut out = conn.try_clone()?;
    let mut line = String::new();
    BufReader::new(std::io::Read::take(&conn, 4096)).read_line(&mut line)?;
    let req: Request = serde_json::from_str(&line)?;
    let reboot: Reboot = match req.reboot.parse() {
        Ok(r) => r,
        Err(e) => {
            writeln!(out, "{}", json!({"ok": false, "error": e}))?;
            return Ok(false);
        }
    };
    let path = incoming(&sys.data_dir);
    // Only a regular file at the fixed path, never through a symlink.
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        .and_then(|f| {
            anyhow::ensure!(
                f.metadata()?.is_file(),
                "{} is not a regular file",
                path.display()
            );
            Ok(f)
        });
    if let Err(e) = opened {
        writeln!(out, "{}", json!({"ok": false, "error": e.to_string()}))?;
        return Ok(false);
    }
    let mut progress = out.try_clone()?;
    let mut say = |s: &str| {
        let _ = writeln!(progress, "{}", json!({ "say": s }));
    };
    let result = super::cli::apply(
        &path,
        trust.clone(),
        sys,
        reboot,
        req.allow_downgrade,
        &mut say,
    );
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(done) => {
            writeln!(
                out,
                "{}",
                json!({"ok": true, "slot": done.slot, "version": done.version, "signed_by": done.signed_by, "rebooting": reboot == Reboot::Now, "reboot": reboot.to_string()})
            )?;
            out.flush()?;
            if reboot == Reboot::Now {
                // Let `serve` answer its HTTP client before init stops everything: wait until it
                // hung up (it does once it has the result), then a moment for the answer to go.
                let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                let _ = std::io::Read::read(&mut &conn, &mut [0u8; 64]);
                std::thread::sleep(std::time::Duration::from_secs(2));
            }
            Ok(reboot == Reboot::Now)
        }
        Err(e) => {
            writeln!(out, "{}", json!({"ok": false, "error": format!("{e:#}")}))?;
            Ok(false)
        }
    }
}
