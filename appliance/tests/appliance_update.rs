//! `rackboot appliance update | boot-check | status` end to end on a GPT disk image made by
//! sgdisk, with bundles made by the image build's own `make-bundle.sh` (GNU tar, openssl
//! Ed25519 signatures): what is written where, the EFI variables the firmware will read, the
//! trial boot's outcomes, and refusals that write nothing. The same flow on the real
//! appliance under OVMF is the appliance e2e test's job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

fn tool(name: &str) -> Command {
    Command::new(name)
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (cargo xtask deps installs it)"));
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Rig {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        // The release key and the image's trust store.
        ok(tool("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(root.join("release.key")));
        std::fs::create_dir(root.join("keys")).unwrap();
        ok(tool("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(root.join("release.key"))
            .arg("-out")
            .arg(root.join("keys/release.pub")));
        // The disk: the appliance's partition layout, smaller.
        let disk = root.join("disk.img");
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(40 << 20)
            .unwrap();
        ok(tool("sgdisk")
            .args([
                "-o",
                "-n",
                "1:2048:+8M",
                "-t",
                "1:ef00",
                "-c",
                "1:esp",
                "-n",
                "2:0:+8M",
                "-c",
                "2:root-a",
                "-n",
                "3:0:+8M",
                "-c",
                "3:root-b",
                "-n",
                "4:0:0",
                "-c",
                "4:data",
            ])
            .arg(&disk));
        // root-b stands alone (a file has no partition device nodes); the ESP is a directory.
        std::fs::File::create(root.join("root-b.dev"))
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        for d in ["esp/EFI/BOOT", "efivars", "data"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        // The firmware's BootOrder before the update: its own entries.
        let mut order = 7u32.to_le_bytes().to_vec();
        order.extend([0x01, 0x00, 0x02, 0x00]);
        std::fs::write(root.join(format!("efivars/BootOrder-{GLOBAL}")), order).unwrap();
        Rig { _tmp: tmp, root }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A bundle of version `version` for `board`, signed with `key`.
    fn bundle(&self, name: &str, key: &Path, board: &str, version: &str) -> PathBuf {
        let dir = self.p(&format!("payload-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let root: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i % 251) as u8 ^ version.len() as u8)
            .collect();
        std::fs::write(dir.join("root.img"), root).unwrap();
        std::fs::write(dir.join("rackboot-a.efi"), format!("MZ slot a {version}")).unwrap();
        std::fs::write(dir.join("rackboot-b.efi"), format!("MZ slot b {version}")).unwrap();
        let out = self.p(&format!("{name}.rbu"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../buildroot/board/rackboot/make-bundle.sh");
        ok(Command::new(script)
            .arg(&out)
            .arg(key)
            .args([board, version, &"cd".repeat(32)])
            .arg(&dir));
        out
    }

    fn rackboot(&self, slot: &str, args: &[&str]) -> (bool, String, String) {
        std::fs::write(
            self.p("cmdline"),
            format!("console=ttyS0 rackboot.slot={slot} quiet\n"),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rackboot"));
        cmd.args(args);
        if args[1] != "verify-bundle" {
            cmd.args(["--data-dir", self.p("data").to_str().unwrap()])
                .args(["--cmdline", self.p("cmdline").to_str().unwrap()]);
        }
        if args[1] == "update" || args[1] == "boot-check" {
            cmd.args(["--disk", self.p("disk.img").to_str().unwrap()])
                .args(["--slot-device", self.p("root-b.dev").to_str().unwrap()])
                .args(["--esp", self.p("esp").to_str().unwrap()])
                .args(["--efivars", self.p("efivars").to_str().unwrap()]);
        }
        let out = cmd
            .env("RACKBOOT_LOG", "warn")
            .env_remove("RACKBOOT_TPM")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn update(&self, bundle: &Path) -> (bool, String, String) {
        let keys = self.p("keys");
        self.rackboot(
            "a",
            &[
                "appliance",
                "update",
                bundle.to_str().unwrap(),
                "--keys",
                keys.to_str().unwrap(),
                "--board",
                "x86_64-uefi",
                "--reboot",
                "never",
            ],
        )
    }

    fn status(&self, slot: &str) -> Value {
        let (ok, out, err) = self.rackboot(slot, &["appliance", "status", "-o", "json"]);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    }

    fn var(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.p(&format!("efivars/{name}-{GLOBAL}"))).ok()
    }
}

/// What `sgdisk -i N` says for `field`.
fn sgdisk_field(disk: &Path, n: u32, field: &str) -> String {
    let info = ok(tool("sgdisk").arg("-i").arg(n.to_string()).arg(disk));
    info.lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn an_update_writes_the_other_slot_boots_it_once_and_keeps_it_only_when_healthy() {
    let rig = Rig::new();
    let bundle = rig.bundle("v2", &rig.p("release.key"), "x86_64-uefi", "0.2.0");
    // A reboot time that does not parse is refused before anything is read or written.
    let (ok, _, err) = rig.rackboot(
        "a",
        &[
            "appliance",
            "update",
            bundle.to_str().unwrap(),
            "--reboot",
            "tomorrow",
        ],
    );
    assert!(!ok && err.contains("`at HH:MM`"), "{err}");
    assert!(rig.var("BootNext").is_none());
    let (ok, _, err) = rig.update(&bundle);
    assert!(ok, "{err}");
    assert!(
        err.contains("writing slot b") && err.contains("tries it once"),
        "{err}"
    );

    // The payloads, where the firmware and the initramfs will look for them.
    let root = std::fs::read(rig.p("payload-v2/root.img")).unwrap();
    let dev = std::fs::read(rig.p("root-b.dev")).unwrap();
    assert_eq!(&dev[..root.len()], &root[..]);
    assert_eq!(
        std::fs::read_to_string(rig.p("esp/EFI/rackboot/rackboot-b.efi")).unwrap(),
        "MZ slot b 0.2.0"
    );
    assert!(
        !rig.p("esp/EFI/rackboot/rackboot-a.efi").exists(),
        "the running slot's UKI was touched"
    );

    // Boot0B0B points at the ESP partition (number, extent and unique GUID as sgdisk made
    // them) and slot b's UKI; BootNext tries it once; BootOrder is untouched until healthy.
    let entry = rig.var("Boot0B0B").expect("a boot entry for slot b");
    assert_eq!(
        &entry[..4],
        &[7, 0, 0, 0],
        "non-volatile, boot and runtime access"
    );
    let opt = &entry[4..];
    let desc: Vec<u8> = "rackboot slot b\0"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    assert_eq!(&opt[6..6 + desc.len()], &desc[..]);
    let hd = &opt[6 + desc.len()..];
    assert_eq!(&hd[..4], &[4, 1, 42, 0]);
    assert_eq!(u32::from_le_bytes(hd[4..8].try_into().unwrap()), 1);
    let disk = rig.p("disk.img");
    assert_eq!(
        u64::from_le_bytes(hd[8..16].try_into().unwrap()).to_string(),
        sgdisk_field(&disk, 1, "First sector:")
    );
    let g = &hd[24..40];
    let guid = format!(
        "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{}",
        g[3],
        g[2],
        g[1],
        g[0],
        g[5],
        g[4],
        g[7],
        g[6],
        g[8],
        g[9],
        g[10..16]
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
    );
    assert_eq!(guid, sgdisk_field(&disk, 1, "Partition unique GUID:"));
    let file: Vec<u8> = "\\EFI\\rackboot\\rackboot-b.efi\0"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    assert_eq!(&hd[46..46 + file.len()], &file[..]);
    assert_eq!(rig.var("BootNext").unwrap(), vec![7, 0, 0, 0, 0x0B, 0x0B]);
    assert_eq!(rig.var("BootOrder").unwrap(), vec![7, 0, 0, 0, 1, 0, 2, 0]);

    let st = rig.status("a");
    assert_eq!(st["booted_slot"], "a");
    assert_eq!(st["pending"]["slot"], "b");
    assert_eq!(st["pending"]["stage"], "trial");
    assert_eq!(st["slots"]["b"]["version"], "0.2.0");
    assert_eq!(st["slots"]["b"]["state"], "installed");
    assert_eq!(st["keys"], "no keys yet");
    // A plain key file on a machine that does not seal (RACKBOOT_TPM unset means off) is
    // reported as such, with the reason.
    std::fs::create_dir_all(rig.p("data/auth")).unwrap();
    std::fs::write(rig.p("data/auth/issuer.pem"), b"not a real key").unwrap();
    let keys = rig.status("a")["keys"].as_str().unwrap().to_owned();
    assert_eq!(
        keys,
        "not sealed (RACKBOOT_TPM=off); plain files on the data partition: auth/issuer.pem"
    );
    std::fs::remove_file(rig.p("data/auth/issuer.pem")).unwrap();

    // The trial boot comes up healthy: slot b goes first in BootOrder, and the firmware's
    // removable-media path boots it too (it booted slot a as flashed).
    let fallback = rig.p("esp/EFI/BOOT/BOOTX64.EFI");
    std::fs::write(&fallback, b"slot a as flashed").unwrap();
    let (ok, _, err) = rig.rackboot("b", &["appliance", "boot-check"]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read(&fallback).unwrap(),
        std::fs::read(rig.p("payload-v2/rackboot-b.efi")).unwrap()
    );
    assert_eq!(
        rig.var("BootOrder").unwrap(),
        vec![7, 0, 0, 0, 0x0B, 0x0B, 1, 0, 2, 0]
    );
    let st = rig.status("b");
    assert_eq!(st["booted_slot"], "b");
    assert_eq!(st["slots"]["b"]["state"], "good");
    assert!(st["pending"].is_null());
    // A second boot-check on an ordinary boot changes nothing.
    let (ok, _, err) = rig.rackboot("b", &["appliance", "boot-check"]);
    assert!(ok, "{err}");
    assert_eq!(
        rig.var("BootOrder").unwrap(),
        vec![7, 0, 0, 0, 0x0B, 0x0B, 1, 0, 2, 0]
    );
}

#[test]
fn a_failed_trial_is_reported_and_the_old_slot_stays_the_default() {
    let rig = Rig::new();
    let bundle = rig.bundle("v3", &rig.p("release.key"), "x86_64-uefi", "0.3.0");
    assert!(rig.update(&bundle).0);
    let fallback = rig.p("esp/EFI/BOOT/BOOTX64.EFI");
    std::fs::write(&fallback, b"slot a as flashed").unwrap();
    // On the trial boot rackboot never became healthy: the failure is recorded before the
    // reset (suppressed here), and BootOrder still starts with the firmware's old entry.
    let (ok, _, err) = rig.rackboot(
        "b",
        &[
            "appliance",
            "boot-check",
            "--failed",
            "no answer within 120 s",
            "--no-reboot",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(rig.var("BootOrder").unwrap(), vec![7, 0, 0, 0, 1, 0, 2, 0]);
    // The old slot boots again and says what happened.
    let (ok, _, err) = rig.rackboot("a", &["appliance", "boot-check"]);
    assert!(ok, "{err}");
    assert!(err.contains("failed"), "{err}");
    let st = rig.status("a");
    assert!(st["pending"].is_null());
    assert_eq!(st["slots"]["b"]["state"], "failed");
    let reason = st["last_failure"]["reason"].as_str().unwrap();
    assert!(reason.contains("no answer within 120 s"), "{reason}");
    assert_eq!(std::fs::read(&fallback).unwrap(), b"slot a as flashed");

    // A trial that never reached its check (kernel, verity, firmware) is reported as such.
    assert!(rig.update(&bundle).0);
    let (ok, _, _) = rig.rackboot("a", &["appliance", "boot-check"]);
    assert!(ok);
    let st = rig.status("a");
    let reason = st["last_failure"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("never reached its health check"),
        "{reason}"
    );
}

#[test]
fn refused_bundles_write_nothing() {
    let rig = Rig::new();
    std::fs::write(rig.p("root-b.dev"), vec![0x5au8; 8 << 20]).unwrap();
    ok(tool("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(rig.p("stranger.key")));
    let other_key = rig.bundle("stranger", &rig.p("stranger.key"), "x86_64-uefi", "6.6.6");
    let other_board = rig.bundle("arm", &rig.p("release.key"), "aarch64-uefi", "0.2.0");
    let good = rig.bundle("good", &rig.p("release.key"), "x86_64-uefi", "0.2.0");
    let bytes = std::fs::read(&good).unwrap();
    let truncated = rig.p("truncated.rbu");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    // Signed, for this board, but older than the running release (0.1.0): the rollback floor.
    let older = rig.bundle("older", &rig.p("release.key"), "x86_64-uefi", "0.0.9");

    for (bundle, why) in [
        (&other_key, "does not verify"),
        (&other_board, "for board \"aarch64-uefi\""),
        (&truncated, "truncated"),
        (&older, "older than the running 0.1.0"),
    ] {
        let (ok, _, err) = rig.update(bundle);
        assert!(!ok, "{} was accepted", bundle.display());
        assert!(
            err.contains("refused, nothing written") && err.contains(why),
            "{err}"
        );
        assert!(
            std::fs::read(rig.p("root-b.dev"))
                .unwrap()
                .iter()
                .all(|&b| b == 0x5a),
            "{} touched the slot",
            bundle.display()
        );
        assert!(!rig.p("esp/EFI/rackboot").exists());
        assert!(rig.var("BootNext").is_none() && rig.var("Boot0B0B").is_none());
        assert!(!rig.p("data/update/state.json").exists());
    }
    // `verify-bundle` says the same, and accepts the good one.
    let keys = rig.p("keys");
    let (ok, out, err) = rig.rackboot(
        "a",
        &[
            "appliance",
            "verify-bundle",
            good.to_str().unwrap(),
            "--keys",
            keys.to_str().unwrap(),
            "--board",
            "x86_64-uefi",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("signature ok (key release.pub)") && out.contains("0.2.0"),
        "{out}"
    );
    // The sysadmin may go back on purpose.
    let (ok, _, err) = rig.rackboot(
        "a",
        &[
            "appliance",
            "update",
            older.to_str().unwrap(),
            "--keys",
            keys.to_str().unwrap(),
            "--board",
            "x86_64-uefi",
            "--allow-downgrade",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(rig.status("a")["pending"]["version"], "0.0.9");
}

/// The root updater behind `PUT /rackboot/v1/appliance/update`: it installs only the bundle at
/// its fixed hand-over path, verifies it itself, and never follows a symlink there.
#[test]
fn the_root_updater_installs_only_its_own_verified_hand_over_file() {
    use std::io::{BufRead, BufReader, Write};
    let rig = Rig::new();
    let good = rig.bundle("good", &rig.p("release.key"), "x86_64-uefi", "0.4.0");
    ok(tool("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(rig.p("stranger.key")));
    let forged = rig.bundle("forged", &rig.p("stranger.key"), "x86_64-uefi", "6.6.6");
    std::fs::write(rig.p("cmdline"), "rackboot.slot=a\n").unwrap();
    let socket = rig.p("updater.sock");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_rackboot"))
        .args(["appliance", "updater", "--group", "root"])
        .arg("--socket")
        .arg(&socket)
        .arg("--keys")
        .arg(rig.p("keys"))
        .args(["--board", "x86_64-uefi"])
        .arg("--data-dir")
        .arg(rig.p("data"))
        .arg("--cmdline")
        .arg(rig.p("cmdline"))
        .arg("--disk")
        .arg(rig.p("disk.img"))
        .arg("--slot-device")
        .arg(rig.p("root-b.dev"))
        .arg("--esp")
        .arg(rig.p("esp"))
        .arg("--efivars")
        .arg(rig.p("efivars"))
        .env("RACKBOOT_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // Ready when it accepts a connection.
    let ask = |reboot: &str| -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut conn = loop {
            match std::os::unix::net::UnixStream::connect(&socket) {
                Ok(c) => break c,
                Err(e) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "updater never listened: {e}"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        };
        writeln!(conn, "{{\"reboot\":\"{reboot}\"}}").unwrap();
        BufReader::new(conn)
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect()
    };
    let incoming = rig.p("data/update/incoming.rbu");
    std::fs::create_dir_all(incoming.parent().unwrap()).unwrap();

    // A forged bundle: refused, nothing written, and the hand-over file is gone.
    std::fs::copy(&forged, &incoming).unwrap();
    let answer = ask("never");
    let last = answer.last().unwrap();
    assert_eq!(last["ok"], false, "{answer:?}");
    assert!(
        last["error"].as_str().unwrap().contains("does not verify"),
        "{last}"
    );
    assert!(rig.var("BootNext").is_none());
    assert!(!incoming.exists());

    // A symlink at the hand-over path (to a signed bundle, even) is not followed.
    std::os::unix::fs::symlink(&good, &incoming).unwrap();
    let answer = ask("never");
    assert_eq!(answer.last().unwrap()["ok"], false, "{answer:?}");
    assert!(rig.var("BootNext").is_none());
    std::fs::remove_file(&incoming).unwrap();

    // The signed bundle: progress lines, then the result; slot b is written and tried next.
    std::fs::copy(&good, &incoming).unwrap();
    let answer = ask("never");
    let last = answer.last().unwrap();
    assert_eq!(last["ok"], true, "{answer:?}");
    assert_eq!(last["slot"], "b");
    assert_eq!(last["version"], "0.4.0");
    assert_eq!(last["rebooting"], false);
    assert!(
        answer
            .iter()
            .any(|l| l["say"].as_str().is_some_and(|s| s.contains("100%")))
    );
    assert_eq!(rig.var("BootNext").unwrap(), vec![7, 0, 0, 0, 0x0B, 0x0B]);

    // A request that is not `now`, `never` or `at TIME` is refused, and says the syntax.
    let answer = ask("later");
    let last = answer.last().unwrap();
    assert_eq!(last["ok"], false);
    assert!(
        last["error"].as_str().unwrap().contains("`at HH:MM`"),
        "{last}"
    );

    // A reboot at a chosen time is kept with the pending update (far ahead here: the updater
    // would reboot this machine when it comes).
    std::fs::copy(&good, &incoming).unwrap();
    let answer = ask("at 2099-01-01T00:00:00Z");
    let last = answer.last().unwrap();
    assert_eq!(last["ok"], true, "{answer:?}");
    assert_eq!(last["reboot"], "at 2099-01-01T00:00:00Z");
    let st = rig.status("a");
    assert_eq!(st["pending"]["reboot_at"], "2099-01-01T00:00:00Z", "{st}");

    let _ = daemon.kill();
    let _ = daemon.wait();
}
