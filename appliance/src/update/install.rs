//! Writing a verified bundle into the inactive slot: the root image onto the slot's partition,
//! the slot's UKI onto the ESP.
//!
//! The order makes every interruption harmless to the running slot, which is never touched:
//! the target slot's first block is zeroed before anything else (a half-written slot has no
//! squashfs superblock, and its UKI's dm-verity root hash would not match it anyway), the root
//! image is written and read back through SHA-256, and only then is the UKI written beside the
//! ESP's other files and renamed into place. Nothing makes the firmware boot the new slot here
//! (that is the boot selection's job, after this returned Ok).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::bundle::{Bundle, HashCheck, Refused};

/// A root slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The slot named by `rackboot.slot=` on a kernel command line.
    pub fn from_cmdline(cmdline: &str) -> Option<Slot> {
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("rackboot.slot="))
            .and_then(|s| match s {
                "a" => Some(Slot::A),
                "b" => Some(Slot::B),
                _ => None,
            })
    }

    /// The slot's UKI in the bundle and on the ESP.
    pub fn uki(self) -> String {
        format!("rackboot-{}.efi", self.name())
    }
}

/// Where a slot is written.
#[derive(Clone, Debug)]
pub struct Target {
    pub slot: Slot,
    /// The slot's partition (GPT name `root-<slot>`), or a file standing in for it.
    pub root_device: PathBuf,
    /// The mounted ESP (read-write while installing).
    pub esp: PathBuf,
}

impl Target {
    /// The UKI's path on the ESP.
    pub fn uki_path(&self) -> PathBuf {
        self.esp.join("EFI/rackboot").join(self.slot.uki())
    }
}

const BUF: usize = 1024 * 1024;

/// Writes `bundle` (already verified: [`Bundle::check_payloads`]) into `target`. `progress`
/// gets (bytes written, total).
pub fn install(
    bundle: &Bundle,
    target: &Target,
    mut progress: impl FnMut(u64, u64),
) -> Result<(), Refused> {
    let root = bundle
        .entry("root.img")
        .ok_or_else(|| Refused::Malformed("no root.img".into()))?;
    let uki_name = target.slot.uki();
    let uki = bundle
        .entry(&uki_name)
        .ok_or_else(|| Refused::Malformed(format!("no {uki_name}")))?;
    let total = root.size + uki.size;

    let mut dev = OpenOptions::new()
        .write(true)
        .read(true)
        .open(&target.root_device)?;
    let capacity = dev.seek(SeekFrom::End(0))?;
    if root.size > capacity {
        return Err(Refused::Malformed(format!(
            "root.img is {} bytes, slot {} ({}) holds {capacity}",
            root.size,
            target.slot.name(),
            target.root_device.display()
        )));
    }
    // First invalidate the slot, durably, so no interruption leaves a plausible old image.
    dev.seek(SeekFrom::Start(0))?;
    dev.write_all(&vec![0u8; 4096.min(capacity as usize)])?;
    dev.sync_all()?;

    // The image, then its superblock last: a cut before the end leaves block 0 zeroed.
    let mut src = HashCheck::new(bundle.payload("root.img")?, root);
    let mut first = vec![0u8; 4096.min(root.size as usize)];
    src.read_exact(&mut first)?;
    dev.seek(SeekFrom::Start(first.len() as u64))?;
    let mut done = first.len() as u64;
    copy(&mut src, &mut dev, |n| {
        done += n;
        progress(done, total);
    })
    .map_err(|e| Refused::Write(format!("{}: {e}", target.root_device.display())))?;
    src.finish()?;
    dev.sync_all()?;
    dev.seek(SeekFrom::Start(0))?;
    dev.write_all(&first)?;
    dev.sync_all()?;
    // Read it back: a device that lost a write fails here, not at the next boot.
    dev.seek(SeekFrom::Start(0))?;
    let mut back = HashCheck::new((&mut dev).take(root.size), root);
    std::io::copy(&mut back, &mut std::io::sink())?;
    back.finish().map_err(|e| Refused::PayloadMismatch {
        name: format!(
            "{} read back from {}",
            root.name,
            target.root_device.display()
        ),
        why: e.to_string(),
    })?;
    drop(dev);

    // The UKI: beside its final name, synced, renamed, directory synced.
    let path = target.uki_path();
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{uki_name}.new"));
    let mut out =
        File::create(&tmp).map_err(|e| Refused::Write(format!("{}: {e}", tmp.display())))?;
    let mut src = HashCheck::new(bundle.payload(&uki_name)?, uki);
    let mut written = root.size;
    let copied = copy(&mut src, &mut out, |n| {
        written += n;
        progress(written, total);
    })
    .and_then(|()| src.finish().map_err(std::io::Error::other))
    .and_then(|()| out.sync_all());
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(Refused::Write(format!("{}: {e}", tmp.display())));
    }
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// The firmware's removable-media path, booted when the NVRAM's entries are gone (a cleared
/// CMOS, a replaced board).
pub const FALLBACK: &str = "EFI/BOOT/BOOTX64.EFI";

/// Makes the removable-media path boot `slot`: a copy of its UKI, written beside, synced and
/// renamed over the old one. Called once a slot is good, so a firmware that lost its boot
/// entries still boots a slot that works, never one whose root was rewritten since.
pub fn set_fallback(esp: &Path, slot: Slot) -> std::io::Result<()> {
    let src = esp.join("EFI/rackboot").join(slot.uki());
    let dst = esp.join(FALLBACK);
    let dir = dst.parent().unwrap_or(esp);
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(".BOOTX64.EFI.new");
    let copied = std::fs::copy(&src, &tmp)
        .and_then(|_| File::open(&tmp))
        .and_then(|f| f.sync_all());
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(std::io::Error::new(
            e.kind(),
            format!("{} -> {}: {e}", src.display(), tmp.display()),
        ));
    }
    std::fs::rename(&tmp, &dst)?;
    File::open(dir)?.sync_all()
}

fn copy(
    src: &mut impl Read,
    dst: &mut impl Write,
    mut progress: impl FnMut(u64),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all(buf.get(..n).unwrap_or_default())?;
        progress(n as u64);
    }
}
