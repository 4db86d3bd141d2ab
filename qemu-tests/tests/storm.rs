//! `rackboot storm` against a real `rackboot serve` (issue 18): a 50-node storm boots every
//! node with verified images and leaves every stage on rackboot's timelines; a storm through a
//! link that drops half of the clients' TFTP ACKs (nftables, `numgen random mod 2`) still
//! boots every node, by retransmission.
//!
//! The storm runs in a second namespace (192.0.2.10 on a veth into rackboot's bridge) as a
//! DHCP relay, adding each leased address to its veth (`--bind-leases`) so rackboot sees each
//! node's TFTP, HTTP and cloud-init from the node's own address. rackboot serves a small boot
//! file (`RACKBOOT_IPXE_DIR`) and small random kernel and initrd images, so a storm is short.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Read;
use std::path::Path;

use qemu_tests::{Netns, Rackboot, SERVER, have, preflight_with, rackboot_bin, run_in};

const RELAY: &str = "192.0.2.10";

fn random_file(path: &Path, len: u64) {
    let mut bytes = Vec::new();
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .take(len)
        .read_to_end(&mut bytes)
        .unwrap();
    std::fs::write(path, &bytes).unwrap();
}

fn mac(i: u32) -> String {
    format!("52:54:00:5e:{:02x}:{:02x}", (i + 1) >> 8, (i + 1) & 0xff)
}

fn xname(i: u32) -> String {
    format!("x1000c{}s{}b0n0", i / 32, i % 32)
}

/// rackboot with `nodes` inventory nodes (MACs as the storm generates them from its default
/// first MAC), a boot file of `boot_file` bytes, a 1 MiB kernel and a 2 MiB initrd; the relay
/// namespace.
fn setup(tag: &str, nodes: u32, boot_file: u64) -> (Netns, Rackboot, Netns, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ipxe = dir.path().join("ipxe");
    std::fs::create_dir(&ipxe).unwrap();
    for f in ["snponly.efi", "ipxe.efi", "undionly.kpxe"] {
        random_file(&ipxe.join(f), boot_file);
    }
    random_file(&dir.path().join("vmlinuz"), 1 << 20);
    random_file(&dir.path().join("initrd.img"), 2 << 20);
    let ns = Netns::new(tag).unwrap();
    let rb =
        Rackboot::start_with_env(&ns, &[("RACKBOOT_IPXE_DIR", ipxe.to_str().unwrap())]).unwrap();
    rb.import_image("vmlinuz", &dir.path().join("vmlinuz"))
        .unwrap();
    rb.import_image("initrd.img", &dir.path().join("initrd.img"))
        .unwrap();
    let comps: Vec<String> = (0..nodes)
        .map(|i| {
            format!(
                r#"{{"ID":"{}","Type":"Node","State":"Ready","Enabled":true,"NID":{},"Arch":"X86","Role":"Compute"}}"#,
                xname(i),
                i + 1
            )
        })
        .collect();
    let body = format!(r#"{{"Components":[{}]}}"#, comps.join(","));
    let (code, resp) = rb
        .http("POST", "/hsm/v2/State/Components", Some(&body))
        .unwrap();
    assert_eq!(code, 204, "{resp}");
    for i in 0..nodes {
        let body = format!(
            r#"{{"MACAddress":"{}","IPAddresses":[{{"IPAddress":"192.0.2.{}"}}],"ComponentID":"{}","Type":"Node"}}"#,
            mac(i),
            100 + i,
            xname(i)
        );
        let (code, resp) = rb
            .http("POST", "/hsm/v2/Inventory/EthernetInterfaces", Some(&body))
            .unwrap();
        assert_eq!(code, 201, "{resp}");
    }
    let macs: Vec<String> = (0..nodes).map(|i| format!("\"{}\"", mac(i))).collect();
    let body = format!(
        r#"{{"macs":[{}],"kernel":"http://{SERVER}/images/vmlinuz","initrd":"http://{SERVER}/images/initrd.img","params":"console=ttyS0"}}"#,
        macs.join(",")
    );
    let (code, resp) = rb
        .http("PUT", "/boot/v1/bootparameters", Some(&body))
        .unwrap();
    assert_eq!(code, 200, "{resp}");
    let client = ns.add_client_ns().unwrap();
    client
        .ip(&["addr", "add", &format!("{RELAY}/24"), "dev", "vc"])
        .unwrap();
    (ns, rb, client, dir)
}

/// Runs `rackboot storm` in `client` with `extra` options: (success, output, JSON report).
fn storm(
    client: &Netns,
    dir: &Path,
    nodes: u32,
    extra: &[&str],
) -> (bool, String, serde_json::Value) {
    let json = dir.join("storm.json");
    let chart = dir.join("storm.svg");
    let n = nodes.to_string();
    let mut args = vec![
        "storm",
        "--server",
        SERVER,
        "--relay",
        RELAY,
        "--interface",
        "vc",
        "--bind-leases",
        "--nodes",
        &n,
        "--window",
        "2",
        "--json",
        json.to_str().unwrap(),
        "--chart",
        chart.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let bin = rackboot_bin().unwrap();
    let (ok, out) = run_in(client, bin.to_str().unwrap(), &args, &[], None).unwrap();
    let report = std::fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    // The report goes to the test's output; the chart and JSON are kept where
    // `RACKBOOT_STORM_KEEP` says (to look at them).
    eprintln!("{out}");
    if let Ok(keep) = std::env::var("RACKBOOT_STORM_KEEP") {
        let _ = std::fs::copy(&chart, Path::new(&keep).join(format!("storm-{nodes}.svg")));
        let _ = std::fs::copy(&json, Path::new(&keep).join(format!("storm-{nodes}.json")));
    }
    let svg = std::fs::read_to_string(&chart).unwrap_or_default();
    assert!(
        svg.contains("<svg") && svg.contains("booted"),
        "chart: {svg}\n{out}"
    );
    (ok, out, report)
}

/// Every stage rackboot recorded on `x`'s timeline.
fn timeline_stages(rb: &Rackboot, x: &str) -> Vec<String> {
    let (code, body) = rb
        .http("GET", &format!("/rackboot/v1/nodes/{x}/timeline"), None)
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut stages = Vec::new();
    for boot in v["boots"].as_array().cloned().unwrap_or_default() {
        for e in boot["events"].as_array().cloned().unwrap_or_default() {
            if e["ok"].as_bool() != Some(false) {
                stages.push(e["stage"].as_str().unwrap_or("").to_owned());
            }
        }
    }
    stages
}

#[test]
fn a_fifty_node_storm_boots_every_node_and_fills_the_timelines() {
    if !preflight_with(false, &[]) {
        return;
    }
    let nodes = 50;
    let (_ns, rb, client, dir) = setup("storm", nodes, 96 * 1024);
    let (ok, out, report) = storm(&client, dir.path(), nodes, &["--time-scale", "0.25"]);
    assert!(
        ok,
        "storm failed:\n{out}\n---- rackboot ----\n{}",
        rb.log_text()
    );
    let s = &report["summary"];
    assert_eq!(s["booted"], nodes, "{out}");
    assert_eq!(s["failed"], 0, "{out}");
    // Kernel and initrd of every node, each checked against the ETag rackboot publishes.
    assert_eq!(s["sha256_verified"], 2 * nodes, "{out}");
    assert_eq!(s["sha256_unchecked"], 0, "{out}");
    assert!(
        s["http_bytes"].as_u64().unwrap() >= u64::from(nodes) * (3 << 20),
        "{out}"
    );
    assert_eq!(s["tftp_bytes"], u64::from(nodes) * 96 * 1024, "{out}");
    for stage in [
        "dhcp",
        "tftp",
        "ipxe_dhcp",
        "bootscript",
        "kernel",
        "initrd",
        "os_dhcp",
        "cloud_init",
        "phone_home",
    ] {
        assert_eq!(s["latency"][stage]["count"], nodes, "{stage}: {out}");
    }
    assert!(out.contains("timeline (nodes in each stage"), "{out}");
    // The timeline writer stores events in batches after the fact: a node's last events can
    // still be on their way when the storm ends, so each node's timeline is read until it has
    // every stage (or the deadline passes), and none may have been dropped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for i in 0..nodes {
        let x = xname(i);
        loop {
            let got = timeline_stages(&rb, &x);
            let missing: Vec<&str> = [
                "dhcp_ack",
                "tftp_end",
                "ipxe_dhcp",
                "bootscript",
                "kernel",
                "initrd",
                "os_dhcp",
                "cloud_init_meta_data",
                "cloud_init_user_data",
                "phone_home",
            ]
            .into_iter()
            .filter(|want| !got.iter().any(|g| g == want))
            .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{x}: no {missing:?} in {got:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    let (_, metrics) = rb.http("GET", "/metrics", None).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "rackboot_timeline_dropped_events_total 0"),
        "timeline events were dropped:\n{metrics}"
    );
}

/// Packets the rule counted (`counter packets N bytes M`).
fn counted(ns: &Netns) -> u64 {
    let out = ns
        .cmd("nft")
        .args(["list", "chain", "inet", "storm", "inp"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("counter packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {text}"))
}

#[test]
fn a_storm_that_loses_half_its_tftp_acks_boots_through_retransmissions() {
    if !preflight_with(false, &["nft"]) {
        return;
    }
    assert!(have("nft"));
    let nodes = 10;
    let (ns, rb, client, dir) = setup("stormloss", nodes, 32 * 1024);
    // Drop half of the TFTP ACKs (opcode 4, the first two bytes of the UDP payload) the
    // nodes send, as they arrive at the server (lost on the wire); DHCP (port 67) passes.
    for rule in [
        &["add", "table", "inet", "storm"][..],
        &[
            "add",
            "chain",
            "inet",
            "storm",
            "inp",
            "{ type filter hook input priority 0 ; }",
        ],
        &[
            "add",
            "rule",
            "inet",
            "storm",
            "inp",
            "ip",
            "daddr",
            SERVER,
            "udp",
            "dport",
            "!=",
            "67",
            "@th,64,16",
            "4",
            "numgen",
            "random",
            "mod",
            "2",
            "0",
            "counter",
            "drop",
        ],
    ] {
        let st = ns.cmd("nft").args(rule).status().unwrap();
        assert!(st.success(), "nft {rule:?}");
    }
    assert_eq!(counted(&ns), 0);
    let (ok, out, report) = storm(
        &client,
        dir.path(),
        nodes,
        &["--time-scale", "0.05", "--tftp-retries", "16"],
    );
    assert!(
        ok,
        "storm failed:\n{out}\n---- rackboot ----\n{}",
        rb.log_text()
    );
    let dropped = counted(&ns);
    assert!(dropped > 0, "the rule dropped nothing");
    let s = &report["summary"];
    assert_eq!(s["booted"], nodes, "{out}");
    assert_eq!(s["tftp_bytes"], u64::from(nodes) * 32 * 1024, "{out}");
    let retx = s["tftp_retransmits"].as_u64().unwrap();
    assert!(retx > 0, "no TFTP retransmissions reported:\n{out}");
    assert!(out.contains("TFTP "), "{out}");
}

#[test]
fn a_direct_storm_of_seabios_nodes_boots_and_unknown_nodes_fail_with_their_stage() {
    if !preflight_with(false, &[]) {
        return;
    }
    let nodes = 4;
    let (_ns, rb, client, dir) = setup("stormdirect", nodes, 32 * 1024);
    // On the segment (broadcast from port 68, no relay), SeaBIOS + iPXE ROM: no TFTP stage.
    let bin = rackboot_bin().unwrap();
    let json = dir.path().join("direct.json");
    let n = nodes.to_string();
    let base = [
        "storm",
        "--server",
        SERVER,
        "--interface",
        "vc",
        "--bind-leases",
        "--window",
        "1",
        "--time-scale",
        "0.05",
        "--firmware",
        "seabios-ipxe",
    ];
    let mut args = base.to_vec();
    args.extend_from_slice(&["--nodes", &n, "--json", json.to_str().unwrap()]);
    let (ok, out) = run_in(&client, bin.to_str().unwrap(), &args, &[], None).unwrap();
    eprintln!("{out}");
    assert!(
        ok,
        "storm failed:\n{out}\n---- rackboot ----\n{}",
        rb.log_text()
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let s = &report["summary"];
    assert_eq!(s["booted"], nodes, "{out}");
    assert_eq!(s["tftp_bytes"], 0, "{out}");
    assert!(s["latency"].get("tftp").is_none(), "{out}");
    assert_eq!(s["latency"]["ipxe_dhcp"], serde_json::Value::Null, "{out}");
    assert_eq!(s["sha256_verified"], 2 * nodes, "{out}");
    for i in 0..nodes {
        let got = timeline_stages(&rb, &xname(i));
        for want in ["ipxe_dhcp", "kernel", "initrd", "phone_home"] {
            assert!(
                got.iter().any(|g| g == want),
                "{}: no {want} in {got:?}",
                xname(i)
            );
        }
    }

    // MACs the inventory does not know: the storm fails, exits non-zero and says where.
    let mut args = base.to_vec();
    args.extend_from_slice(&[
        "--nodes",
        "2",
        "--first-mac",
        "52:54:00:5e:99:01",
        "--dhcp-tries",
        "2",
    ]);
    let (ok, out) = run_in(&client, bin.to_str().unwrap(), &args, &[], None).unwrap();
    eprintln!("{out}");
    assert!(!ok, "a storm of unknown nodes succeeded:\n{out}");
    assert!(out.contains("2 of 2 nodes failed"), "{out}");
    assert!(out.contains("failures (stage: reason × nodes)"), "{out}");
    // rackboot answers an unknown MAC (a pool lease, a wait-and-retry script): the storm
    // stops at the boot script, which has no kernel line.
    assert!(
        out.contains("bootscript: the script has no kernel line"),
        "{out}"
    );
}
