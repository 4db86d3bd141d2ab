//! Peers rackboot talks to in the tests: perfdhcp (its report), emulated BMCs (sushy-tools'
//! fake and static drivers, sushy's libvirt driver with a private libvirtd) and the preflight
//! checks for them.

mod libvirt;
mod perfdhcp;
mod sushy;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// What [`openssl_p256`] makes with the key it generates.
#[derive(Debug, Clone, Copy)]
pub enum P256 {
    /// A certificate signing request.
    Csr,
    /// A self-signed certificate valid for `days`.
    SelfSigned { days: u32 },
}

/// A new P-256 key at `dir/key` and, signed with it, a CSR or a self-signed certificate at
/// `dir/out` for `subject` (`/CN=…`); `extra` goes to `openssl req` as is (`-addext …`).
pub fn openssl_p256(
    dir: &Path,
    what: P256,
    key: &str,
    out: &str,
    subject: &str,
    extra: &[&str],
) -> anyhow::Result<()> {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).args(["req", "-new"]);
    if let P256::SelfSigned { days } = what {
        cmd.args(["-x509", "-days", &days.to_string()]);
    }
    cmd.args([
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        out,
        "-subj",
        subject,
    ])
    .args(extra);
    sh(&mut cmd)
}

/// A fresh self-signed certificate for `ip`: `dir/cert.pem`, `dir/key.pem`.
fn self_signed_cert(dir: &Path, ip: &str) -> anyhow::Result<()> {
    openssl_p256(
        dir,
        P256::SelfSigned { days: 2 },
        "key.pem",
        "cert.pem",
        "/CN=bmc",
        &["-addext", &format!("subjectAltName=IP:{ip}")],
    )
}
