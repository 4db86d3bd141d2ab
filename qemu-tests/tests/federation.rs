//! Federation, end to end with two real rackboot processes: the upstream is a standalone
//! rackboot (its OpenCHAMI-compatible SMD/BSS API on :8080, no DHCP/TFTP), the downstream is
//! federated to it, scoped to rack `x1000c0`, with a token file.
//!
//! Sync and scope, on-demand lookup of an unknown MAC, pushes of RedfishEndpoints, then the
//! outage: the upstream dies, a node still PXE-boots from the downstream's copy, pushes pile up
//! in the outbox, the downstream is `kill -9`ed and restarted, the upstream returns, and the
//! outbox drains with exactly one copy of every object upstream. Finally a refused token is
//! reported, and a replaced token file is picked up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use qemu_tests::{
    FakeBmc, Firmware, Netns, Qemu, Rackboot, preflight, preflight_sushy, rackboot_bin,
};
use serde_json::Value;

const UP: &str = "192.0.2.1:8080";
const N0: (&str, &str, &str) = ("x1000c0s0b0n0", "52:54:00:dd:00:01", "192.0.2.60");
const N1: (&str, &str, &str) = ("x1000c0s1b0n0", "52:54:00:dd:00:02", "192.0.2.61");
const N2: (&str, &str, &str) = ("x1000c0s2b0n0", "52:54:00:dd:00:03", "192.0.2.62");
const N3: (&str, &str, &str) = ("x1000c0s3b0n0", "52:54:00:dd:00:04", "192.0.2.63");
const OTHER: (&str, &str, &str) = ("x2000c0s0b0n0", "52:54:00:dd:00:09", "192.0.2.69");

fn up_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("RACKBOOT_HTTP_LISTEN", UP),
        ("RACKBOOT_LISTEN__DHCP_PORT", "0"),
        ("RACKBOOT_LISTEN__TFTP_PORT", "0"),
        ("RACKBOOT_DNS__ENABLED", "false"),
        ("RACKBOOT_IDENTITY__ENABLED", "false"),
    ]
}

fn mint(rb: &Rackboot, ttl: &str) -> String {
    rb.mint_token(&rackboot_bin().unwrap(), ttl).unwrap()
}

fn json(rb: &Rackboot, path: &str) -> Value {
    let (code, body) = rb.http("GET", path, None).unwrap();
    if code == 404 {
        return Value::Array(Vec::new());
    }
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn endpoint(id: &str, fqdn: &str) -> String {
    format!(
        r#"{{"ID":"{id}","FQDN":"{fqdn}","User":"root","MACRequired":false,"MACAddr":"","Systems":[],"Managers":[],"SchemaVersion":1}}"#
    )
}

#[test]
fn a_federated_rack_mirrors_its_scope_boots_through_an_outage_and_pushes_exactly_once() {
    if !preflight(true) {
        return;
    }
    let Some(sushy) = preflight_sushy() else {
        return;
    };
    let mut ns = Netns::new("fed").unwrap();
    let up = Rackboot::start_with_env_at(&ns, &up_env(), UP).unwrap();
    for (i, n) in [N0, N1, OTHER].iter().enumerate() {
        up.register_node(n.0, 10 + u32::try_from(i).unwrap(), n.1, n.2)
            .unwrap();
    }
    let (code, _) = up
        .http(
            "POST",
            "/hsm/v2/groups",
            Some(&format!(
                r#"{{"label":"compute","members":{{"ids":["{}","{}"]}}}}"#,
                N0.0, OTHER.0
            )),
        )
        .unwrap();
    assert!(code == 201 || code == 200);
    // cloud-init data upstream: a group's (for an SMD group of the rack) and a node's.
    for (path, body) in [
        (
            "/cloud-init/admin/groups/compute",
            r#"{"name":"compute","meta-data":{"role":"compute"}}"#,
        ),
        (
            "/cloud-init/admin/instance-info/x1000c0s0b0n0",
            r#"{"meta-data":{"rack":"x1000c0"}}"#,
        ),
    ] {
        let (code, body) = up.http("PUT", path, Some(body)).unwrap();
        assert!((200..300).contains(&code), "{path}: {code} {body}");
    }
    let work = tempfile::tempdir().unwrap();
    let token_file = work.path().join("upstream.token");
    std::fs::write(&token_file, mint(&up, "30m")).unwrap();
    let token_path = token_file.to_str().unwrap().to_owned();
    let env = |interval: &'static str| {
        vec![
            ("RACKBOOT_UPSTREAM__SMD", "http://192.0.2.1:8080"),
            ("RACKBOOT_UPSTREAM__XNAME_PREFIX", "x1000c0"),
            ("RACKBOOT_UPSTREAM__TOKEN_FILE", token_path.as_str()),
            ("RACKBOOT_UPSTREAM__INTERVAL", interval),
            // A BMC discovered here gets its xname from the map (the sequential rule would
            // pick a slot the upstream's nodes already use).
            (
                "RACKBOOT_DISCOVERY__XNAMES",
                r#"{ "192.0.2.210" = "x1000c0s9b0" }"#,
            ),
        ]
    };

    // Phase 1: one pull at start (interval 1h), so the on-demand lookup is the only way in.
    let down = Rackboot::start_with_env(&ns, &env("1h")).unwrap();
    wait_until("the first pull", 30, || {
        json(&down, "/rackboot/v1/upstream")["last_pull"].is_string()
    });
    let comps = json(&down, "/hsm/v2/State/Components").to_string();
    assert!(comps.contains(N0.0) && comps.contains(N1.0), "{comps}");
    assert!(!comps.contains(OTHER.0), "out of scope pulled: {comps}");
    let eis = json(&down, "/hsm/v2/Inventory/EthernetInterfaces").to_string();
    assert!(eis.contains(N0.1) && !eis.contains(OTHER.1), "{eis}");
    let bps = json(&down, "/boot/v1/bootparameters").to_string();
    assert!(bps.contains(N1.1) && !bps.contains(OTHER.1), "{bps}");
    let groups = json(&down, "/hsm/v2/groups").to_string();
    assert!(
        groups.contains(N0.0) && !groups.contains(OTHER.0),
        "{groups}"
    );
    let ci = json(&down, "/cloud-init/admin/groups/compute").to_string();
    assert!(ci.contains("\"role\":\"compute\""), "{ci}");
    let ci = json(&down, &format!("/cloud-init/admin/instance-info/{}", N0.0)).to_string();
    assert!(ci.contains("x1000c0"), "{ci}");
    let status = json(&down, "/rackboot/v1/upstream");
    assert_eq!(status["reachable"], true, "{status}");
    assert_eq!(status["upstream_owned"]["components"], 2, "{status}");
    // Out of scope is never served, not even through the on-demand lookup.
    let (_, script) = down
        .http("GET", &format!("/boot/v1/bootscript?mac={}", OTHER.1), None)
        .unwrap();
    assert!(!script.contains("kernel "), "{script}");
    // A node registered upstream after the pull: its first bootscript asks the upstream.
    up.register_node(N2.0, 13, N2.1, N2.2).unwrap();
    let (_, script) = down
        .http("GET", &format!("/boot/v1/bootscript?mac={}", N2.1), None)
        .unwrap();
    assert!(
        script.contains(&format!("xname={}", N2.0)),
        "on-demand lookup: {script}\n{}",
        down.log_text()
    );

    // The same for DHCP: an unknown client's first DISCOVER waits for the upstream lookup and
    // gets the node's static address, not one from the pool.
    up.register_node(N3.0, 14, N3.1, N3.2).unwrap();
    let client = ns.add_client_ns().unwrap();
    client.ip(&["link", "set", "vc", "address", N3.1]).unwrap();
    let script = work.path().join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] && echo \"LEASE $ip\"\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = client
        .cmd("udhcpc")
        .args(["-i", "vc", "-n", "-q", "-t", "1", "-T", "5", "-s"])
        .arg(&script)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.contains(&format!("LEASE {}", N3.2)),
        "{out}\n{}",
        down.log_text()
    );
    drop(client);

    // Phase 2: periodic sync (kill -9 and restart with a 1 s interval: nothing is lost).
    let down = down.kill9_and_restart_env(&ns, &env("1s")).unwrap();
    down.import_node_images().unwrap();
    // A change upstream arrives within an interval; a steady state writes nothing.
    let (code, _) = up
        .http(
            "PUT",
            &format!("/hsm/v2/State/Components/{}", N1.0),
            Some(&format!(
                r#"{{"ID":"{}","Type":"Node","State":"Ready","Enabled":true,"NID":11,"Role":"Service"}}"#,
                N1.0
            )),
        )
        .unwrap();
    assert!((200..300).contains(&code));
    wait_until("the role change", 10, || {
        json(&down, &format!("/hsm/v2/State/Components/{}", N1.0))["Role"] == "Service"
    });
    wait_until("a pull with nothing to write", 10, || {
        let s = json(&down, "/rackboot/v1/upstream");
        s["last_pull_stats"]["written"] == 0 && s["last_pull_stats"]["unchanged"].as_i64() > Some(5)
    });
    // Pushes: a RedfishEndpoint created here (as magellan would) reaches the upstream.
    let (code, body) = down
        .http(
            "POST",
            "/hsm/v2/Inventory/RedfishEndpoints",
            Some(&endpoint("x1000c0s4b0", "10.1.0.4")),
        )
        .unwrap();
    assert_eq!(code, 201, "{body}");
    wait_until("the push", 15, || {
        up.http(
            "GET",
            "/hsm/v2/Inventory/RedfishEndpoints/x1000c0s4b0",
            None,
        )
        .unwrap()
        .0 == 200
    });

    // A boot that gives up (the retry chain's last script) flags the node Alert upstream.
    let (code, _) = down
        .http(
            "GET",
            &format!("/boot/v1/bootscript?mac={}&retry=10", N1.1),
            None,
        )
        .unwrap();
    assert_eq!(code, 200);
    wait_until("the Alert flag upstream", 15, || {
        json(&up, &format!("/hsm/v2/State/Components/{}", N1.0))["Flag"] == "Alert"
    });

    // N0 is Off upstream; when it boots and phones home, the rack pushes Ready.
    let (code, _) = up
        .http(
            "PATCH",
            &format!("/hsm/v2/State/Components/{}/StateData", N0.0),
            Some(r#"{"State":"Off"}"#),
        )
        .unwrap();
    assert_eq!(code, 204);

    // Outage: the upstream dies.
    let mut up = up;
    up.kill();
    wait_until("the downstream to notice", 15, || {
        json(&down, "/rackboot/v1/upstream")["reachable"] == false
    });
    for (id, fqdn) in [
        ("x1000c0s5b0", "10.1.0.5"),
        ("x1000c0s6b0", "10.1.0.6"),
        ("x1000c0s6b0", "10.1.0.66"),
    ] {
        let (code, body) = down
            .http(
                "PUT",
                &format!("/hsm/v2/Inventory/RedfishEndpoints/{id}"),
                Some(&endpoint(id, fqdn)),
            )
            .unwrap();
        assert!((200..300).contains(&code), "{code} {body}");
    }
    // A BMC discovered during the outage: its RedfishEndpoint waits in the outbox too.
    let bmc_ns = ns.add_client_ns().unwrap();
    bmc_ns
        .ip(&["addr", "add", "192.0.2.210/24", "dev", "vc"])
        .unwrap();
    let _bmc = FakeBmc::start(
        &bmc_ns,
        &sushy,
        "192.0.2.210",
        &[(
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "fednode",
            "52:54:00:dd:00:0a",
        )],
        "admin",
        "pw",
    )
    .unwrap();
    let cli = |rb: &Rackboot, args: &[&str], input: Option<&str>| rb.cli(&ns, args, input);
    let (ok, out) = cli(
        &down,
        &["bmc", "creds-set", "--username", "admin"],
        Some("pw\n"),
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(&down, &["discover", "https://192.0.2.210"], None);
    assert!(ok && out.contains("x1000c0s9b0"), "{out}");
    let s = json(&down, "/rackboot/v1/upstream");
    assert!(s["outbox_depth"].as_i64() >= Some(4), "{s}");
    assert!(s["last_error"].is_string(), "{s}");
    // A node whose data is cached boots exactly as before.
    let mut vm = Qemu::start(&mut ns, Firmware::SeaBiosIpxe, N0.1).unwrap();
    if let Err(e) = vm.wait_for("RACKBOOT-PHONED-HOME", Duration::from_secs(300)) {
        panic!("{e}\n{}\n{}", vm.console(), down.log_text());
    }
    assert!(
        vm.console().contains(&format!("ip={}", N0.2)),
        "{}",
        vm.console()
    );
    drop(vm);
    // kill -9 the downstream; the outbox survives.
    let down = down.kill9_and_restart_env(&ns, &env("1s")).unwrap();
    let s = json(&down, "/rackboot/v1/upstream");
    assert!(s["outbox_depth"].as_i64() >= Some(3), "outbox lost: {s}");
    // The upstream returns: the outbox drains, one copy of each, the last write winning.
    let up = up.kill9_and_restart_env(&ns, &up_env()).unwrap();
    wait_until("the outbox to drain", 30, || {
        json(&down, "/rackboot/v1/upstream")["outbox_depth"] == 0
    });
    let eps = json(&up, "/hsm/v2/Inventory/RedfishEndpoints");
    let ids: Vec<&str> = eps["RedfishEndpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ID"].as_str().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "duplicates upstream: {ids:?}");
    assert_eq!(
        sorted,
        vec!["x1000c0s4b0", "x1000c0s5b0", "x1000c0s6b0", "x1000c0s9b0"]
    );
    let s9 = json(&up, "/hsm/v2/Inventory/RedfishEndpoints/x1000c0s9b0").to_string();
    assert!(
        s9.contains("52:54:00:dd:00:0a"),
        "the discovery's systems went up: {s9}"
    );
    let s6 = json(&up, "/hsm/v2/Inventory/RedfishEndpoints/x1000c0s6b0");
    assert_eq!(s6["FQDN"], "10.1.0.66", "order kept: {s6}");
    let n0 = json(&up, &format!("/hsm/v2/State/Components/{}", N0.0));
    assert_eq!(
        n0["State"], "Ready",
        "the phone-home reached the upstream: {n0}"
    );

    // A refused token is reported with what to do; a replaced token file is picked up.
    std::fs::write(&token_file, "not-a-token").unwrap();
    wait_until("the auth error", 15, || {
        let s = json(&down, "/rackboot/v1/upstream");
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("401") && e.contains("upstream.token_file"))
    });
    let out = down.http("GET", "/rackboot/v1/upstream", None).unwrap().1;
    assert!(out.contains("expired or revoked"), "{out}");
    std::fs::write(&token_file, mint(&up, "30m")).unwrap();
    wait_until("recovery with the new token", 15, || {
        json(&down, "/rackboot/v1/upstream")["last_error"].is_null()
    });
    // allow_local = false: the rack takes inventory changes only from upstream.
    let mut strict = env("1s");
    strict.push(("RACKBOOT_UPSTREAM__ALLOW_LOCAL", "false"));
    let down = down.kill9_and_restart_env(&ns, &strict).unwrap();
    let (code, body) = down
        .http(
            "POST",
            "/hsm/v2/State/Components",
            Some(r#"{"Components":[{"ID":"x1000c0s9b0n0","Type":"Node"}]}"#),
        )
        .unwrap();
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("make the change upstream"), "{body}");
    let (code, body) = down
        .http(
            "POST",
            "/hsm/v2/Inventory/RedfishEndpoints",
            Some(&endpoint("x1000c0s7b0", "10.1.0.7")),
        )
        .unwrap();
    assert_eq!(code, 201, "discoveries still land and go up: {body}");

    // The CLI shows the same.
    let out = ns
        .cmd(rackboot_bin().unwrap().to_str().unwrap())
        .arg("upstream")
        .env("RACKBOOT_URL", "http://192.0.2.1")
        .env("RACKBOOT_DATA_DIR", down.data_dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("reachable:     yes") && text.contains("x1000c0"),
        "{text}"
    );
}
