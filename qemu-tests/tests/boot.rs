//! Real firmware PXE-boots from rackboot: one boot per firmware path, plus the unknown-node and
//! `autoexec.ipxe` paths.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use qemu_tests::{Firmware, Netns, Qemu, Rackboot, SERVER, field, preflight};

/// Under TCG a boot takes ~25–40 s; several run in parallel on two cores.
const BOOT_TIMEOUT: Duration = Duration::from_secs(400);

fn boot_inventory_node(fw: Firmware, tag: &str, mac: &str, ip: &str, xname: &str, nid: u32) {
    if !preflight(true) {
        return;
    }
    let mut ns = Netns::new(tag).unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    rb.import_node_images().unwrap();
    rb.register_node(xname, nid, mac, ip).unwrap();
    let mut vm = Qemu::start(&mut ns, fw, mac).unwrap();
    let line = match vm.wait_for("RACKBOOT-NODE-UP", BOOT_TIMEOUT) {
        Ok(l) => l,
        Err(e) => panic!("{fw:?}: {e:#}\n---- rackboot log ----\n{}", rb.log_text()),
    };
    assert_eq!(
        field(&line, "ip"),
        Some(ip),
        "{fw:?}: the node must get exactly its inventory IP: {line}"
    );
    assert_eq!(field(&line, "xname"), Some(xname), "{line}");
    assert_eq!(
        field(&line, "nid"),
        Some(nid.to_string().as_str()),
        "{line}"
    );
    assert_eq!(
        field(&line, "initrd"),
        Some("initrd"),
        "UEFI needs initrd=<name>: {line}"
    );
    let bootif = format!("01-{}", mac.replace(':', "-"));
    assert_eq!(field(&line, "BOOTIF"), Some(bootif.as_str()), "{line}");
    // The lease the node holds is recorded as static.
    let (code, leases) = rb.http("GET", "/rackboot/v1/leases", None).unwrap();
    assert_eq!(code, 200);
    assert!(
        leases.contains(mac) && leases.contains(ip) && leases.contains("static"),
        "{leases}"
    );
    let log = rb.log_text();
    match fw {
        Firmware::OvmfPxe => {
            assert!(
                log.contains("TFTP transfer complete"),
                "EDK2 PXE must TFTP iPXE:\n{log}"
            );
            // The timeline has the firmware's DHCP, the TFTP transfer, then iPXE, in one boot.
            let (_, t) = rb
                .http("GET", &format!("/rackboot/v1/nodes/{xname}/timeline"), None)
                .unwrap();
            let t: serde_json::Value = serde_json::from_str(&t).unwrap();
            let events = t["boots"][0]["events"].as_array().unwrap();
            let names: Vec<&str> = events
                .iter()
                .map(|e| e["stage"].as_str().unwrap())
                .collect();
            let pos = |s: &str| {
                names
                    .iter()
                    .position(|n| *n == s)
                    .unwrap_or_else(|| panic!("no {s}: {names:?}"))
            };
            assert!(pos("dhcp_discover") < pos("dhcp_ack"), "{names:?}");
            assert!(pos("dhcp_ack") < pos("tftp_start"), "{names:?}");
            assert!(pos("tftp_start") < pos("tftp_end"), "{names:?}");
            assert!(pos("tftp_end") < pos("ipxe_dhcp"), "{names:?}");
            let end = &events[pos("tftp_end")]["detail"];
            assert!(end["bytes"].as_u64().unwrap() > 10_000, "{end}");
            assert_eq!(t["boots"].as_array().unwrap().len(), 1, "one boot: {t}");
        }
        Firmware::OvmfHttp => assert!(
            !log.contains("TFTP transfer started"),
            "HTTP Boot must not use TFTP:\n{log}"
        ),
        Firmware::SeaBiosIpxe => {}
    }
}

#[test]
fn seabios_ipxe_boots_inventory_node() {
    boot_inventory_node(
        Firmware::SeaBiosIpxe,
        "bios",
        "52:54:00:aa:01:01",
        "192.0.2.50",
        "x1000c0s0b0n0",
        1,
    );
}

#[test]
fn ovmf_pxe_tftp_boots_inventory_node() {
    boot_inventory_node(
        Firmware::OvmfPxe,
        "uefi",
        "52:54:00:aa:01:02",
        "192.0.2.51",
        "x1000c0s0b1n0",
        2,
    );
}

#[test]
fn ovmf_http_boot_boots_inventory_node() {
    boot_inventory_node(
        Firmware::OvmfHttp,
        "http",
        "52:54:00:aa:01:03",
        "192.0.2.52",
        "x1000c0s1b0n0",
        3,
    );
}

#[test]
fn unknown_mac_gets_pool_address_and_waiting_script() {
    if !preflight(true) {
        return;
    }
    let mut ns = Netns::new("unk").unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    let mac = "52:54:00:aa:01:09";
    let _vm = Qemu::start(&mut ns, Firmware::SeaBiosIpxe, mac).unwrap();
    // iPXE asks for its script; rackboot has no boot parameters for it.
    let deadline = std::time::Instant::now() + BOOT_TIMEOUT;
    while !rb
        .log_text()
        .contains("unknown node: waiting script served")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no bootscript request:\n{}",
            rb.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, leases) = rb.http("GET", "/rackboot/v1/leases", None).unwrap();
    let leases: serde_json::Value = serde_json::from_str(&leases).unwrap();
    let lease = leases
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["mac"] == mac)
        .expect("a lease for the unknown MAC");
    let ip: std::net::Ipv4Addr = lease["ip"].as_str().unwrap().parse().unwrap();
    assert!(
        ip.octets()[3] >= 128 && ip.octets()[3] < 255,
        "pool is the upper half of 192.0.2.0/24: {ip}"
    );
    assert_eq!(lease["kind"], "dynamic");
    let (code, script) = rb
        .http("GET", &format!("/boot/v1/bootscript?mac={mac}"), None)
        .unwrap();
    assert_eq!(code, 200);
    assert!(
        script.starts_with("#!ipxe") && script.contains("chain http://"),
        "never a dead end: {script}"
    );
    assert!(script.contains("arch=${buildarch}"), "{script}");
}

#[test]
fn autoexec_ipxe_and_traversal_get_tftp_errors() {
    if !qemu_tests::preflight_with(false, &["tftp"]) {
        return;
    }
    let ns = Netns::new("tftp").unwrap();
    let _rb = Rackboot::start(&ns).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let out = ns
            .cmd("tftp")
            .args(["-m", "binary", SERVER, "-c", "get", name])
            .arg(dir.path().join("out"))
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(
        run("autoexec.ipxe").contains("Error code 1"),
        "autoexec.ipxe: file not found"
    );
    assert!(
        run("../../etc/passwd").contains("Error code 2"),
        "traversal refused"
    );
    assert!(
        run("/etc/passwd").contains("Error code 2"),
        "absolute path refused"
    );
    // And a real file comes through byte-exact with tftp-hpa and curl (blksize option).
    let out = run("snponly.efi");
    assert!(!out.contains("Error"), "{out}");
    assert_eq!(
        std::fs::read(dir.path().join("out")).unwrap(),
        std::fs::read("/usr/lib/ipxe/snponly.efi").unwrap()
    );
    let st = ns
        .cmd("curl")
        .args(["-s", "--tftp-blksize", "1468", "-o"])
        .arg(dir.path().join("curl"))
        .arg(format!("tftp://{SERVER}/undionly.kpxe"))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read(dir.path().join("curl")).unwrap(),
        std::fs::read("/usr/lib/ipxe/undionly.kpxe").unwrap()
    );
}

/// proxyDHCP: another server (dnsmasq, in its own namespace on the same segment) assigns the
/// address; rackboot in proxy mode only tells the firmware what to boot. The node boots its
/// inventory kernel line with dnsmasq's address, and rackboot records no lease.
#[test]
fn proxy_mode_boots_beside_another_dhcp_server() {
    if !preflight(true) {
        return;
    }
    let mut ns = Netns::new("prx").unwrap();
    let rb = Rackboot::start_with_env(&ns, &[("RACKBOOT_DHCP__MODE", "proxy")]).unwrap();
    rb.import_node_images().unwrap();
    let (mac, xname) = ("52:54:00:aa:02:01", "x1000c0s7b0n0");
    // The inventory IP is not what the node gets: addresses are dnsmasq's business here.
    rb.register_node(xname, 7, mac, "192.0.2.77").unwrap();
    let other = ns.add_client_ns().unwrap();
    other
        .ip(&["addr", "add", "192.0.2.2/24", "dev", "vc"])
        .unwrap();
    let leases = tempfile::NamedTempFile::new().unwrap();
    let mut dnsmasq = other
        .cmd("dnsmasq")
        .args([
            "--no-daemon",
            "--port=0",
            "--interface=vc",
            "--bind-interfaces",
            "--dhcp-range=192.0.2.50,192.0.2.60,1h",
            "--dhcp-option=3",
            "--dhcp-authoritative",
            "--log-dhcp",
        ])
        .arg(format!("--dhcp-leasefile={}", leases.path().display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut vm = Qemu::start(&mut ns, Firmware::SeaBiosIpxe, mac).unwrap();
    let got = vm.wait_for("RACKBOOT-NODE-UP", BOOT_TIMEOUT);
    let _ = dnsmasq.kill();
    let _ = dnsmasq.wait();
    let line = got.unwrap_or_else(|e| panic!("{e:#}\n---- rackboot log ----\n{}", rb.log_text()));
    let ip: std::net::Ipv4Addr = field(&line, "ip").unwrap().parse().unwrap();
    assert!(
        (50..=60).contains(&ip.octets()[3]),
        "the address comes from dnsmasq's range: {line}"
    );
    assert_eq!(field(&line, "xname"), Some(xname), "{line}");
    let (_, leases) = rb.http("GET", "/rackboot/v1/leases", None).unwrap();
    assert!(
        !leases.contains(mac),
        "proxy mode assigns nothing: {leases}"
    );
}
