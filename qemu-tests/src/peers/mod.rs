//! Peers rackboot talks to in the tests: perfdhcp (its report), emulated BMCs (sushy-tools'
//! fake and static drivers, sushy's libvirt driver with a private libvirtd) and the preflight
//! checks for them.

mod libvirt;
mod perfdhcp;
mod sushy;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::bail;

use crate::{root, sh};

pub use libvirt::{LibvirtBmc, preflight_libvirt};
pub use perfdhcp::PerfdhcpStats;
pub use sushy::{FakeBmc, StaticBmc};

/// The sushy-emulator from `build/venv` (installed by `cargo xtask deps`), or a skip (a panic in
/// CI) when it is missing.
pub fn preflight_sushy() -> Option<PathBuf> {
    let bin = root().join("build/venv/bin/sushy-emulator");
    if bin.exists() {
        return Some(bin);
    }
    crate::prerequisites("sushy", &["sushy-emulator (build/venv)".to_owned()]);
    None
}

/// An htpasswd file (bcrypt, as sushy-emulator's auth reads it) for one user.
fn htpasswd(python: &Path, file: &Path, user: &str, password: &str) -> anyhow::Result<()> {
    let out = Command::new(python)
        .args([
            "-c",
            "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(4)).decode())",
            password,
        ])
        .output()?;
    if !out.status.success() {
        bail!("bcrypt: {}", String::from_utf8_lossy(&out.stderr));
    }
    fs::write(
        file,
        format!("{user}:{}", String::from_utf8_lossy(&out.stdout).trim()),
    )?;
    Ok(())
}

/// A fresh self-signed certificate for `ip`: `dir/cert.pem`, `dir/key.pem`.
fn self_signed_cert(dir: &Path, ip: &str) -> anyhow::Result<()> {
    sh(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=bmc",
        ])
        .arg("-addext")
        .arg(format!("subjectAltName=IP:{ip}"))
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(Stdio::null()))
}
