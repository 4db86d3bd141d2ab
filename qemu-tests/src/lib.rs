//! End-to-end harness: network namespaces, a real `rackboot serve`, QEMU nodes with real firmware.
//!
//! Every test gets its own namespace (so tests run in parallel): a bridge `br0` holding
//! 192.0.2.1/24 for rackboot and one TAP per VM. Nothing leaves the namespace.

pub mod flood;
mod netns;
mod node_image;
mod peers;
mod qemu;
mod rackboot;
mod swtpm;
mod tiny;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

pub use netns::{Netns, run_in};
pub use node_image::{agent_initrd, ssh_initrd};
pub use peers::{
    FakeBmc, LibvirtBmc, P256, PerfdhcpStats, StaticBmc, openssl_p256, preflight_libvirt,
    preflight_sushy,
};
pub use qemu::{Firmware, Qemu, field, whole_lines};
pub use rackboot::Rackboot;
pub use swtpm::{Manufacturer, Swtpm, VmTpm, sh as sh_ok};
pub use tiny::{TINY_BRIDGE, Tiny, TinyStats};

/// The server address inside every test namespace.
pub const SERVER: &str = "192.0.2.1";

/// The workspace root.
pub fn root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(Path::to_path_buf).unwrap_or(here)
}

/// Checks what the e2e tests need. Outside CI a missing piece skips the test loudly; in CI
/// (`CI=true`) it fails, because there `cargo xtask test` installs everything first.
pub fn preflight(need_qemu: bool) -> bool {
    preflight_with(need_qemu, &[])
}

/// [`preflight`] plus the programs in `tools` (e.g. `udhcpc`, `perfdhcp`) on PATH.
pub fn preflight_with(need_qemu: bool, tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !nix_is_root() {
        missing.push("root (network namespaces)".to_owned());
    }
    let qemu: &[&str] = if need_qemu {
        &["qemu-system-x86_64"]
    } else {
        &[]
    };
    for prog in ["ip", "curl"].iter().chain(qemu).chain(tools) {
        if !have(prog) {
            missing.push((*prog).to_owned());
        }
    }
    if need_qemu && !root().join("build/node/vmlinuz").exists() {
        missing.push("build/node (run `cargo xtask image node`)".to_owned());
    }
    prerequisites("end-to-end test", &missing)
}

/// The one place a missing prerequisite is decided: true when `missing` is empty; otherwise
/// under `CI=true` a panic (the test fails: CI installs everything first, so a missing tool is a
/// broken setup, never a pass), and outside CI a loud `SKIPPED` line and false.
pub fn prerequisites(what: &str, missing: &[String]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{what} prerequisites missing: {}; `cargo xtask deps` installs them (`cargo xtask test` \
         builds the images)",
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED (not in CI): {msg}");
    false
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Whether `prog` is on PATH.
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

/// The rackboot binary: `$RACKBOOT_BIN`, else target/debug/rackboot (built if missing).
pub fn rackboot_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("RACKBOOT_BIN") {
        return Ok(PathBuf::from(p));
    }
    let p = root().join("target/debug/rackboot");
    if !p.exists() {
        let ok = Command::new(env!("CARGO"))
            // With the TPM agent (feature `tpm`), as a workspace build has it.
            .args([
                "build",
                "-p",
                "appliance",
                "--features",
                "tpm",
                "--bin",
                "rackboot",
            ])
            .current_dir(root())
            .status()?;
        if !ok.success() {
            bail!("cannot build rackboot");
        }
    }
    Ok(p)
}

fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
