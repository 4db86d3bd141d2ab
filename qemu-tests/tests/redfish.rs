//! Redfish against a real emulator (sushy-tools `sushy-emulator` with its fake driver, over TLS
//! with basic auth): discovery fills the inventory with the emulated system's NIC MAC, a QEMU
//! node with that MAC then PXE-boots with the discovered static address, power and
//! reprovisioning change the emulated system, and a re-keyed BMC is refused (pinning).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use qemu_tests::{
    FakeBmc, Firmware, Netns, Qemu, Rackboot, SERVER, StaticBmc, field, preflight, preflight_sushy,
};
use serde_json::Value;

const UUID: &str = "9f3c8a2e-1b2d-4c5e-8f70-0a1b2c3d4e5f";
const MAC: &str = "52:54:00:aa:05:01";

fn cli(ns: &Netns, rb: &Rackboot, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    rb.cli(ns, args, stdin)
}

fn power_state(bmc: &FakeBmc) -> String {
    bmc.get(&format!("/redfish/v1/Systems/{UUID}")).unwrap()["PowerState"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn wait_power(bmc: &FakeBmc, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while power_state(bmc) != want {
        assert!(Instant::now() < deadline, "power never became {want}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn discovered_node_boots_and_is_power_controlled() {
    if !preflight(true) {
        return;
    }
    let Some(sushy) = preflight_sushy() else {
        return;
    };
    let mut ns = Netns::new("rf").unwrap();
    let rb = Rackboot::start_with_env(&ns, &[("RACKBOOT_DISCOVERY__NODE_IP_BASE", "192.0.2.100")])
        .unwrap();
    rb.import_node_images().unwrap();
    // The BMC is another host on the rack segment (a scan skips rackboot's own addresses).
    let bmc_ns = ns.add_client_ns().unwrap();
    bmc_ns
        .ip(&["addr", "add", "192.0.2.201/24", "dev", "vc"])
        .unwrap();
    let mut bmc = FakeBmc::start(
        &bmc_ns,
        &sushy,
        "192.0.2.201",
        &[(UUID, "node1", MAC)],
        "admin",
        "s3cret!",
    )
    .unwrap();

    // Credentials: read from stdin, never argv; the API never shows the password.
    let (ok, out) = cli(
        &ns,
        &rb,
        &["bmc", "creds-set", "--username", "admin"],
        Some("wrong\n"),
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(&ns, &rb, &["discover", "192.0.2.201", "-o", "json"], None);
    assert!(ok, "{out}");
    assert!(
        out.contains("authentication failed"),
        "wrong password is a clear per-BMC error: {out}"
    );
    let (_, eps) = rb
        .http("GET", "/hsm/v2/Inventory/RedfishEndpoints", None)
        .unwrap();
    assert!(
        !eps.contains("192.0.2.201"),
        "nothing written for a failed BMC: {eps}"
    );
    let (ok, out) = cli(
        &ns,
        &rb,
        &["bmc", "creds-set", "--username", "admin"],
        Some("s3cret!\n"),
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(&ns, &rb, &["bmc", "creds-list"], None);
    assert!(
        ok && out.contains("admin") && !out.contains("s3cret"),
        "{out}"
    );
    let db = std::fs::read(rb.data_dir.path().join("rackboot.db")).unwrap();
    assert!(
        !db.windows(7).any(|w| w == b"s3cret!"),
        "password sealed at rest"
    );

    // Discovery (a CIDR: the probe finds the BMC on 443) fills the inventory.
    let (ok, out) = cli(&ns, &rb, &["discover", "192.0.2.200/30"], None);
    assert!(ok, "{out}");
    assert!(out.contains(MAC) && out.contains("x1000c0s0b0n0"), "{out}");
    let (_, ei) = rb
        .http(
            "GET",
            &format!("/hsm/v2/Inventory/EthernetInterfaces?MACAddress={MAC}"),
            None,
        )
        .unwrap();
    let ei: Value = serde_json::from_str(&ei).unwrap();
    assert_eq!(ei[0]["ComponentID"], "x1000c0s0b0n0", "{ei}");
    assert_eq!(
        ei[0]["IPAddresses"][0]["IPAddress"], "192.0.2.101",
        "node_ip_base + NID 1: {ei}"
    );
    let (_, ep) = rb
        .http(
            "GET",
            "/hsm/v2/Inventory/RedfishEndpoints/x1000c0s0b0",
            None,
        )
        .unwrap();
    let ep: Value = serde_json::from_str(&ep).unwrap();
    assert_eq!(ep["FQDN"], "192.0.2.201", "{ep}");
    assert_eq!(ep["Systems"][0]["UUID"], UUID, "{ep}");
    assert!(
        ep["TLS"]["sha256"].as_str().is_some_and(|s| s.len() == 64),
        "pinned: {ep}"
    );
    // Re-discovery updates in place.
    let (ok, _) = cli(&ns, &rb, &["discover", "https://192.0.2.201"], None);
    assert!(ok);
    let (_, all) = rb
        .http("GET", "/hsm/v2/Inventory/EthernetInterfaces", None)
        .unwrap();
    assert_eq!(all.matches(MAC).count(), 1, "{all}");
    let (_, all) = rb
        .http("GET", "/hsm/v2/Inventory/RedfishEndpoints", None)
        .unwrap();
    assert_eq!(all.matches("\"ID\"").count(), 1, "{all}");

    // The discovered node PXE-boots with its discovered address (boot parameters by MAC).
    let bp = format!(
        r#"{{"macs":["{MAC}"],"kernel":"http://{SERVER}/images/vmlinuz","initrd":"http://{SERVER}/images/initrd.img","params":"console=ttyS0 quiet"}}"#
    );
    let (code, body) = rb
        .http("POST", "/boot/v1/bootparameters", Some(&bp))
        .unwrap();
    assert!(code == 200 || code == 201, "{body}");

    // Power on through the BMC: the emulated system turns on.
    let (ok, out) = cli(&ns, &rb, &["power", "on", "x1000c0s0b0n0"], None);
    assert!(ok, "{out}");
    wait_power(&bmc, "On");
    let mut vm = Qemu::start(&mut ns, Firmware::SeaBiosIpxe, MAC).unwrap();
    let line = vm
        .wait_for("RACKBOOT-NODE-UP", Duration::from_secs(400))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", rb.log_text()));
    assert_eq!(field(&line, "ip"), Some("192.0.2.101"), "{line}");
    assert_eq!(field(&line, "xname"), Some("x1000c0s0b0n0"), "{line}");

    let (ok, out) = cli(&ns, &rb, &["power", "force-off", "x1000c0s0b0n0"], None);
    assert!(ok, "{out}");
    wait_power(&bmc, "Off");
    let (ok, out) = cli(
        &ns,
        &rb,
        &["power", "status", "x1000c0s0b0n0", "-o", "json"],
        None,
    );
    assert!(ok && out.contains("\"Off\""), "{out}");
    // Reprovision: a one-time PXE override, then on.
    let (ok, out) = cli(&ns, &rb, &["reprovision", "x1000c0s0b0n0"], None);
    assert!(ok, "{out}");
    let sys = bmc.get(&format!("/redfish/v1/Systems/{UUID}")).unwrap();
    // (sushy's fake driver records the target but reports the override as Continuous.)
    assert_eq!(sys["Boot"]["BootSourceOverrideTarget"], "Pxe", "{sys}");
    assert!(out.contains("one-time boot override Pxe"), "{out}");
    wait_power(&bmc, "On");
    // A node without a BMC: a per-node error, others unaffected.
    let (ok, out) = cli(
        &ns,
        &rb,
        &["power", "status", "x1000c0s0b0n0", "x1000c0s5b0n0"],
        None,
    );
    assert!(
        !ok && out.contains("no BMC in the inventory") && out.contains("On"),
        "{out}"
    );

    // Firmware: the rack's versions are listed; sushy's fake driver has no firmware versions
    // (its libvirt driver does: see redfish_firmware.rs), so an update there is a clean per-node error.
    let (ok, out) = cli(&ns, &rb, &["firmware", "list"], None);
    assert!(ok && out.contains("x1000c0s0b0n0"), "{out}");
    let (ok, out) = cli(
        &ns,
        &rb,
        &["firmware", "update", "x1000c0s0b0n0", "--image", "vmlinuz"],
        None,
    );
    assert!(
        !ok && out.contains("FAILED") && out.contains("500"),
        "{out}"
    );
    let (ok, out) = cli(
        &ns,
        &rb,
        &[
            "firmware",
            "update",
            "x1000c0s0b0n0",
            "--image",
            "no-such-image",
        ],
        None,
    );
    assert!(!ok && out.contains("no image"), "{out}");

    // The BMC is re-keyed: its pinned certificate no longer matches.
    bmc.new_cert().unwrap();
    bmc.restart().unwrap();
    let (ok, out) = cli(&ns, &rb, &["power", "status", "x1000c0s0b0n0"], None);
    assert!(!ok && out.contains("certificate changed"), "{out}");
    let (ok, out) = cli(&ns, &rb, &["bmc", "unpin", "https://192.0.2.201"], None);
    assert!(ok, "{out}");
    let (ok, out) = cli(&ns, &rb, &["power", "status", "x1000c0s0b0n0"], None);
    assert!(
        ok,
        "after a deliberate unpin the new certificate is pinned: {out}"
    );
}

/// Event-driven discovery: a BMC that takes a DHCP lease in `discovery.bmc_pool` is found and
/// put into the inventory without anyone running `rackboot discover`.
#[test]
fn a_bmc_taking_a_lease_is_discovered_on_its_own() {
    if !preflight(false) {
        return;
    }
    let Some(sushy) = preflight_sushy() else {
        return;
    };
    let ns = Netns::new("rfa").unwrap();
    let rb = Rackboot::start_with_env(
        &ns,
        &[
            ("RACKBOOT_DISCOVERY__BMC_POOL", "192.0.2.128-192.0.2.254"),
            ("RACKBOOT_DISCOVERY__RELAY_PORTS", r#"{ "sw1/eth7" = 7 }"#),
        ],
    )
    .unwrap();
    let (ok, out) = cli(
        &ns,
        &rb,
        &["bmc", "creds-set", "--username", "admin"],
        Some("pw\n"),
    );
    assert!(ok, "{out}");
    // The BMC: its own namespace on the rack segment, an address from rackboot's DHCP.
    let bmc_ns = ns.add_client_ns().unwrap();
    let script = rb.data_dir.path().join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] && ip addr add \"$ip/$mask\" dev \"$interface\"\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = bmc_ns
        .cmd("udhcpc")
        .args(["-i", "vc", "-n", "-q", "-t", "5"])
        // Option 82 as a DHCP-snooping switch inserts it: circuit-id "eth7", remote-id "sw1".
        .args(["-x", "0x52:0104657468370203737731", "-s"])
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = String::from_utf8_lossy(
        &bmc_ns
            .cmd("ip")
            .args(["-4", "-o", "addr", "show", "dev", "vc"])
            .output()
            .unwrap()
            .stdout,
    )
    .split_whitespace()
    .find(|w| w.starts_with("192.0.2."))
    .map(|w| w.split('/').next().unwrap().to_owned())
    .expect("the BMC got an address");
    let _bmc = FakeBmc::start(
        &bmc_ns,
        &sushy,
        &addr,
        &[(UUID, "auto1", "52:54:00:aa:05:09")],
        "admin",
        "pw",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, eps) = rb
            .http("GET", "/hsm/v2/Inventory/RedfishEndpoints", None)
            .unwrap();
        if eps.contains(&addr) {
            let eps: Value = serde_json::from_str(&eps).unwrap();
            let ep = &eps["RedfishEndpoints"][0];
            assert_eq!(ep["ID"], "x1000c0s7b0", "named by its switch port: {ep}");
            assert_eq!(ep["XnameRule"], "relay-port", "{ep}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not discovered: {eps}\n{}",
            rb.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        rb.log_text().contains("BMC took a lease"),
        "{}",
        rb.log_text()
    );
    let (_, nics) = rb
        .http("GET", "/hsm/v2/Inventory/EthernetInterfaces", None)
        .unwrap();
    assert!(nics.contains("52:54:00:aa:05:09"), "{nics}");
}

/// A vendor-shaped tree served by sushy-static: the blade's system has no EthernetInterfaces
/// (the MACs are under its chassis's NetworkAdapters), the chassis states slot 5, and the
/// manager offers consoles. sushy-static answers the session POST with an empty 204, so the
/// client must fall back to basic auth.
#[test]
fn a_vendor_mockup_blade_is_discovered_through_its_network_adapters() {
    if !preflight(false) {
        return;
    }
    let Some(sushy) = preflight_sushy() else {
        return;
    };
    let ns = Netns::new("rfs").unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    let (ok, out) = cli(
        &ns,
        &rb,
        &["bmc", "creds-set", "--username", "admin"],
        Some("pw\n"),
    );
    assert!(ok, "{out}");
    let mockup = qemu_tests::root().join("qemu-tests/fixtures/redfish-blade");
    let _bmc = StaticBmc::start(&ns, &sushy, "192.0.2.230", &mockup).unwrap();
    let (ok, out) = cli(&ns, &rb, &["discover", "http://192.0.2.230:8000"], None);
    assert!(ok, "{out}\n{}", rb.log_text());
    let (_, eps) = rb
        .http("GET", "/hsm/v2/Inventory/RedfishEndpoints", None)
        .unwrap();
    let eps: Value = serde_json::from_str(&eps).unwrap();
    let ep = &eps["RedfishEndpoints"][0];
    assert_eq!(ep["ID"], "x1000c0s5b0", "the slot from Location: {ep}");
    assert_eq!(ep["XnameRule"], "location", "{ep}");
    assert_eq!(ep["MACAddr"], "52:54:00:aa:06:ff", "{ep}");
    assert_eq!(
        ep["Managers"][0]["GraphicalConsole"]["ConnectTypesSupported"][0], "KVMIP",
        "{ep}"
    );
    let sys = &ep["Systems"][0];
    assert_eq!(sys["MACsFrom"], "NetworkAdapters", "{ep}");
    assert_eq!(sys["SerialNumber"], "BL-0005", "{ep}");
    let (_, nics) = rb
        .http("GET", "/hsm/v2/Inventory/EthernetInterfaces", None)
        .unwrap();
    for mac in ["52:54:00:aa:06:01", "52:54:00:aa:06:02"] {
        assert!(nics.contains(mac), "{mac} missing: {nics}");
    }
    assert!(nics.contains("x1000c0s5b0n0"), "{nics}");

    // Streamed: progress lines while it runs (the CLI draws its bar from them), then results.
    let (code, text) = rb
        .http_with(
            "POST",
            "/rackboot/v1/discovery",
            Some(r#"{"targets": ["192.0.2.224/28", "http://192.0.2.230:8000"]}"#),
            &["Accept: application/x-ndjson"],
        )
        .unwrap();
    assert_eq!(code, 200, "{text}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 2, "progress came before the results: {text}");
    let last = lines.last().unwrap();
    assert_eq!(
        last["progress"],
        // 14 hosts in the /28, minus 192.0.2.230: an address of rackboot's own namespace (its
        // :80 is rackboot itself), which a scan skips.
        serde_json::json!({"addresses": 13, "probed": 13, "bmcs": 1, "crawled": 1, "failed": 0}),
        "{text}"
    );
    let results = last["results"].as_array().unwrap();
    assert!(
        results
            .iter()
            .any(|r| r["ok"] == true && r["bmc"] == "x1000c0s5b0"),
        "re-discovered in place: {text}"
    );
}

/// The blade mockup served by sushy-static over HTTPS with its own self-signed certificate
/// (issue 11). sushy-static answers as many BMCs do: `HTTP/1.0`, no Content-Length, the body
/// ended by a TCP close without TLS close_notify. A scan finds it on 443 and discovers it as
/// completely as over plain HTTP; its certificate is pinned, a second discovery goes through
/// the pin, and a re-keyed BMC is refused.
#[test]
fn a_vendor_mockup_over_https_closing_without_close_notify_is_discovered_and_pinned() {
    if !preflight(false) {
        return;
    }
    let Some(sushy) = preflight_sushy() else {
        return;
    };
    let ns = Netns::new("rft").unwrap();
    // redfish=debug: the log shows that the missing close_notify was met and tolerated.
    let rb = Rackboot::start_with_env(
        &ns,
        &[("RACKBOOT_LOG", "info,rackboot=debug,redfish=debug")],
    )
    .unwrap();
    let (ok, out) = cli(
        &ns,
        &rb,
        &["bmc", "creds-set", "--username", "admin"],
        Some("pw\n"),
    );
    assert!(ok, "{out}");
    let bmc_ns = ns.add_client_ns().unwrap();
    bmc_ns
        .ip(&["addr", "add", "192.0.2.201/24", "dev", "vc"])
        .unwrap();
    let mockup = qemu_tests::root().join("qemu-tests/fixtures/redfish-blade");
    let bmc = StaticBmc::start_tls(&bmc_ns, &sushy, "192.0.2.201", &mockup, 443).unwrap();

    // The peer really answers that way: a close-delimited HTTP/1.0 body and no close_notify
    // (OpenSSL 3 reports the bare TCP close as "unexpected eof while reading").
    let head = bmc_ns
        .cmd("curl")
        .args(["-sk", "-o", "/dev/null", "-D", "-"])
        .arg("https://192.0.2.201/redfish/v1/")
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.0 200") && !head.contains("content-length"),
        "{head}"
    );
    let mut s_client = bmc_ns
        .cmd("openssl")
        .args([
            "s_client",
            "-quiet",
            "-ign_eof",
            "-connect",
            "192.0.2.201:443",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = s_client.stdin.take().unwrap();
        stdin
            .write_all(b"GET /redfish/v1/ HTTP/1.0\r\nHost: 192.0.2.201\r\n\r\n")
            .unwrap();
        // stdin stays open (-ign_eof): s_client ends when the server closes.
        let out = s_client.wait_with_output().unwrap();
        drop(stdin);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("unexpected eof"), "{stderr}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("RedfishVersion"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // A scan finds it on 443 and crawls it completely.
    let (ok, out) = cli(
        &ns,
        &rb,
        &["discover", "192.0.2.200/29", "-o", "json"],
        None,
    );
    assert!(ok, "{out}\n{}", rb.log_text());
    let (_, eps) = rb
        .http("GET", "/hsm/v2/Inventory/RedfishEndpoints", None)
        .unwrap();
    let eps: Value = serde_json::from_str(&eps).unwrap();
    assert_eq!(
        eps["RedfishEndpoints"].as_array().map(Vec::len),
        Some(1),
        "{eps}"
    );
    let ep = &eps["RedfishEndpoints"][0];
    assert_eq!(ep["ID"], "x1000c0s5b0", "the slot from Location: {ep}");
    assert_eq!(ep["FQDN"], "192.0.2.201", "{ep}");
    assert_eq!(ep["MACAddr"], "52:54:00:aa:06:ff", "{ep}");
    assert_eq!(
        ep["Managers"][0]["GraphicalConsole"]["ConnectTypesSupported"][0], "KVMIP",
        "{ep}"
    );
    let sys = &ep["Systems"][0];
    assert_eq!(sys["MACsFrom"], "NetworkAdapters", "{ep}");
    assert_eq!(sys["SerialNumber"], "BL-0005", "{ep}");
    let (_, nics) = rb
        .http("GET", "/hsm/v2/Inventory/EthernetInterfaces", None)
        .unwrap();
    for mac in ["52:54:00:aa:06:01", "52:54:00:aa:06:02"] {
        assert!(nics.contains(mac), "{mac} missing: {nics}");
    }
    assert!(nics.contains("x1000c0s5b0n0"), "{nics}");
    assert!(
        rb.log_text().contains("without close_notify"),
        "the crawl met the TCP close without close_notify: {}",
        rb.log_text()
    );
    // Pinned: the pin is this certificate's.
    assert_eq!(
        ep["TLS"]["sha256"].as_str(),
        Some(bmc.cert_sha256().unwrap().as_str()),
        "{ep}"
    );

    // A second discovery goes through the pin and updates in place.
    let (ok, out) = cli(&ns, &rb, &["discover", "https://192.0.2.201"], None);
    assert!(ok, "{out}\n{}", rb.log_text());
    let (_, eps) = rb
        .http("GET", "/hsm/v2/Inventory/RedfishEndpoints", None)
        .unwrap();
    assert_eq!(eps.matches("\"ID\"").count(), 1, "{eps}");
    let (_, nics) = rb
        .http("GET", "/hsm/v2/Inventory/EthernetInterfaces", None)
        .unwrap();
    assert_eq!(nics.matches("52:54:00:aa:06:01").count(), 1, "{nics}");

    // Re-keyed (a new certificate at the same address): refused by the pin.
    drop(bmc);
    let _bmc = StaticBmc::start_tls(&bmc_ns, &sushy, "192.0.2.201", &mockup, 443).unwrap();
    // (`discover` reports per-BMC failures in its table and still exits 0.)
    let (_, out) = cli(&ns, &rb, &["discover", "https://192.0.2.201"], None);
    assert!(
        out.contains("certificate changed") && out.contains("1 failed"),
        "{out}"
    );
}
