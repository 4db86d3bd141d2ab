//! Bundles built here with a throwaway Ed25519 key: the good one verifies; every way of being
//! wrong is refused with its own error.

use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine as _;

use super::bundle::{self, FORMAT, FileEntry, Manifest, Refused};

struct Key(Ed25519KeyPair);

impl Key {
    fn new() -> Key {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Key(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }

    /// The public key as `openssl pkey -pubout` writes it.
    fn pem(&self) -> String {
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend_from_slice(self.0.public_key().as_ref());
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        )
    }

    fn trust(&self, dir: &Path, name: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), self.pem()).unwrap();
    }
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

fn payloads() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("root.img", (0..300_000u32).map(|i| (i * 7) as u8).collect()),
        ("rackboot-a.efi", b"MZ slot a".repeat(1000)),
        ("rackboot-b.efi", b"MZ slot b".repeat(1000)),
    ]
}

fn manifest(board: &str, files: &[(&str, Vec<u8>)]) -> Manifest {
    Manifest {
        format: FORMAT.into(),
        board: board.into(),
        version: "0.2.0 (test)".into(),
        roothash: "ab".repeat(32),
        files: files
            .iter()
            .map(|(n, b)| FileEntry {
                name: (*n).into(),
                size: b.len() as u64,
                sha256: sha(b),
            })
            .collect(),
    }
}

/// A bundle file: the manifest signed by `key`, then `files` (which may differ from what the
/// manifest says, to build bad bundles).
fn write_bundle(path: &Path, key: &Key, m: &Manifest, files: &[(&str, Vec<u8>)]) {
    let json = serde_json::to_vec_pretty(m).unwrap();
    let sig = key.0.sign(&json);
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    add("manifest.json", &json);
    add("manifest.json.sig", sig.as_ref());
    for (n, d) in files {
        add(n, d);
    }
    b.into_inner().unwrap();
}

struct Fixture {
    _dir: tempfile::TempDir,
    keys: PathBuf,
    bundle: PathBuf,
    key: Key,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::new();
    let keys = dir.path().join("keys");
    key.trust(&keys, "release.pub");
    let bundle = dir.path().join("update.rbu");
    let files = payloads();
    write_bundle(&bundle, &key, &manifest("x86_64-uefi", &files), &files);
    Fixture {
        keys,
        bundle,
        key,
        _dir: dir,
    }
}

fn open(f: &Fixture, path: &Path, board: &str) -> Result<bundle::Bundle, Refused> {
    let keys = bundle::trusted_keys(&f.keys).unwrap();
    let b = bundle::open(path, &keys, &f.keys, board)?;
    b.check_payloads(|_, _| {})?;
    Ok(b)
}

#[test]
fn a_good_bundle_verifies_and_reads_back_its_payloads() {
    let f = fixture();
    let b = open(&f, &f.bundle, "x86_64-uefi").unwrap();
    assert_eq!(b.signed_by, "release.pub");
    assert_eq!(b.manifest.version, "0.2.0 (test)");
    for (name, data) in payloads() {
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut b.payload(name).unwrap(), &mut got).unwrap();
        assert_eq!(got, data, "{name}");
    }
}

#[test]
fn a_bundle_signed_with_another_key_is_refused() {
    let f = fixture();
    let other = Key::new();
    let path = f.bundle.with_file_name("other.rbu");
    let files = payloads();
    write_bundle(&path, &other, &manifest("x86_64-uefi", &files), &files);
    let err = open(&f, &path, "x86_64-uefi").unwrap_err();
    assert!(
        matches!(err, Refused::BadSignature { keys: 1, .. }),
        "{err}"
    );
    // Trusting the other key as well makes it verify: the refusal was the key, nothing else.
    other.trust(&f.keys, "other.pub");
    assert_eq!(
        open(&f, &path, "x86_64-uefi").unwrap().signed_by,
        "other.pub"
    );
}

#[test]
fn a_manifest_changed_after_signing_is_refused() {
    let f = fixture();
    let mut bytes = std::fs::read(&f.bundle).unwrap();
    let at = bytes
        .windows(7)
        .position(|w| w == b"0.2.0 (")
        .expect("the version is in the manifest");
    bytes[at] = b'9';
    let path = f.bundle.with_file_name("edited.rbu");
    std::fs::write(&path, bytes).unwrap();
    let err = open(&f, &path, "x86_64-uefi").unwrap_err();
    assert!(matches!(err, Refused::BadSignature { .. }), "{err}");
}

#[test]
fn a_truncated_bundle_is_refused_at_every_length() {
    let f = fixture();
    let bytes = std::fs::read(&f.bundle).unwrap();
    let path = f.bundle.with_file_name("short.rbu");
    // Cut inside each header and each payload, down to the last payload's last bytes (its
    // 216 bytes of block padding and the 1024-byte end-of-archive trailer follow them).
    for len in [
        0,
        100,
        600,
        1500,
        3000,
        200_000,
        bytes.len() - 3000,
        bytes.len() - 1241,
    ] {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let err = open(&f, &path, "x86_64-uefi");
        assert!(err.is_err(), "a bundle cut to {len} bytes was accepted");
    }
    // Every signed byte present, only padding and trailer missing: nothing is lost.
    std::fs::write(&path, &bytes[..bytes.len() - 1240]).unwrap();
    open(&f, &path, "x86_64-uefi").unwrap();
}

#[test]
fn a_bundle_for_another_board_is_refused() {
    let f = fixture();
    let err = open(&f, &f.bundle, "aarch64-uefi").unwrap_err();
    match err {
        Refused::WrongBoard { bundle, ours } => {
            assert_eq!(bundle, "x86_64-uefi");
            assert_eq!(ours, "aarch64-uefi");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn payloads_that_differ_from_the_manifest_are_refused() {
    let f = fixture();
    let good = payloads();
    // Same size, one byte changed: the hash catches it.
    let mut bad = payloads();
    bad[0].1[1000] ^= 1;
    let path = f.bundle.with_file_name("bad.rbu");
    write_bundle(&path, &f.key, &manifest("x86_64-uefi", &good), &bad);
    let err = open(&f, &path, "x86_64-uefi").unwrap_err();
    assert!(
        matches!(&err, Refused::PayloadMismatch { name, .. } if name == "root.img"),
        "{err}"
    );
    // A payload left out, and one not in the manifest.
    write_bundle(&path, &f.key, &manifest("x86_64-uefi", &good), &good[..2]);
    assert!(open(&f, &path, "x86_64-uefi").is_err());
    let mut extra = payloads();
    extra.push(("evil.sh", b"#!/bin/sh".to_vec()));
    write_bundle(&path, &f.key, &manifest("x86_64-uefi", &good), &extra);
    assert!(matches!(
        open(&f, &path, "x86_64-uefi").unwrap_err(),
        Refused::Malformed(_)
    ));
    // A manifest without a required payload.
    write_bundle(
        &path,
        &f.key,
        &manifest("x86_64-uefi", &good[1..]),
        &good[1..],
    );
    assert!(matches!(
        open(&f, &path, "x86_64-uefi").unwrap_err(),
        Refused::Malformed(_)
    ));
}

#[test]
fn no_trusted_keys_refuses_everything_and_a_bad_key_file_is_an_error() {
    let f = fixture();
    let empty = f.keys.with_file_name("none");
    let keys = bundle::trusted_keys(&empty).unwrap();
    assert!(matches!(
        bundle::open(&f.bundle, &keys, &empty, "x86_64-uefi").unwrap_err(),
        Refused::NoKeys(_)
    ));
    std::fs::write(f.keys.join("typo.pub"), "not a key").unwrap();
    assert!(bundle::trusted_keys(&f.keys).is_err());
}

#[test]
fn garbage_is_refused_not_a_panic() {
    let f = fixture();
    let path = f.bundle.with_file_name("garbage.rbu");
    for seed in 0..50u32 {
        let junk: Vec<u8> = (0..(seed * 97 % 4096))
            .map(|i| (i.wrapping_mul(seed + 31) >> 3) as u8)
            .collect();
        std::fs::write(&path, junk).unwrap();
        assert!(open(&f, &path, "x86_64-uefi").is_err());
    }
}

mod install {
    use super::*;
    use crate::update::install::{Slot, Target, install};

    fn target(f: &Fixture, device_bytes: u64) -> Target {
        let root_device = f.bundle.with_file_name("root-b.dev");
        let dev = std::fs::File::create(&root_device).unwrap();
        dev.set_len(device_bytes).unwrap();
        Target {
            slot: Slot::B,
            root_device,
            esp: f.bundle.with_file_name("esp"),
        }
    }

    #[test]
    fn the_root_image_and_the_slots_uki_are_written_and_read_back() {
        let f = fixture();
        let b = open(&f, &f.bundle, "x86_64-uefi").unwrap();
        let t = target(&f, 1 << 20);
        let mut last = (0, 0);
        install(&b, &t, |done, total| last = (done, total)).unwrap();
        let p = payloads();
        let dev = std::fs::read(&t.root_device).unwrap();
        assert_eq!(dev.len(), 1 << 20, "the device keeps its size");
        assert_eq!(&dev[..p[0].1.len()], &p[0].1[..]);
        assert_eq!(std::fs::read(t.uki_path()).unwrap(), p[2].1, "slot b's UKI");
        assert!(t.uki_path().ends_with("EFI/rackboot/rackboot-b.efi"));
        assert_eq!(last.0, last.1, "progress reaches the total");
        let leftovers: Vec<_> = std::fs::read_dir(t.esp.join("EFI/rackboot"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    fn a_slot_too_small_is_refused_before_anything_is_written() {
        let f = fixture();
        let b = open(&f, &f.bundle, "x86_64-uefi").unwrap();
        let t = target(&f, 4096 * 10);
        std::fs::write(&t.root_device, vec![0xa5u8; 4096 * 10]).unwrap();
        assert!(install(&b, &t, |_, _| {}).is_err());
        assert!(
            std::fs::read(&t.root_device)
                .unwrap()
                .iter()
                .all(|&x| x == 0xa5),
            "the slot was touched"
        );
        assert!(!t.uki_path().exists());
    }

    #[test]
    fn a_bundle_changed_after_verification_leaves_an_invalid_slot_and_no_uki() {
        let f = fixture();
        let b = open(&f, &f.bundle, "x86_64-uefi").unwrap();
        // Someone rewrites a byte of root.img in the bundle file between check and install.
        let mut bytes = std::fs::read(&f.bundle).unwrap();
        let p = payloads();
        let at = bytes
            .windows(64)
            .position(|w| w == &p[0].1[..64])
            .expect("root.img is in the bundle");
        bytes[at + 100_000] ^= 0xff;
        std::fs::write(&f.bundle, bytes).unwrap();
        let t = target(&f, 1 << 20);
        let err = install(&b, &t, |_, _| {}).unwrap_err();
        assert!(
            matches!(&err, Refused::PayloadMismatch { name, .. } if name == "root.img"),
            "{err}"
        );
        let dev = std::fs::read(&t.root_device).unwrap();
        assert!(dev[..4096].iter().all(|&x| x == 0), "block 0 is not zeroed");
        assert!(!t.uki_path().exists(), "a UKI was installed");
    }

    #[test]
    fn the_booted_slot_comes_from_the_signed_command_line() {
        assert_eq!(
            Slot::from_cmdline("console=ttyS0 rackboot.slot=b rackboot.roothash=ab"),
            Some(Slot::B)
        );
        assert_eq!(Slot::from_cmdline("rackboot.slot=c"), None);
        assert_eq!(Slot::from_cmdline("quiet"), None);
        assert_eq!(Slot::A.other(), Slot::B);
    }
}

#[test]
fn the_store_migration_is_guarded_on_a_trial_boot_and_after_a_failed_one() {
    use super::install::Slot;
    use super::state::{Failure, Pending, State, migration_mode};
    use crate::store::Migration;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cmdline = dir.path().join("cmdline");
    let boot =
        |slot: &str| std::fs::write(&cmdline, format!("quiet rackboot.slot={slot}\n")).unwrap();
    let pending = |stage: &str, failed: Option<&str>| Pending {
        slot: Slot::B,
        version: "0.2.0".into(),
        stage: stage.into(),
        at: "2026-12-03T00:00:00Z".into(),
        failed: failed.map(str::to_owned),
        reboot_at: None,
    };

    // Not an appliance boot, or no update: plain.
    std::fs::write(&cmdline, "quiet\n").unwrap();
    assert_eq!(migration_mode(&data, &cmdline), Migration::Plain);
    boot("a");
    assert_eq!(migration_mode(&data, &cmdline), Migration::Plain);

    let mut st = State {
        pending: Some(pending("writing", None)),
        ..State::default()
    };
    st.save(&data).unwrap();
    assert_eq!(migration_mode(&data, &cmdline), Migration::Plain);

    // Installed, on trial in slot b: copy before migrating.
    st.pending = Some(pending("trial", None));
    st.save(&data).unwrap();
    boot("b");
    assert_eq!(migration_mode(&data, &cmdline), Migration::Trial);
    // Slot a came back instead: the trial failed.
    boot("a");
    assert_eq!(migration_mode(&data, &cmdline), Migration::RolledBack);
    // The trial recorded its own failure before resetting: not a trial any more.
    st.pending = Some(pending("trial", Some("health check failed")));
    st.save(&data).unwrap();
    boot("b");
    assert_eq!(migration_mode(&data, &cmdline), Migration::RolledBack);
    // boot-check already turned it into the last failure.
    st.pending = None;
    st.last_failure = Some(Failure {
        slot: Slot::B,
        version: "0.2.0".into(),
        reason: "health check failed".into(),
        at: "2026-12-03T00:00:00Z".into(),
    });
    st.save(&data).unwrap();
    boot("a");
    assert_eq!(migration_mode(&data, &cmdline), Migration::RolledBack);
    // A damaged state file is a plain boot, not a failed start.
    std::fs::write(State::path(&data), b"{").unwrap();
    assert_eq!(migration_mode(&data, &cmdline), Migration::Plain);
}

#[test]
fn the_rollback_floor_compares_releases_not_strings() {
    use super::cli::refuse_downgrade;
    let running = "0.10.0 (commit 0123abc, tree clean)";
    for newer_or_same in [
        "0.10.0",
        "0.10.1",
        "0.11.0 (commit fff, tree dirty)",
        "1.0.0",
        "0.10.0-rc1",
    ] {
        assert!(
            refuse_downgrade(newer_or_same, running).is_ok(),
            "{newer_or_same}"
        );
    }
    for older in ["0.9.9", "0.2.0", "0.9.10 (commit 1, tree clean)"] {
        let e = refuse_downgrade(older, running).unwrap_err().to_string();
        assert!(
            e.contains("older than the running") && e.contains("--allow-downgrade"),
            "{e}"
        );
    }
    for odd in ["", "latest", "1.2", "1.2.3.4", "v1.2.3"] {
        let e = refuse_downgrade(odd, running).unwrap_err().to_string();
        assert!(e.contains("cannot compare"), "{odd}: {e}");
    }
}

#[test]
fn a_trial_whose_rackboot_could_not_run_is_reported_with_the_boot_scripts_reason() {
    use super::cli::{BootCheckArgs, SystemArgs, boot_check};
    use super::install::Slot;
    use super::state::{Pending, State};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cmdline = dir.path().join("cmdline");
    let args = || BootCheckArgs {
        failed: None,
        no_reboot: true,
        system: SystemArgs {
            data_dir: data.clone(),
            cmdline: cmdline.clone(),
            disk: None,
            slot_device: None,
            esp: dir.path().join("esp"),
            efivars: dir.path().join("efivars"),
        },
    };
    let st = State {
        pending: Some(Pending {
            slot: Slot::B,
            version: "0.2.0 broken-test-build".into(),
            stage: "trial".into(),
            at: "2026-12-03T00:00:00Z".into(),
            failed: None,
            reboot_at: None,
        }),
        ..State::default()
    };
    st.save(&data).unwrap();
    // Slot b's boot scripts left their note and reset; the firmware booted slot a.
    let note = "slot b: rackboot did not answer within 120 s, and rackboot could not run its boot check (exit 70)";
    std::fs::write(data.join("update/unhealthy-boot"), format!("{note}\n")).unwrap();
    std::fs::write(&cmdline, "quiet rackboot.slot=a\n").unwrap();
    boot_check(args()).unwrap();
    let st = State::load(&data).unwrap();
    assert!(st.pending.is_none());
    assert_eq!(st.slot(Slot::B).unwrap().state, "failed");
    let failure = st.last_failure.unwrap();
    assert_eq!((failure.slot, failure.reason.as_str()), (Slot::B, note));
    // Consumed: the scripts may reset once more after a later failure.
    assert!(!data.join("update/unhealthy-boot").exists());
}
