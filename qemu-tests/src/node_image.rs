//! The node image: the test node's initrd with the `rackboot` agent added.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::{rackboot_bin, root, sh};

/// The test node's initrd with the `rackboot` binary (stripped) and the C libraries it links
/// appended as a second cpio archive (the kernel unpacks both), so the node's init can run
/// `rackboot agent`. Written into `dir`.
pub fn agent_initrd(dir: &Path) -> anyhow::Result<PathBuf> {
    let stage = dir.join("agent-root");
    fs::create_dir_all(stage.join("bin"))?;
    let bin = rackboot_bin()?;
    let target = stage.join("bin/rackboot");
    fs::copy(&bin, &target)?;
    sh(Command::new("strip").arg(&target))?;
    let mut libs =
        String::from_utf8_lossy(&Command::new("ldd").arg(&bin).output()?.stdout).into_owned();
    // A rackboot built with the `tpm` feature reaches the TPM through libtss2's TCTI loader,
    // which dlopens the device TCTI (ldd cannot see it): add it and what it links.
    if libs.contains("libtss2-tctildr") {
        for dir in ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"] {
            let tcti = Path::new(dir).join("libtss2-tcti-device.so.0");
            if tcti.exists() {
                libs.push_str(&format!("{} (0x0)\n", tcti.display()));
                libs.push_str(&String::from_utf8_lossy(
                    &Command::new("ldd").arg(&tcti).output()?.stdout,
                ));
                break;
            }
        }
    }
    for line in libs.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        let Some(path) = path else { continue };
        let rel = path.strip_prefix("/").unwrap_or(&path);
        let dest = stage.join(rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(&path, &dest).with_context(|| format!("copy {}", path.display()))?;
    }
    // The uncompressed archive goes first (as early-microcode archives do): the kernel then
    // goes on to the gzip'd node initramfs.
    let out = dir.join("initrd-agent.img");
    sh(Command::new("sh").arg("-c").arg(format!(
        "cd '{}' && find . | LC_ALL=C sort | cpio -o -H newc --quiet > '{}' && cat '{}' >> '{}'",
        stage.display(),
        out.display(),
        root().join("build/node/initrd.img").display(),
        out.display()
    )))?;
    Ok(out)
}
