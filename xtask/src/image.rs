//! Builds the QEMU test node: Debian's kernel and a busybox initramfs, into build/node/.
//!
//! Reproducible from packages on the build machine: the kernel .deb is downloaded with
//! `apt-get download` and unpacked (never installed on the host); the initramfs holds
//! busybox-static, the virtio-net modules in load order, and images/node/init.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::run::{output, run};

/// Where the node image lands.
pub struct NodeImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Virtio-net stack in dependency order (names without extension).
const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

pub fn node() -> anyhow::Result<NodeImage> {
    crate::stage("node image (Debian kernel + busybox initramfs)");
    let root = crate::root();
    let out = root.join("build/node");
    let kernel = out.join("vmlinuz");
    let initrd = out.join("initrd.img");
    let init_src = root.join("images/node/init");
    let stamp_inputs = [&init_src, &root.join("images/node/udhcpc.script")];
    if kernel.exists() && initrd.exists() && newer_than(&initrd, &stamp_inputs) {
        eprintln!("up to date: {}", out.display());
        return Ok(NodeImage { kernel, initrd });
    }
    fs::create_dir_all(&out)?;
    let work = out.join("work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;

    // Kernel package: the real one behind the linux-image-amd64 metapackage.
    let deps = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    let pkg = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .context("apt-cache depends linux-image-amd64 names no kernel package (apt-get update?)")?
        .to_owned();
    let debs = work.join("debs");
    fs::create_dir_all(&debs)?;
    if run(Command::new("apt-get")
        .args(["download", &pkg])
        .current_dir(&debs))
    .is_err()
    {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        run(Command::new("apt-get")
            .args(["download", &pkg])
            .current_dir(&debs))?;
    }
    let deb = fs::read_dir(&debs)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download produced no .deb")?;
    let kroot = work.join("kernel");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&kroot))?;
    let vmlinuz = fs::read_dir(kroot.join("boot"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("no vmlinuz in the kernel package")?;
    fs::copy(&vmlinuz, &kernel)?;

    // initramfs tree.
    let tree = work.join("initramfs");
    for d in ["bin", "lib/modules", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(tree.join(d))?;
    }
    fs::copy("/bin/busybox", tree.join("bin/busybox"))
        .context("busybox-static is not installed (/bin/busybox)")?;
    fs::copy(&init_src, tree.join("init"))?;
    fs::copy(
        root.join("images/node/udhcpc.script"),
        tree.join("udhcpc.script"),
    )?;
    let mut order = String::new();
    let modroot = find_modules_dir(&kroot)?;
    for m in MODULES {
        let Some(path) = find_module(&modroot, m) else {
            // Built into this kernel: nothing to load.
            continue;
        };
        let name = format!("{m}.ko");
        let dst = tree.join("lib/modules").join(&name);
        let file = path.to_string_lossy();
        if file.ends_with(".xz") {
            run(Command::new("sh").arg("-c").arg(format!(
                "xz -dc '{}' > '{}'",
                file,
                dst.display()
            )))?;
        } else if file.ends_with(".zst") {
            run(Command::new("sh").arg("-c").arg(format!(
                "zstd -dcq '{}' > '{}'",
                file,
                dst.display()
            )))?;
        } else {
            fs::copy(&path, &dst)?;
        }
        order.push_str(&name);
        order.push('\n');
    }
    fs::write(tree.join("modules.order"), order)?;
    set_exec(&tree.join("init"))?;
    set_exec(&tree.join("udhcpc.script"))?;
    run(Command::new("sh").arg("-c").arg(format!(
        "cd '{}' && find . | LC_ALL=C sort | cpio -o -H newc --quiet --reproducible | gzip -9n > '{}'",
        tree.display(),
        initrd.display()
    )))?;
    let _ = fs::remove_dir_all(&work);
    eprintln!("built {} and {}", kernel.display(), initrd.display());
    Ok(NodeImage { kernel, initrd })
}

fn find_modules_dir(kroot: &Path) -> anyhow::Result<PathBuf> {
    for base in ["lib/modules", "usr/lib/modules"] {
        if let Ok(mut it) = fs::read_dir(kroot.join(base))
            && let Some(Ok(e)) = it.next()
        {
            return Ok(e.path());
        }
    }
    bail!("no lib/modules in the kernel package")
}

fn find_module(dir: &Path, name: &str) -> Option<PathBuf> {
    let entries = fs::read_dir(dir).ok()?;
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            if let Some(found) = find_module(&p, name) {
                return Some(found);
            }
        } else if let Some(f) = p.file_name().map(|f| f.to_string_lossy().into_owned()) {
            let stem = f.split(".ko").next().unwrap_or("");
            if stem == name && f.contains(".ko") {
                return Some(p);
            }
        }
    }
    None
}

fn set_exec(p: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn newer_than(target: &Path, inputs: &[&PathBuf]) -> bool {
    let Ok(t) = fs::metadata(target).and_then(|m| m.modified()) else {
        return false;
    };
    inputs.iter().all(|i| {
        fs::metadata(i)
            .and_then(|m| m.modified())
            .is_ok_and(|m| m <= t)
    })
}
