//! The running appliance as the updater sees it: the booted slot (from the signed kernel
//! command line), the disk it booted from, partition device nodes (sysfs), the ESP's mount,
//! and rebooting (busybox `reboot`, so init runs its shutdown actions and unmounts).

use std::path::{Path, PathBuf};

use super::cli::SystemArgs;
use super::install::Slot;

/// The slot named by `rackboot.slot=` in the command line at `cmdline`.
pub fn booted_slot(cmdline: &Path) -> anyhow::Result<Slot> {
    let text = std::fs::read_to_string(cmdline)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", cmdline.display()))?;
    Slot::from_cmdline(&text).ok_or_else(|| {
        anyhow::anyhow!(
            "{} names no rackboot.slot: this system was not booted from an appliance slot",
            cmdline.display()
        )
    })
}

/// The whole disk: `--disk`, else the disk holding the booted root (ROOT_DEV in
/// /run/rackboot/boot.env, written by the initramfs). Never a disk found by partition name
/// alone: another disk plugged in could carry partitions named like ours.
pub fn disk(sys: &SystemArgs) -> anyhow::Result<PathBuf> {
    if let Some(d) = &sys.disk {
        return Ok(d.clone());
    }
    let env = std::fs::read_to_string("/run/rackboot/boot.env")
        .map_err(|e| anyhow::anyhow!("reading /run/rackboot/boot.env (written at boot): {e}"))?;
    let root = env
        .lines()
        .find_map(|l| l.strip_prefix("ROOT_DEV="))
        .ok_or_else(|| anyhow::anyhow!("/run/rackboot/boot.env names no ROOT_DEV"))?;
    let part = Path::new(root)
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("ROOT_DEV {root:?}"))?;
    let sys_part = Path::new("/sys/class/block").join(part);
    let parent = std::fs::canonicalize(sys_part.join(".."))?;
    let name = parent
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("no disk above {}", sys_part.display()))?;
    Ok(Path::new("/dev").join(name))
}

/// The device node of partition `number` of `disk` (`/sys/block/<disk>/<part>/partition`).
pub fn partition_device(disk: &Path, number: u32) -> anyhow::Result<PathBuf> {
    let name = disk
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{}", disk.display()))?;
    let sys = Path::new("/sys/block").join(name);
    for e in std::fs::read_dir(&sys)? {
        let e = e?;
        if let Ok(n) = std::fs::read_to_string(e.path().join("partition"))
            && n.trim() == number.to_string()
        {
            return Ok(Path::new("/dev").join(e.file_name()));
        }
    }
    anyhow::bail!("{} has no partition {number}", disk.display())
}

/// Whether `dir` is a read-only mount point (from /proc/self/mountinfo).
fn read_only_mount(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy();
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.get(4) == Some(&want.as_ref())
            && f.get(5).is_some_and(|o| o.split(',').any(|x| x == "ro"))
    })
}

/// Runs `f` with the ESP at `esp` writable: a read-only mount is remounted read-write for the
/// duration and read-only again afterwards, whatever `f` returned.
pub fn with_esp_writable<T>(
    esp: &Path,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if !read_only_mount(esp) {
        return f();
    }
    remount(esp, false)?;
    let out = f();
    nix::unistd::sync();
    remount(esp, true)?;
    out
}

fn remount(dir: &Path, read_only: bool) -> anyhow::Result<()> {
    let opt = if read_only {
        "remount,ro"
    } else {
        "remount,rw"
    };
    let status = std::process::Command::new("mount")
        .args(["-o", opt])
        .arg(dir)
        .status()?;
    anyhow::ensure!(status.success(), "mount -o {opt} {} failed", dir.display());
    Ok(())
}

/// Syncs and asks init to reboot.
pub fn reboot() -> anyhow::Result<()> {
    nix::unistd::sync();
    let status = std::process::Command::new("reboot").status()?;
    anyhow::ensure!(status.success(), "reboot failed: {status}");
    Ok(())
}
