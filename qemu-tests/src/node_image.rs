//! The node image: the test node's initrd with the `rackboot` agent, or an SSH server, added.

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
    copy_libs(&bin, &stage)?;
    pack(&stage, &dir.join("initrd-agent.img"))
}

/// The test node's initrd plus Debian's dropbear (with its libraries), root's
/// `authorized_key`, and a `/hook` that the node's init runs last: it starts dropbear on port 22
/// (host keys made on first use), prints `RACKBOOT-SSH-UP`, and keeps the node up.
pub fn ssh_initrd(dir: &Path, authorized_key: &str) -> anyhow::Result<PathBuf> {
    let stage = dir.join("ssh-root");
    for d in ["sbin", "etc/dropbear", "root/.ssh"] {
        fs::create_dir_all(stage.join(d))?;
    }
    let dropbear = Path::new("/usr/sbin/dropbear");
    fs::copy(dropbear, stage.join("sbin/dropbear"))
        .context("copy /usr/sbin/dropbear (Debian package dropbear-bin)")?;
    copy_libs(dropbear, &stage)?;
    fs::write(stage.join("root/.ssh/authorized_keys"), authorized_key)?;
    fs::write(stage.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(stage.join("etc/group"), "root:x:0:\n")?;
    fs::write(stage.join("etc/shells"), "/bin/sh\n")?;
    let hook = stage.join("hook");
    fs::write(
        &hook,
        "#!/bin/sh\nmkdir -p /dev/pts && mount -t devpts devpts /dev/pts\n\
         chmod 700 /root /root/.ssh\n/sbin/dropbear -R -E -p 22 >/dev/console 2>&1\n\
         echo RACKBOOT-SSH-UP\nwhile :; do sleep 3600; done\n",
    )?;
    let mut perm = fs::metadata(&hook)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    fs::set_permissions(&hook, perm)?;
    pack(&stage, &dir.join("initrd-ssh.img"))
}

/// Copies the shared libraries `bin` links (per `ldd`) into `stage` at their paths.
fn copy_libs(bin: &Path, stage: &Path) -> anyhow::Result<()> {
    let mut libs =
        String::from_utf8_lossy(&Command::new("ldd").arg(bin).output()?.stdout).into_owned();
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
    Ok(())
}

/// `stage` as an uncompressed cpio followed by the node's gzip'd initramfs, written to `out`.
fn pack(stage: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    // The uncompressed archive goes first (as early-microcode archives do): the kernel then
    // goes on to the gzip'd node initramfs.
    sh(Command::new("sh").arg("-c").arg(format!(
        "cd '{}' && find . | LC_ALL=C sort | cpio -o -H newc --quiet > '{}' && cat '{}' >> '{}'",
        stage.display(),
        out.display(),
        root().join("build/node/initrd.img").display(),
        out.display()
    )))?;
    Ok(out.to_path_buf())
}
