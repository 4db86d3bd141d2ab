//! The firmware's boot selection: UEFI load options (`Boot####`), the one-shot `BootNext` and
//! `BootOrder`, written through efivarfs, and the GPT lookups they need.
//!
//! This is the boot-counting protocol of the update: the new slot is booted once through
//! `BootNext` (the firmware deletes `BootNext` before it starts the entry, so the next reset
//! after a failed trial goes back to `BootOrder`, the slot that worked). Only a slot that passed
//! its health check is put first in `BootOrder`. The counter is therefore one trial.
//!
//! Encodings follow the UEFI specification 2.10: §3.1.3 (EFI_LOAD_OPTION), §10.3.5.1 (hard
//! drive media device path), §10.3.5.4 (file path media device path), §3.3 (the globally
//! defined variables), and the GPT header and entry layout of §5.3.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// EFI_GLOBAL_VARIABLE, as efivarfs names it.
pub const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS.
const ATTRS: u32 = 0x7;
const LOAD_OPTION_ACTIVE: u32 = 0x1;

/// One GPT partition entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as in the device path and `/dev/vdaN`.
    pub number: u32,
    pub name: String,
    /// The unique partition GUID, in its on-disk (mixed-endian) byte order.
    pub guid: [u8; 16],
    pub first_lba: u64,
    pub last_lba: u64,
}

/// Reads the primary GPT of `disk` (a whole-disk device, or an image file) with 512-byte
/// logical blocks.
pub fn read_gpt(disk: &mut (impl Read + Seek)) -> anyhow::Result<Vec<Partition>> {
    let mut header = [0u8; 92];
    disk.seek(SeekFrom::Start(512))?;
    disk.read_exact(&mut header)?;
    if &header[..8] != b"EFI PART" {
        anyhow::bail!("no GPT header at LBA 1");
    }
    let entries_lba = le_u64(&header, 72);
    let count = le_u32(&header, 80);
    let size = le_u32(&header, 84) as usize;
    if !(128..=4096).contains(&size) || count > 1024 {
        anyhow::bail!("implausible GPT: {count} entries of {size} bytes");
    }
    let mut table = vec![0u8; size * count as usize];
    disk.seek(SeekFrom::Start(entries_lba * 512))?;
    disk.read_exact(&mut table)?;
    let mut parts = Vec::new();
    for (i, e) in table.chunks_exact(size).enumerate() {
        let bytes = |from: usize, to: usize| e.get(from..to).unwrap_or_default();
        if bytes(0, 16).iter().all(|&b| b == 0) {
            continue;
        }
        let name: Vec<u16> = bytes(56, 128)
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes(c.try_into().unwrap_or([0, 0])))
            .take_while(|&c| c != 0)
            .collect();
        let mut guid = [0u8; 16];
        guid.copy_from_slice(bytes(16, 32));
        parts.push(Partition {
            number: i as u32 + 1,
            name: String::from_utf16_lossy(&name),
            guid,
            first_lba: le_u64(e, 32),
            last_lba: le_u64(e, 40),
        });
    }
    Ok(parts)
}

/// The little-endian integer at `at` (0 when `b` is too short, which the callers' length
/// checks rule out).
fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        v.copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// An EFI_LOAD_OPTION that starts `file` (a path on the ESP, `\`-separated) from partition
/// `esp`.
pub fn load_option(description: &str, esp: &Partition, file: &str) -> Vec<u8> {
    let mut path = Vec::new();
    // Hard drive media device path: GPT partition by number, extent and unique GUID.
    path.extend([4u8, 1, 42, 0]);
    path.extend(esp.number.to_le_bytes());
    path.extend(esp.first_lba.to_le_bytes());
    path.extend((esp.last_lba - esp.first_lba + 1).to_le_bytes());
    path.extend(esp.guid);
    path.extend([0x02, 0x02]); // GPT, GUID signature
    // File path media device path.
    let name = utf16z(file);
    path.extend([4u8, 4]);
    path.extend(((4 + name.len()) as u16).to_le_bytes());
    path.extend(name);
    // End of the whole device path.
    path.extend([0x7f, 0xff, 4, 0]);

    let mut opt = Vec::new();
    opt.extend(LOAD_OPTION_ACTIVE.to_le_bytes());
    opt.extend((path.len() as u16).to_le_bytes());
    opt.extend(utf16z(description));
    opt.extend(path);
    opt
}

/// The efivarfs directory (`/sys/firmware/efi/efivars`).
#[derive(Clone, Debug)]
pub struct Vars(pub PathBuf);

impl Vars {
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(format!("{name}-{GLOBAL}"))
    }

    /// A global variable's data (without the attribute word), or None.
    pub fn get(&self, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(name)) {
            Ok(b) if b.len() >= 4 => Ok(Some(b.get(4..).unwrap_or_default().to_vec())),
            Ok(_) => anyhow::bail!("efivar {name}: shorter than its attributes"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("reading efivar {name}: {e}")),
        }
    }

    /// Writes a non-volatile global variable (the whole value, in one write, as efivarfs
    /// requires).
    pub fn set(&self, name: &str, data: &[u8]) -> anyhow::Result<()> {
        let path = self.path(name);
        make_mutable(&path);
        let mut all = ATTRS.to_le_bytes().to_vec();
        all.extend_from_slice(data);
        std::fs::write(&path, all).map_err(|e| anyhow::anyhow!("writing efivar {name}: {e}"))
    }

    /// `BootOrder` as entry numbers.
    pub fn boot_order(&self) -> anyhow::Result<Vec<u16>> {
        Ok(self
            .get("BootOrder")?
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes(c.try_into().unwrap_or([0, 0])))
            .collect())
    }

    pub fn set_boot_order(&self, order: &[u16]) -> anyhow::Result<()> {
        let data: Vec<u8> = order.iter().flat_map(|n| n.to_le_bytes()).collect();
        self.set("BootOrder", &data)
    }

    /// Boots entry `n` once at the next reset.
    pub fn set_boot_next(&self, n: u16) -> anyhow::Result<()> {
        self.set("BootNext", &n.to_le_bytes())
    }

    /// Writes `Boot{n:04X}`.
    pub fn set_boot_entry(&self, n: u16, option: &[u8]) -> anyhow::Result<()> {
        self.set(&format!("Boot{n:04X}"), option)
    }
}

/// efivarfs marks existing variables immutable (chattr +i) against accidental `rm`; clear it
/// before rewriting one. A missing file or a file system without the flag is fine.
#[allow(unsafe_code)] // two ioctls; no safe wrapper for FS_IOC_{GET,SET}FLAGS in nix
fn make_mutable(path: &Path) {
    use std::os::fd::AsRawFd;
    const FS_IMMUTABLE_FL: nix::libc::c_long = 0x10;
    let Ok(f) = std::fs::File::open(path) else {
        return;
    };
    let mut flags: nix::libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS/SETFLAGS read and write one long through the pointer, which is
    // valid for the duration of the call; the fd is open.
    unsafe {
        if nix::libc::ioctl(f.as_raw_fd(), nix::libc::FS_IOC_GETFLAGS, &mut flags) == 0
            && flags & FS_IMMUTABLE_FL != 0
        {
            flags &= !FS_IMMUTABLE_FL;
            nix::libc::ioctl(f.as_raw_fd(), nix::libc::FS_IOC_SETFLAGS, &flags);
        }
    }
}

/// The boot entry number the updater uses for `slot` (fixed, so a second update of the same
/// slot rewrites its entry instead of adding one).
pub fn entry_number(slot: super::install::Slot) -> u16 {
    match slot {
        super::install::Slot::A => 0x0A0A,
        super::install::Slot::B => 0x0B0B,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_option_has_the_specified_layout() {
        let esp = Partition {
            number: 1,
            name: "esp".into(),
            guid: [0x11; 16],
            first_lba: 2048,
            last_lba: 2048 + 81919,
        };
        let opt = load_option("rackboot b", &esp, r"\EFI\rackboot\rackboot-b.efi");
        assert_eq!(&opt[..4], &1u32.to_le_bytes());
        let path_len = u16::from_le_bytes([opt[4], opt[5]]) as usize;
        let desc = utf16z("rackboot b");
        assert_eq!(&opt[6..6 + desc.len()], &desc[..]);
        let path = &opt[6 + desc.len()..];
        assert_eq!(
            path.len(),
            path_len,
            "FilePathListLength covers the device path"
        );
        assert_eq!(&path[..4], &[4, 1, 42, 0]);
        assert_eq!(u64::from_le_bytes(path[8..16].try_into().unwrap()), 2048);
        assert_eq!(u64::from_le_bytes(path[16..24].try_into().unwrap()), 81920);
        assert_eq!(&path[40..42], &[2, 2]);
        let file = &path[42..];
        let flen = u16::from_le_bytes([file[2], file[3]]) as usize;
        assert_eq!(&file[..2], &[4, 4]);
        assert_eq!(&file[4..flen], &utf16z(r"\EFI\rackboot\rackboot-b.efi")[..]);
        assert_eq!(&file[flen..], &[0x7f, 0xff, 4, 0]);
    }

    #[test]
    fn variables_round_trip_with_their_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let vars = Vars(dir.path().to_owned());
        assert_eq!(vars.boot_order().unwrap(), Vec::<u16>::new());
        vars.set_boot_order(&[1, 0x0B0B, 3]).unwrap();
        assert_eq!(vars.boot_order().unwrap(), vec![1, 0x0B0B, 3]);
        vars.set_boot_next(0x0B0B).unwrap();
        let raw = std::fs::read(dir.path().join(format!("BootNext-{GLOBAL}"))).unwrap();
        assert_eq!(raw, vec![7, 0, 0, 0, 0x0B, 0x0B]);
    }

    #[test]
    fn the_gpt_reader_agrees_with_sgdisk() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let out = std::process::Command::new("sgdisk")
            .args([
                "-o",
                "-n",
                "1:2048:+8M",
                "-t",
                "1:ef00",
                "-c",
                "1:esp",
                "-n",
                "2:0:+16M",
                "-c",
                "2:root-a",
                "-n",
                "3:0:+16M",
                "-c",
                "3:root-b",
                "-n",
                "4:0:0",
                "-c",
                "4:data",
            ])
            .arg(&img)
            .output()
            .expect("sgdisk (Debian gdisk; cargo xtask deps installs it)");
        assert!(out.status.success(), "{out:?}");
        let parts = read_gpt(&mut std::fs::File::open(&img).unwrap()).unwrap();
        let names: Vec<_> = parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["esp", "root-a", "root-b", "data"]);
        for p in &parts {
            let info = std::process::Command::new("sgdisk")
                .arg("-i")
                .arg(p.number.to_string())
                .arg(&img)
                .output()
                .unwrap();
            let info = String::from_utf8_lossy(&info.stdout);
            let field = |k: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_owned()
            };
            assert_eq!(field("First sector:"), p.first_lba.to_string());
            assert_eq!(field("Last sector:"), p.last_lba.to_string());
            // sgdisk prints the GUID in its text form: the first three fields little-endian.
            let g = &p.guid;
            let text = format!(
                "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{}-{}",
                g[3],
                g[2],
                g[1],
                g[0],
                g[5],
                g[4],
                g[7],
                g[6],
                hex::encode_upper(&g[8..10]),
                hex::encode_upper(&g[10..16])
            );
            assert_eq!(field("Partition unique GUID:"), text);
        }
    }
}
