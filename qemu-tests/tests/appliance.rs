//! The appliance image (`cargo xtask image appliance`, build/appliance/) booted the way a rack
//! would run it: OVMF with Secure Boot and the build's keys enrolled, the disk image as its
//! only disk, one NIC on a rack bridge and one on a management bridge, in a namespace.
//!
//! What each test proves is in docs/appliance.md (the hardening table names these tests).

#[path = "support/appliance_vm.rs"]
mod vm;

use std::fs;
use std::path::Path;
use std::process::Command;

use qemu_tests::Netns;
use vm::*;

/// Open ports nmap finds on `addr` from the test namespace: TCP over all ports, UDP over the
/// usual service ports (a full UDP scan takes hours against ICMP rate limits).
fn open_ports(ns: &Netns, addr: &str) -> anyhow::Result<Vec<String>> {
    let tcp = sh(ns.cmd("nmap").args([
        "-Pn",
        "-n",
        "-sS",
        "-p-",
        "-T4",
        "--max-retries",
        "2",
        "-oG",
        "-",
        addr,
    ]))?;
    // One probe a second: Linux answers a closed UDP port with ICMP port-unreachable at most
    // once a second per peer (icmp_ratelimit), and a probe left unanswered reads as
    // "open|filtered". Paced like this, open|filtered means a socket is there.
    let udp = sh(ns.cmd("nmap").args([
        "-Pn",
        "-n",
        "-sU",
        "-p",
        "53,67,68,69,123,161,514,547,623,4011,5353",
        "--scan-delay",
        "1100ms",
        "--max-retries",
        "2",
        "-oG",
        "-",
        addr,
    ]))?;
    let mut open = Vec::new();
    for out in [tcp, udp] {
        for line in out.lines().filter(|l| l.contains("Ports:")) {
            let ports = line.split("Ports:").nth(1).unwrap_or("");
            for p in ports.split(',') {
                // `67/open|filtered/udp//dhcps///`: a closed UDP port answers ICMP unreachable;
                // open|filtered means something may listen, so it counts as reachable.
                let parts: Vec<&str> = p.trim().split('/').collect();
                if let [port, state, proto, ..] = parts.as_slice()
                    && state.starts_with("open")
                {
                    open.push(format!("{port}/{proto}"));
                }
            }
        }
    }
    open.sort();
    Ok(open)
}

#[test]
fn appliance_boots_under_secure_boot_hardened_and_serves_its_ports() {
    if !preflight() {
        return;
    }
    let mut ns = network("appl").expect("test network");
    let disk = Disk::new().expect("disk copy");
    // A larger drive: the appliance grows its data partition over it on first boot (and the
    // nodes' initrd with the identity agent, a debug build of rackboot, needs the room).
    disk.grow(384).expect("grow the disk");
    let mut vm = Appliance::boot(&ns, &disk).expect("start the appliance VM");
    if let Err(e) = wait_ready(&ns, &mut vm) {
        panic!("the appliance did not come up: {e:#}");
    }
    let console = vm.console_text();

    // Secure Boot was on, and the kernel locked itself down.
    assert!(
        console.contains("Secure boot enabled"),
        "the kernel did not report Secure Boot"
    );
    assert_eq!(
        vm.report("lockdown").as_deref(),
        Some("none [integrity] confidentiality")
    );

    // Root: the squashfs on the dm-verity device, read-only.
    let root_mount = vm.report("root").unwrap_or_default();
    assert!(
        root_mount.starts_with("/dev/mapper/root,squashfs,ro")
            || root_mount.starts_with("/dev/dm-0,squashfs,ro"),
        "root is {root_mount}"
    );
    assert_eq!(
        vm.report("verity_uuid_prefix").as_deref(),
        Some("CRYPT-VERITY-")
    );

    // rackboot: not uid 0, exactly CAP_NET_BIND_SERVICE (bit 10) effective and permitted.
    let uid = vm.report("rackboot_uid").unwrap_or_default();
    assert!(!uid.is_empty() && uid != "0", "rackboot uid {uid}");
    assert_eq!(
        vm.report("rackboot_capeff").as_deref(),
        Some("0000000000000400")
    );
    assert_eq!(
        vm.report("rackboot_capprm").as_deref(),
        Some("0000000000000400")
    );
    assert_eq!(
        vm.report("rackboot_capinh").as_deref(),
        Some("0000000000000000")
    );
    assert_eq!(
        vm.report("rackboot_capamb").as_deref(),
        Some("0000000000000000")
    );

    // /data and /tmp: not executable, no devices, no setuid.
    for key in ["data", "tmp"] {
        let m = vm.report(key).unwrap_or_default();
        for opt in ["nosuid", "nodev", "noexec"] {
            assert!(m.split(',').any(|o| o == opt), "{key} mounted {m}");
        }
    }
    assert!(vm.report("data").unwrap_or_default().contains(",ext4,rw"));
    let data_mib: u64 = vm
        .report("data_partition_mib")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        data_mib >= 384,
        "the data partition was not grown over the larger disk: {data_mib} MiB"
    );
    // Nothing to build, install or log in with.
    assert_eq!(vm.report("forbidden_tools").as_deref(), Some(""));

    // sysctls.
    for (k, want) in [
        ("net.ipv4.ip_forward", "0"),
        ("net.ipv4.conf.all.rp_filter", "1"),
        ("net.ipv4.conf.all.accept_redirects", "0"),
        ("net.ipv4.conf.all.send_redirects", "0"),
        ("kernel.kptr_restrict", "2"),
        ("kernel.dmesg_restrict", "1"),
        // rackboot's DHCP socket gets the 4 MiB receive buffer it asks for.
        ("net.core.rmem_max", "4194304"),
    ] {
        assert_eq!(
            vm.report(&format!("sysctl.{k}")).as_deref(),
            Some(want),
            "{k}"
        );
    }
    // No console login without a maintenance password in rackboot.toml.
    assert_eq!(vm.report("getty").as_deref(), Some("none"));
    // No TPM in this VM: the keys are plain files on the data partition, and status says so
    // (appliance_tpm.rs boots one with a TPM).
    let keys = vm.report("keys").unwrap_or_default();
    assert!(
        keys.starts_with("not sealed (this machine has no TPM)"),
        "keys: {keys}"
    );

    // The admin token, printed once on first boot, works on the management NIC; no token, no API.
    let token = admin_token(&console);
    let components = format!("http://{MGMT_ADDR}/hsm/v2/State/Components");
    let (code, _) = http(&ns, "GET", &components, None, None).expect("curl");
    assert_eq!(code, 401, "the admin API answered without a token");
    let (code, body) = http(&ns, "GET", &components, Some(&token), None).expect("curl");
    assert_eq!(code, 200, "{body}");

    // Ports: rack network = rackboot's services only; management = the admin API only (its
    // DHCP client's 68/udp aside). No packet filter in the offline image: rackboot binds each
    // listener to its interface (--admin-interface).
    let rack = open_ports(&ns, RACK_ADDR).expect("nmap rack");
    // DNS (53, [dns], on by default on the rack address), DHCP, TFTP, HTTP, identity HTTPS.
    assert_eq!(
        rack,
        ["443/tcp", "53/tcp", "53/udp", "67/udp", "69/udp", "80/tcp"],
        "open on the rack network"
    );
    let mgmt = open_ports(&ns, MGMT_ADDR).expect("nmap management");
    for p in &mgmt {
        assert!(
            ["80/tcp", "68/udp"].contains(&p.as_str()),
            "unexpected port {p} open on the management network: {mgmt:?}"
        );
    }
    assert!(mgmt.contains(&"80/tcp".to_owned()), "{mgmt:?}");
    // The rack network's port 80 is the boot path alone: the admin API is not there, token or not.
    let (code, body) = http(
        &ns,
        "GET",
        &format!("http://{RACK_ADDR}/hsm/v2/State/Components"),
        Some(&token),
        None,
    )
    .expect("curl");
    assert_eq!(
        code, 404,
        "the admin API answered on the rack network: {body}"
    );

    // Nodes on the rack network PXE-boot from the appliance, registered and their kernel and
    // initrd imported through the admin API on the management NIC.
    pxe_boot_nodes(&mut ns, &token);
}

#[test]
fn maintenance_console_login_only_when_configured() {
    if !preflight() {
        return;
    }
    let ns = network("maint").expect("test network");
    let disk = Disk::new().expect("disk copy");
    let hash =
        sh(Command::new("openssl").args(["passwd", "-6", "-salt", "rackboottest", "maintenance"]))
            .expect("openssl passwd");
    let conf = disk.dir.path().join("maint.toml");
    fs::write(
        &conf,
        format!(
            "{}maintenance_password_hash = \"{}\"\n",
            test_config(),
            hash.trim()
        ),
    )
    .expect("write config");
    disk.put_on_esp(&conf, "::/rackboot.toml")
        .expect("config on the ESP");
    let mut vm = Appliance::boot(&ns, &disk).expect("start the appliance VM");
    vm.wait_for_any(&["rackboot-appliance: ready"], BOOT_DEADLINE)
        .expect("the appliance did not come up");
    assert!(
        vm.console_text()
            .contains("maintenance login enabled on the serial console"),
        "S11accounts did not take the hash"
    );
    vm.wait_for_any(&["login:"], BOOT_DEADLINE)
        .expect("no login prompt on the serial console with a maintenance password set");
}

/// Boots the same image with another EFI binary as \EFI\BOOT\BOOTX64.EFI; firmware must refuse.
fn refused_with(uki: &Path) {
    let ns = network("refuse").expect("test network");
    let disk = Disk::new().expect("disk copy");
    disk.put_on_esp(uki, "::/EFI/BOOT/BOOTX64.EFI")
        .expect("replace the UKI");
    let mut vm = Appliance::boot(&ns, &disk).expect("start the appliance VM");
    let line = vm
        .wait_for_any(
            &[
                "Access Denied",
                "Linux version",
                "rackboot-appliance: ready",
            ],
            BOOT_DEADLINE,
        )
        .expect("the firmware said nothing");
    assert!(
        line.contains("Access Denied"),
        "the firmware ran an EFI binary it must refuse: {line}"
    );
}

#[test]
fn unsigned_uki_is_refused() {
    if !preflight() {
        return;
    }
    refused_with(&image_dir().join("rackboot-a.unsigned.efi"));
}

#[test]
fn uki_signed_with_another_key_is_refused() {
    if !preflight() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, crt) = (dir.path().join("other.key"), dir.path().join("other.crt"));
    sh(Command::new("openssl")
        .args([
            "req", "-new", "-x509", "-newkey", "rsa:2048", "-sha256", "-days", "1",
        ])
        .args(["-nodes", "-subj", "/CN=not the rack's db key/", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt))
    .expect("openssl");
    let resigned = dir.path().join("resigned.efi");
    sh(Command::new("sbsign")
        .arg("--key")
        .arg(&key)
        .arg("--cert")
        .arg(&crt)
        .arg("--output")
        .arg(&resigned)
        .arg(image_dir().join("rackboot-a.unsigned.efi")))
    .expect("sbsign");
    refused_with(&resigned);
}

#[test]
fn tampered_root_slot_does_not_boot() {
    if !preflight() {
        return;
    }
    let ns = network("tamper").expect("test network");
    let disk = Disk::new().expect("disk copy");
    let start: u64 = image_env("root_slot_a_start_sector")
        .expect("appliance.env")
        .parse()
        .expect("sector");
    // Byte 8 of the squashfs superblock (its inode count): the first block mount reads.
    disk.flip_byte(start * 512 + 8).expect("flip");
    let mut vm = Appliance::boot(&ns, &disk).expect("start the appliance VM");
    let line = vm
        .wait_for_any(
            &[
                "rackboot-initramfs: FATAL",
                "dm-verity device corrupted",
                "Kernel panic",
                "rackboot-appliance: ready",
            ],
            BOOT_DEADLINE,
        )
        .expect("the appliance said nothing");
    assert!(
        !line.contains("rackboot-appliance: ready"),
        "a tampered root slot booted"
    );
    assert!(
        vm.console_text().contains("verity"),
        "the boot stopped, but not on dm-verity: {line}"
    );
}
