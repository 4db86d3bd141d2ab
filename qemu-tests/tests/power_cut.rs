//! Power cuts of the appliance VM (issue 15): the QEMU process is killed with SIGKILL (the VM's
//! power cord) at a random moment while one of four writes runs, 20 times, on one disk and one
//! firmware variable store. After each cut, before the appliance boots again, the data
//! partition is read from the disk image as a new boot would find it (ext4 journal replayed by
//! e2fsck on a copy; SQLite's WAL applied when the copy is opened) and checked:
//! - SQLite's `integrity_check` passes;
//! - every DHCP lease ACKed before the cut (the load's ACK log) is in the store, with its address;
//! - every image the store names has its whole blob, with the recorded size and SHA-256 (an
//!   import cut short leaves nothing under its name);
//! - the cloud-init group holds at least the last revision whose PUT was answered.
//!
//! Then the appliance boots again (an update cut while writing the other slot must leave the
//! running one bootable) and the next cut comes.
//!
//! The disk is a raw file with QEMU's default `cache=writeback`, which honours the guest's
//! flushes (a FLUSH becomes `fdatasync` on the image). SIGKILL loses everything the guest had not
//! yet written to its virtual disk (its page cache, the ext4 journal not yet committed, SQLite's
//! unsynced pages): that is the power cut the guest sees. What it does not model is a drive that
//! loses writes it had acknowledged but not flushed: those survive here in the host's page cache,
//! so the test shows that rackboot and the appliance order their writes and flushes before they
//! acknowledge, not that a particular drive keeps its promises.
//!
//! Long (about 20 boots under TCG): run by `cargo xtask test-long`, not by the main suite.
//! `RACKBOOT_POWER_CUTS` sets the number of cuts (default 20).

#[path = "support/appliance_vm.rs"]
mod vm;

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vm::*;

/// The rack network of this test: a /16, so the dynamic pool (its upper half) outlasts 20
/// cuts' worth of DHCP load.
const RACK: &str = "10.99.0.1/16";
/// The test's relay address on the rack bridge (giaddr): replies come back to it, on-link.
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 99, 255, 254);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

fn config() -> String {
    format!(
        "[appliance]\nrack_interface = \"eth0\"\nrack_address = \"{RACK}\"\n\
         management_interface = \"eth1\"\nmanagement_address = \"{MGMT_ADDR}/24\"\n"
    )
}

/// A small deterministic generator (the seed is printed, so a failing run can be repeated).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

// ---- the DHCP load: a relay agent doing DORA for new MACs, one after another ----

fn dhcp_packet(
    kind: u8,
    xid: u32,
    mac: [u8; 6],
    requested: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1;
    p[1] = 1;
    p[2] = 6;
    p[3] = 1;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[24..28].copy_from_slice(&RELAY.octets());
    p[28..34].copy_from_slice(&mac);
    p.extend_from_slice(&[99, 130, 83, 99, 53, 1, kind]);
    if let Some((ip, server)) = requested {
        p.extend_from_slice(&[50, 4]);
        p.extend_from_slice(&ip.octets());
        p.extend_from_slice(&[54, 4]);
        p.extend_from_slice(&server.octets());
    }
    p.push(255);
    p
}

/// (message type, yiaddr, server id) of a reply to `xid`.
fn parse_reply(b: &[u8], xid: u32) -> Option<(u8, Ipv4Addr, Option<Ipv4Addr>)> {
    if b.len() < 240
        || b[0] != 2
        || b[4..8] != xid.to_be_bytes()
        || b[236..240] != [99, 130, 83, 99]
    {
        return None;
    }
    let yiaddr = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
    let (mut kind, mut server) = (None, None);
    let mut i = 240;
    while i < b.len() {
        let code = b[i];
        if code == 255 {
            break;
        }
        if code == 0 {
            i += 1;
            continue;
        }
        let len = usize::from(*b.get(i + 1)?);
        let v = b.get(i + 2..i + 2 + len)?;
        match (code, len) {
            (53, 1) => kind = Some(v[0]),
            (54, 4) => server = Some(Ipv4Addr::new(v[0], v[1], v[2], v[3])),
            _ => {}
        }
        i += 2 + len;
    }
    Some((kind?, yiaddr, server))
}

/// Runs DORA exchanges from the test namespace until `stop`; every ACK goes into `acked`
/// (MAC → address) the moment it arrives. MACs start at `first`.
fn dhcp_load(
    netns: String,
    first: u32,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
) {
    let f = std::fs::File::open(format!("/var/run/netns/{netns}")).expect("netns");
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    let sock = UdpSocket::bind(SocketAddrV4::new(RELAY, 67)).expect("bind the relay port");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let to = SocketAddrV4::new(SERVER, 67);
    let mut buf = [0u8; 1500];
    let mut n = first;
    let exchange = |kind: u8, xid: u32, mac: [u8; 6], req, want: u8, buf: &mut [u8]| {
        sock.send_to(&dhcp_packet(kind, xid, mac, req), to).ok()?;
        for _ in 0..4 {
            let Ok((len, _)) = sock.recv_from(buf) else {
                return None;
            };
            if let Some((k, ip, server)) = parse_reply(&buf[..len], xid)
                && k == want
            {
                return Some((ip, server));
            }
        }
        None
    };
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let mac = [
            0x02,
            0x99,
            (n >> 24) as u8,
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
        ];
        let xid = n.wrapping_mul(2_654_435_761);
        let Some((ip, server)) = exchange(1, xid, mac, None, 2, &mut buf) else {
            continue;
        };
        let Some((ip, _)) = exchange(
            3,
            xid,
            mac,
            Some((ip, server.unwrap_or(SERVER))),
            5,
            &mut buf,
        ) else {
            continue;
        };
        let mac = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        acked.lock().unwrap().insert(mac, ip.to_string());
    }
}

// ---- reading the data partition as the next boot will find it ----

/// The first and last sector of the GPT partition named `name`.
fn partition(disk: &Path, name: &str) -> (u64, u64) {
    let out = sh(Command::new("sgdisk").arg("-p").arg(disk)).expect("sgdisk -p");
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 7 && f.last() == Some(&name) && f[0].parse::<u32>().is_ok() {
            return (f[1].parse().unwrap(), f[2].parse().unwrap());
        }
    }
    panic!("no partition {name} on {}:\n{out}", disk.display());
}

struct Snapshot {
    _dir: tempfile::TempDir,
    fs: PathBuf,
    db: PathBuf,
}

/// Copies the data partition out of the (powered-off) disk, replays its journal, and dumps
/// rackboot's database (with its WAL) from it.
fn snapshot(disk: &Path) -> Snapshot {
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("data.ext4");
    let (first, last) = partition(disk, "data");
    let mut src = std::fs::File::open(disk).unwrap();
    src.seek(SeekFrom::Start(first * 512)).unwrap();
    let mut out = std::fs::File::create(&fs).unwrap();
    std::io::copy(&mut (&mut src).take((last - first + 1) * 512), &mut out).unwrap();
    out.flush().unwrap();
    drop(out);
    let fsck = Command::new("e2fsck")
        .arg("-fy")
        .arg(&fs)
        .output()
        .expect("e2fsck");
    // 0: clean; 1: fixed (a journal replayed after a cut counts). More is a damaged fs.
    assert!(
        matches!(fsck.status.code(), Some(0 | 1)),
        "the data partition is damaged: {}\n{}",
        fsck.status,
        String::from_utf8_lossy(&fsck.stdout)
    );
    let db = dir.path().join("rackboot.db");
    for file in ["rackboot.db", "rackboot.db-wal"] {
        let _ = debugfs(
            &fs,
            &format!("dump /rackboot/{file} {}", dir.path().join(file).display()),
        );
    }
    assert!(db.exists(), "no rackboot.db on the data partition");
    Snapshot { _dir: dir, fs, db }
}

fn debugfs(fs: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(fs)
        .output()
        .expect("debugfs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What one cut is checked against.
#[derive(Default)]
struct Expected {
    leases: BTreeMap<String, String>,
    /// The last cloud-init revision whose PUT was answered.
    cloud_init_rev: u64,
    /// Images whose import was answered: name → (size, sha256).
    images: BTreeMap<String, (u64, String)>,
}

fn check(snap: &Snapshot, want: &Expected, cut: u32) {
    let conn = rusqlite::Connection::open(&snap.db).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "cut {cut}: SQLite integrity_check");

    let mut stored = BTreeMap::new();
    let mut q = conn.prepare("SELECT mac, ip FROM leases").unwrap();
    for row in q
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
    {
        let (mac, ip) = row.unwrap();
        stored.insert(mac.to_lowercase(), ip);
    }
    for (mac, ip) in &want.leases {
        assert_eq!(
            stored.get(mac),
            Some(ip),
            "cut {cut}: the lease ACKed to {mac} ({ip}) is not in the store"
        );
    }

    // Every image the store names is whole; every answered import is there.
    let mut q = conn
        .prepare("SELECT name, sha256, size FROM images")
        .unwrap();
    let rows: Vec<(String, String, i64)> = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let blobs = tempfile::tempdir().unwrap();
    for (name, sha, size) in &rows {
        let out = blobs.path().join(sha);
        debugfs(
            &snap.fs,
            &format!("dump /rackboot/images/sha256/{sha} {}", out.display()),
        );
        let bytes = std::fs::read(&out)
            .unwrap_or_else(|_| panic!("cut {cut}: image {name} names a blob that is not there"));
        assert_eq!(
            bytes.len() as i64,
            *size,
            "cut {cut}: image {name}'s blob is cut short"
        );
        assert_eq!(
            &sha256_hex(&bytes),
            sha,
            "cut {cut}: image {name}'s blob does not match"
        );
    }
    for (name, (size, sha)) in &want.images {
        assert!(
            rows.iter()
                .any(|(n, s, z)| n == name && s == sha && *z as u64 == *size),
            "cut {cut}: the acknowledged import {name} is not in the store"
        );
    }

    if want.cloud_init_rev > 0 {
        let doc: String = conn
            .query_row(
                "SELECT doc FROM cloud_init WHERE kind = 'group' AND key = 'powercut'",
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("cut {cut}: the cloud-init group is gone: {e}"));
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        let rev = v["meta-data"]["rev"].as_u64().unwrap_or(0);
        assert!(
            rev >= want.cloud_init_rev,
            "cut {cut}: cloud-init revision {rev} stored, {} was acknowledged",
            want.cloud_init_rev
        );
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b");
    std::fs::write(&f, bytes).unwrap();
    let out = sh(Command::new("sha256sum").arg(&f)).expect("sha256sum");
    out.split_whitespace().next().unwrap_or_default().to_owned()
}

// ---- the writes that run while the power goes ----

#[derive(Clone, Copy, Debug)]
enum Load {
    DhcpStorm,
    ImageImport,
    CloudInit,
    Update,
}

const LOADS: [Load; 4] = [
    Load::DhcpStorm,
    Load::ImageImport,
    Load::CloudInit,
    Load::Update,
];

#[test]
#[ignore = "long (about 20 appliance boots): left out of plain `cargo test`; `cargo xtask test` (CI) runs it with --run-ignored all"]
fn power_cuts_lose_nothing_acknowledged_and_the_appliance_always_boots() {
    if !preflight() || !qemu_tests::preflight_with(false, &["e2fsck", "debugfs", "sgdisk"]) {
        return;
    }
    let cuts: u32 = std::env::var("RACKBOOT_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = std::env::var("RACKBOOT_POWER_CUT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("power cuts: {cuts}, seed {seed} (RACKBOOT_POWER_CUT_SEED repeats this run)");
    let mut rng = Rng(seed);

    let ns = network("pcut").expect("test network");
    ns.ip(&["addr", "add", &format!("{RELAY}/16"), "dev", "br0"])
        .unwrap();
    let disk = Disk::new().expect("disk copy");
    disk.grow(384).expect("grow the disk");
    let work = tempfile::tempdir().unwrap();
    let conf = work.path().join("rackboot.toml");
    std::fs::write(&conf, config()).unwrap();
    disk.put_on_esp(&conf, "::/rackboot.toml").unwrap();
    let nvram = tempfile::tempdir().unwrap();
    let vars = enrolled_vars(nvram.path()).expect("OVMF vars");
    let bundle = image_dir().join("rackboot-update.rbu");
    // The image to import: 64 MiB of pseudo-random bytes, so an import takes long enough to be cut.
    let blob = work.path().join("blob.img");
    {
        let mut r = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
        let bytes: Vec<u8> = (0..64 << 20).map(|_| r.next() as u8).collect();
        std::fs::write(&blob, &bytes).unwrap();
    }
    let blob_sha = sha256_hex(&std::fs::read(&blob).unwrap());
    let blob_size = std::fs::metadata(&blob).unwrap().len();

    let mut want = Expected::default();
    let mut token = String::new();
    let mut mac_base = 0u32;
    for cut in 0..=cuts {
        let mut vm = Appliance::boot_with_vars(&ns, &disk, &vars, tempfile::tempdir().unwrap())
            .expect("start the appliance VM");
        wait_ready(&ns, &mut vm).unwrap_or_else(|e| panic!("boot after cut {cut}: {e:#}"));
        if cut == 0 {
            token = admin_token(&vm.console_text());
        }
        // The appliance came up from the running slot, whatever the last cut interrupted.
        let (code, st) = http(
            &ns,
            "GET",
            &format!("http://{MGMT_ADDR}/rackboot/v1/appliance"),
            Some(&token),
            None,
        )
        .unwrap();
        assert_eq!(code, 200, "after cut {cut}: {st}");
        if cut == cuts {
            break;
        }

        let load = LOADS[(cut as usize) % LOADS.len()];
        // An import of 64 MiB takes a few seconds: cut it early enough to land inside.
        let delay = Duration::from_millis(match load {
            Load::ImageImport => rng.between(300, 2_500),
            _ => rng.between(1_000, 8_000),
        });
        eprintln!("cut {}: {load:?}, power off after {delay:?}", cut + 1);
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (stop, ns_name, token) = (stop.clone(), ns.name.clone(), token.clone());
            let acked = Arc::new(Mutex::new(BTreeMap::new()));
            let (blob, blob_sha, bundle) = (blob.clone(), blob_sha.clone(), bundle.clone());
            let rev0 = want.cloud_init_rev;
            let name = format!("import-{cut}");
            mac_base += 100_000;
            let first = mac_base;
            std::thread::spawn(move || -> Expected {
                let mut got = Expected::default();
                let curl = |args: &[&str]| -> Option<u16> {
                    let out = Command::new("ip")
                        .args([
                            "netns",
                            "exec",
                            &ns_name,
                            "curl",
                            "-s",
                            "-o",
                            "/dev/null",
                            "-w",
                            "%{http_code}",
                        ])
                        // A dead appliance does not answer: give up soon (a stalled transfer,
                        // a connection never made), not after the whole budget.
                        .args([
                            "-m",
                            "300",
                            "--connect-timeout",
                            "3",
                            "--speed-limit",
                            "1",
                            "--speed-time",
                            "10",
                        ])
                        .args(["-H", &format!("Authorization: Bearer {token}")])
                        .args(args)
                        .output()
                        .ok()?;
                    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
                };
                match load {
                    Load::DhcpStorm => {
                        dhcp_load(ns_name.clone(), first, stop.clone(), acked.clone());
                        got.leases = acked.lock().unwrap().clone();
                    }
                    Load::ImageImport => {
                        let url = format!(
                            "http://{MGMT_ADDR}/rackboot/v1/images/{name}?sha256={blob_sha}"
                        );
                        if curl(&["-X", "PUT", "-T", blob.to_str().unwrap(), &url])
                            .is_some_and(|c| c / 100 == 2)
                        {
                            got.images.insert(name, (blob_size, blob_sha));
                        }
                    }
                    Load::CloudInit => {
                        let mut rev = rev0;
                        while !stop.load(Ordering::Relaxed) {
                            let body = serde_json::json!({
                                "name": "powercut", "priority": 5,
                                "meta-data": {"rev": rev + 1},
                                "file": {"content": format!("#cloud-config\nwrite_files: [{{path: /etc/rev, content: \"{}\"}}]\n", rev + 1)},
                            })
                            .to_string();
                            let url =
                                format!("http://{MGMT_ADDR}/cloud-init/admin/groups/powercut");
                            match curl(&[
                                "-X",
                                "PUT",
                                "-H",
                                "Content-Type: application/json",
                                "--data-binary",
                                &body,
                                &url,
                            ]) {
                                Some(200) => rev += 1,
                                _ => break,
                            }
                        }
                        got.cloud_init_rev = rev;
                    }
                    Load::Update => {
                        let url =
                            format!("http://{MGMT_ADDR}/rackboot/v1/appliance/update?reboot=never");
                        let code = curl(&["-X", "PUT", "-T", bundle.to_str().unwrap(), &url]);
                        eprintln!("update answered: {code:?} (none: cut before it finished)");
                    }
                }
                got
            })
        };
        std::thread::sleep(delay);
        drop(vm); // SIGKILL: the power cord
        stop.store(true, Ordering::Relaxed);
        let got = worker.join().expect("load thread");
        eprintln!(
            "cut {}: {} leases ACKed, cloud-init rev {}, {} imports answered",
            cut + 1,
            got.leases.len(),
            got.cloud_init_rev,
            got.images.len()
        );
        want.leases.extend(got.leases);
        want.cloud_init_rev = want.cloud_init_rev.max(got.cloud_init_rev);
        want.images.extend(got.images);
        check(&snapshot(&disk.path()), &want, cut + 1);
    }
}
