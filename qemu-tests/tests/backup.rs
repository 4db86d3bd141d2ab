//! Backup and recovery end to end: a backup taken with `rackboot backup create` while perfdhcp
//! storms the server, the server killed (-9, as a dead disk would), the backup restored into a
//! fresh data dir and a new rackboot started on it. Every lease stored before the backup is
//! back; a node's certificate from before verifies against the restored CA, renews and reads
//! its secret over mTLS; an admin token minted before works; a QEMU node boots from the
//! restored rackboot at its inventory address, enrolls and reads its secret (sealed before
//! the backup). The restored server's `[backup]` schedule then keeps `keep` archives.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qemu_tests::{Firmware, Netns, Qemu, Rackboot, agent_initrd, have, preflight, rackboot_bin};
use serde_json::Value;

/// Boots in QEMU after the restore.
const VM: (&str, &str, &str) = ("x1000c0s6b0n0", "52:54:00:bb:06:01", "192.0.2.56");
/// A node host in a namespace that enrolls before the backup.
const HOST: (&str, &str, &str) = ("x1000c0s6b0n1", "52:54:00:bb:06:02", "192.0.2.57");
const PASSPHRASE: &str = "rack one offline passphrase";

fn leases(rb: &Rackboot) -> BTreeMap<String, String> {
    let (code, body) = rb.http("GET", "/rackboot/v1/leases", None).unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["mac"].as_str().unwrap().to_owned(),
                l["ip"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Polls `f` until it is true (each poll is a real observation of the server), or panics
/// with `what` after a generous bound.
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn cmdline(rb: &Rackboot, mac: &str) -> String {
    let (code, script) = rb
        .http("GET", &format!("/boot/v1/bootscript?mac={mac}"), None)
        .unwrap();
    assert_eq!(code, 200, "{script}");
    script
        .lines()
        .find(|l| l.starts_with("kernel "))
        .unwrap_or_else(|| panic!("no kernel line: {script}"))
        .to_owned()
}

fn rackboot(args: &[&str]) -> (bool, String) {
    let out = Command::new(rackboot_bin().unwrap())
        .args(args)
        .env("RACKBOOT_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn openssl_verify(dir: &Path, ca: &str, leaf: &str) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(["verify", "-purpose", "sslclient", "-CAfile", ca, leaf])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn a_backup_taken_under_a_dhcp_storm_restores_a_working_rack() {
    if !preflight(true) || !have("perfdhcp") || !have("openssl") {
        return;
    }
    let mut ns = Netns::new("bkp").unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let bin = rackboot_bin().unwrap();
    let bin_s = bin.to_str().unwrap();
    rb.import_node_images().unwrap();
    rb.import_image("initrd.img", &agent_initrd(w).unwrap())
        .unwrap();
    rb.register_node(VM.0, 6, VM.1, VM.2).unwrap();
    rb.register_node(HOST.0, 7, HOST.1, HOST.2).unwrap();
    for (node, secret) in [(VM.0, "vm-secret-before-backup"), (HOST.0, "host-secret")] {
        let (ok, out) = rb.cli(
            &ns,
            &["secret", "set", "--node", node, "node-secret"],
            Some(secret),
        );
        assert!(ok, "{out}");
    }

    // The node host enrolls with the agent, as a node's initramfs does.
    let host = ns.add_client_ns().unwrap();
    host.ip(&["addr", "add", &format!("{}/24", HOST.2), "dev", "vc"])
        .unwrap();
    std::fs::write(w.join("cmdline"), cmdline(&rb, HOST.1)).unwrap();
    let id_dir = w.join("id");
    let agent = |args: &[&str]| {
        let mut all = args.to_vec();
        let (c, d) = (w.join("cmdline"), id_dir.clone());
        let (c, d) = (
            c.to_str().unwrap().to_owned(),
            d.to_str().unwrap().to_owned(),
        );
        all.extend(["--cmdline", &c, "--dir", &d]);
        qemu_tests::run_in(&host, bin_s, &all, &[], None).unwrap()
    };
    let (ok, out) = agent(&["agent", "enroll"]);
    assert!(ok, "{out}\n{}", rb.log_text());
    let old_leaf = std::fs::read_to_string(id_dir.join("cert.pem")).unwrap();
    let old_token = rb.mint_token(&bin, "30m").unwrap();

    // The storm: perfdhcp as a relay, 60 clients, renewing all the time (a write each). It
    // shares the host's namespace (the harness gives one client namespace); the host's
    // inventory address stays the primary one, which the agent's connections use.
    host.ip(&["addr", "add", "192.0.2.10/24", "dev", "vc"])
        .unwrap();
    let mut storm = host
        .cmd("perfdhcp")
        .args([
            "-4",
            "-l",
            "192.0.2.10",
            "-r",
            "100",
            "-R",
            "60",
            "-f",
            "100",
            "-W",
            "2000000",
            "192.0.2.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until("the storm has leases", || leases(&rb).len() >= 30);
    // Everything the API shows is committed (a lease is stored before its ACK is sent), so
    // every one of these must be in the backup taken next.
    let before = leases(&rb);

    let target = w.join("backups");
    let pass_file = w.join("passphrase");
    std::fs::write(&pass_file, format!("{PASSPHRASE}\n")).unwrap();
    let (ok, archive) = rackboot(&[
        "backup",
        "create",
        target.to_str().unwrap(),
        "--data-dir",
        rb.data_dir.path().to_str().unwrap(),
        "--passphrase-file",
        pass_file.to_str().unwrap(),
    ]);
    assert!(ok, "{archive}");
    let archive = archive.lines().next().unwrap().trim().to_owned();
    assert!(
        storm.try_wait().unwrap().is_none(),
        "the storm ended before the backup did"
    );
    let _ = storm.kill();
    let _ = storm.wait();
    let (ok, verified) = rackboot(&[
        "backup",
        "verify",
        &archive,
        "--passphrase-file",
        pass_file.to_str().unwrap(),
    ]);
    assert!(ok, "{verified}");
    for want in [
        "integrity:        ok",
        "rack CA key",
        "token issuer key",
        "initrd.img",
    ] {
        assert!(verified.contains(want), "{want} missing:\n{verified}");
    }

    // The appliance dies; a replacement restores the backup into a fresh data dir.
    let mut rb = rb;
    rb.kill();
    let fresh = tempfile::tempdir().unwrap();
    let (ok, out) = rackboot(&[
        "backup",
        "restore",
        &archive,
        "--data-dir",
        fresh.path().to_str().unwrap(),
        "--passphrase-file",
        pass_file.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let log = w.join("restored.log");
    let sched = w.join("scheduled");
    let sched_s = sched.to_str().unwrap().to_owned();
    let pass_s = pass_file.to_str().unwrap().to_owned();
    let rb2 = Rackboot::start_in_dir(
        &ns,
        fresh,
        log,
        &[
            ("RACKBOOT_BACKUP__DIR", sched_s.as_str()),
            ("RACKBOOT_BACKUP__INTERVAL", "1s"),
            ("RACKBOOT_BACKUP__KEEP", "2"),
            ("RACKBOOT_BACKUP__PASSPHRASE_FILE", pass_s.as_str()),
        ],
    )
    .unwrap();

    // Every lease committed before the backup is back, at the same address.
    let after = leases(&rb2);
    for (mac, ip) in &before {
        assert_eq!(after.get(mac), Some(ip), "lease of {mac} lost\n{after:?}");
    }

    // The admin token minted before the backup still works.
    let out = ns
        .cmd("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {old_token}"))
        .arg("http://192.0.2.1/hsm/v2/State/Components")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");

    // The certificate from before verifies against the restored CA, reads its secret over
    // mTLS, and renews.
    let (ok, ca) = rb2.cli(&ns, &["ca", "show", "--pem"], None);
    assert!(ok, "{ca}");
    std::fs::write(w.join("restored-ca.pem"), ca).unwrap();
    let leaf = old_leaf
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap();
    std::fs::write(w.join("old-leaf.pem"), leaf).unwrap();
    let v = openssl_verify(w, "restored-ca.pem", "old-leaf.pem");
    assert!(v.contains("old-leaf.pem: OK"), "{v}");
    let (ok, out) = agent(&["agent", "secret", "node-secret"]);
    assert!(
        ok && out.contains("host-secret"),
        "{out}\n{}",
        rb2.log_text()
    );
    let (ok, out) = agent(&["agent", "renew"]);
    assert!(ok, "{out}\n{}", rb2.log_text());
    assert_ne!(
        std::fs::read_to_string(id_dir.join("cert.pem")).unwrap(),
        old_leaf
    );
    let (ok, out) = agent(&["agent", "secret", "node-secret"]);
    assert!(ok && out.contains("host-secret"), "{out}");

    // A node boots from the restored rackboot at its inventory address, enrolls and reads the
    // secret sealed before the backup.
    let mut vm = Qemu::start(&mut ns, Firmware::SeaBiosIpxe, VM.1).unwrap();
    if let Err(e) = vm.wait_for("RACKBOOT-SECRET", Duration::from_secs(400)) {
        panic!(
            "{e}\n--- console ---\n{}\n--- log ---\n{}",
            vm.console(),
            rb2.log_text()
        );
    }
    let console = vm.console();
    assert!(
        console.contains("RACKBOOT-SECRET vm-secret-before-backup"),
        "{console}"
    );
    assert_eq!(leases(&rb2).get(VM.1).map(String::as_str), Some(VM.2));
    drop(vm);

    // The schedule: backups keep coming, and only the newest two are kept.
    until("three scheduled backups", || {
        rb2.log_text().matches("scheduled backup done").count() >= 3
    });
    let (_, metrics) = rb2.http("GET", "/metrics", None).unwrap();
    let stamp = metrics
        .lines()
        .find(|l| l.starts_with("rackboot_backup_last_success_timestamp_seconds"))
        .unwrap_or_else(|| panic!("no backup metric:\n{metrics}"));
    assert!(!stamp.ends_with(" 0"), "{stamp}");
    assert!(
        metrics.contains("rackboot_backup_failures_total 0"),
        "{metrics}"
    );
    // Counted under the target's lock, which a backup holds until it has pruned.
    let out = Command::new("flock")
        .arg(sched.join(".lock"))
        .args(["ls", "-1"])
        .arg(&sched)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    let archives = listing.lines().filter(|l| l.ends_with(".tar.age")).count();
    assert!(archives == 2, "{archives} archives kept:\n{listing}");
}
