//! A full data partition (docs/runbook-disk-full.md): with rackboot's data dir on a small tmpfs
//! filled to the last byte, an inventory node still PXE-boots, unknown clients get OFFERs but no
//! ACKs, the API answers 507 naming the data dir, `rackboot status` says full and an image import
//! is refused. Once the space is freed, clients are ACKed again, the status says ok, and no lease
//! ACKed before the disk filled is lost (also across a kill -9).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use qemu_tests::{Firmware, Netns, PerfdhcpStats, Qemu, Rackboot, field, preflight_with};

const BOOT_TIMEOUT: Duration = Duration::from_secs(400);

/// A tmpfs mounted on a temp dir for the length of the test.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(ok.success(), "cannot mount a tmpfs");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes zeros into `filler` until the filesystem refuses (ENOSPC).
    fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        // dd exits non-zero at ENOSPC: that is the point.
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", filler.display()))
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(free_bytes(self.path()), 0, "the filesystem is not full");
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn free_bytes(p: &Path) -> u64 {
    let out = Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(p)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    it.next().unwrap() * it.next().unwrap()
}

/// A perfdhcp run (relay mode, `n` new clients from MAC base `base`).
fn perfdhcp(client: &Netns, base: &str, n: u32) -> (PerfdhcpStats, String) {
    let n = n.to_string();
    let out = client
        .cmd("perfdhcp")
        .args(["-4", "-l", "192.0.2.10", "-r", "50", "-R", &n, "-n", &n])
        .args(["-b", &format!("mac={base}"), "-W", "2000000", "192.0.2.1"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let st = PerfdhcpStats::parse(&text).unwrap_or_else(|| panic!("no perfdhcp report:\n{text}"));
    (st, text)
}

/// (mac, ip) of every stored lease.
fn leases(rb: &Rackboot) -> BTreeSet<(String, String)> {
    let (code, body) = rb.http("GET", "/rackboot/v1/leases", None).unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v.as_array()
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

fn store_state(rb: &Rackboot) -> serde_json::Value {
    let (code, body) = rb.http("GET", "/rackboot/v1/status", None).unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["store"].clone()
}

#[test]
fn full_data_partition_keeps_inventory_nodes_booting_and_recovers() {
    if !preflight_with(true, &["perfdhcp", "dd", "stat", "mount"]) {
        return;
    }
    let fs = Tmpfs::mount("96m");
    let data_dir = tempfile::tempdir_in(fs.path()).unwrap();
    let data_path = data_dir.path().to_path_buf();
    let mut ns = Netns::new("full").unwrap();
    // The log stays off the full partition, as /var/log would on a real host.
    let logs = tempfile::tempdir().unwrap();
    let rb = Rackboot::start_in_dir(
        &ns,
        data_dir,
        logs.path().join("rackboot.log"),
        &[("RACKBOOT_STORE__MIN_FREE", "1MiB")],
    )
    .unwrap();
    rb.import_node_images().unwrap();
    let (mac, ip, xname) = ("52:54:00:dd:00:01", "192.0.2.61", "x1000c0s6b0n0");
    rb.register_node(xname, 61, mac, ip).unwrap();
    let client = ns.add_client_ns().unwrap();
    client
        .ip(&["addr", "add", "192.0.2.10/24", "dev", "vc"])
        .unwrap();

    // Before: 40 dynamic clients leased and stored.
    let (st, text) = perfdhcp(&client, "00:0c:01:00:00:00", 40);
    assert!(st.acks >= 38, "{text}");
    let before = leases(&rb);
    assert!(before.len() >= 38, "{before:?}");
    assert_eq!(store_state(&rb)["state"], "ok");

    // Fill the partition, then write through the API until the store refuses (the WAL may
    // have a little room left in its last page): that refusal is a 507 naming the data dir.
    let filler = fs.fill();
    let mut refused = None;
    for i in 0..50 {
        let body = format!(
            r#"{{"Components":[{{"ID":"x1000c0s9b0n{i}","Type":"Node","State":"Ready","Enabled":true}}]}}"#
        );
        let (code, resp) = rb
            .http("POST", "/hsm/v2/State/Components", Some(&body))
            .unwrap();
        if code == 507 {
            refused = Some(resp);
            break;
        }
        assert_eq!(code, 204, "{resp}");
    }
    let problem: serde_json::Value =
        serde_json::from_str(&refused.expect("the API never answered 507 on a full disk")).unwrap();
    assert_eq!(problem["status"], 507);
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(&data_path.display().to_string()),
        "{detail}"
    );
    assert!(detail.contains("bytes free"), "{detail}");

    let store = store_state(&rb);
    assert_eq!(store["state"], "full", "{store}");
    assert_eq!(store["free_bytes"], 0, "{store}");
    let (ok, status) = rb.cli(&ns, &["status"], None);
    assert!(ok, "{status}");
    assert!(status.contains("store: FULL"), "{status}");

    // An image import is refused, clearly, and leaves no half image under its name.
    let img = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(img.path(), vec![7u8; 256 * 1024]).unwrap();
    let (ok, out) = rb.cli(
        &ns,
        &[
            "image",
            "import",
            "late-image",
            &img.path().display().to_string(),
        ],
        None,
    );
    assert!(!ok, "an import on a full disk must fail: {out}");
    assert!(out.contains("free"), "{out}");
    let (code, _) = rb.http("GET", "/images/late-image", None).unwrap();
    assert_eq!(code, 404);

    // The inventory node boots: its static ACKs go out although nothing can be stored.
    let mut vm = Qemu::start(&mut ns, Firmware::SeaBiosIpxe, mac).unwrap();
    let line = match vm.wait_for("RACKBOOT-NODE-UP", BOOT_TIMEOUT) {
        Ok(l) => l,
        Err(e) => panic!("{e:#}\n---- rackboot log ----\n{}", rb.log_text()),
    };
    assert_eq!(field(&line, "ip"), Some(ip), "{line}");
    drop(vm);

    // Unknown clients: OFFERs, but no ACK for a lease that cannot be made durable.
    let (st, text) = perfdhcp(&client, "00:0c:02:00:00:00", 20);
    assert!(st.offers >= 1, "{text}");
    assert_eq!(st.acks, 0, "no dynamic ACK while the store is full\n{text}");

    // One ERROR line for the whole episode, not one per packet.
    let log = rb.log_text();
    assert_eq!(
        log.matches("the data partition is full;").count(),
        1,
        "exactly one 'store full' error line:\n{log}"
    );

    // Free the space: rackboot notices by itself.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store_state(&rb)["state"] != "ok" {
        assert!(
            Instant::now() < deadline,
            "the store never recovered:\n{}",
            rb.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(rb.log_text().contains("store: writes are stored again"));
    let (ok, status) = rb.cli(&ns, &["status"], None);
    assert!(ok && status.contains("store: ok"), "{status}");

    let (st, text) = perfdhcp(&client, "00:0c:03:00:00:00", 40);
    assert!(st.acks >= 38, "clients are ACKed again\n{text}");

    // Nothing ACKed before the disk filled is lost, also across a kill -9.
    let after = leases(&rb);
    assert!(
        before.is_subset(&after),
        "lost leases: {:?}",
        before.difference(&after)
    );
    let rb = rb.kill9_and_restart(&ns).unwrap();
    let restarted = leases(&rb);
    assert!(
        before.is_subset(&restarted),
        "lost leases after kill -9: {:?}",
        before.difference(&restarted)
    );
}

/// An unrotated log fills the partition too: rackboot's log writes then fail with ENOSPC, and
/// that must cost the log lines, not the service. stderr is /dev/full here (every write fails),
/// and rackboot still starts and leases to 40 clients, whose every packet is logged at debug.
#[test]
fn a_log_that_cannot_be_written_does_not_stop_rackboot() {
    if !preflight_with(false, &["perfdhcp"]) {
        return;
    }
    let ns = Netns::new("devfull").unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut child = ns
        .cmd(qemu_tests::rackboot_bin().unwrap().to_str().unwrap())
        .args(["serve", "--interface", "br0", "--data-dir"])
        .arg(data_dir.path())
        .args(["--ipxe-dir", "/usr/lib/ipxe"])
        .env("RACKBOOT_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(full)
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(&mut child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = ns
            .cmd("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5"])
            .arg("http://192.0.2.1/boot/v1/service/status")
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout) == "200" {
            break;
        }
        assert!(
            guard.0.try_wait().unwrap().is_none(),
            "rackboot exited while its log could not be written"
        );
        assert!(Instant::now() < deadline, "rackboot never became ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    let client = ns.add_client_ns().unwrap();
    client
        .ip(&["addr", "add", "192.0.2.10/24", "dev", "vc"])
        .unwrap();
    let (st, text) = perfdhcp(&client, "00:0c:04:00:00:00", 40);
    assert!(st.acks >= 38, "{text}");
    assert!(guard.0.try_wait().unwrap().is_none(), "rackboot died");
}
