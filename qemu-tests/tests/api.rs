//! The running server's API and CLI as a sysadmin uses them: real binary, real HTTP, hostile
//! input, auth, and durability across `kill -9`.

use qemu_tests::{Netns, Rackboot, preflight, rackboot_bin};

fn cli(ns: &Netns, rb: &Rackboot, args: &[&str]) -> (bool, String) {
    rb.cli(ns, args, None)
}

#[test]
fn cli_manages_nodes_and_boot_parameters_and_survives_kill_9() {
    if !preflight(false) {
        return;
    }
    let ns = Netns::new("cli").unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    let (ok, out) = cli(
        &ns,
        &rb,
        &[
            "node",
            "add",
            "x1000c0s3b0n0",
            "--mac",
            "52:54:00:CC:00:01",
            "--ip",
            "192.0.2.80",
            "--nid",
            "12",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(
        &ns,
        &rb,
        &[
            "boot",
            "set",
            "--xname",
            "x1000c0s3b0n0",
            "--kernel",
            "http://192.0.2.1/images/k",
            "--params",
            "quiet",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(&ns, &rb, &["node", "list"]);
    assert!(
        ok && out.contains("x1000c0s3b0n0")
            && out.contains("52:54:00:cc:00:01")
            && out.contains("192.0.2.80"),
        "{out}"
    );
    let (ok, out) = cli(
        &ns,
        &rb,
        &["boot", "show", "-o", "json", "--xname", "x1000c0s3b0n0"],
    );
    assert!(ok && out.contains("http://192.0.2.1/images/k"), "{out}");
    // A bad xname is refused by the CLI with the reason.
    let (ok, out) = cli(
        &ns,
        &rb,
        &[
            "node",
            "add",
            "garbage",
            "--mac",
            "52:54:00:cc:00:02",
            "--ip",
            "192.0.2.81",
        ],
    );
    assert!(!ok && out.contains("xname"), "{out}");

    // kill -9, restart on the same data dir: everything acknowledged is still there.
    let rb = rb.kill9_and_restart(&ns).unwrap();
    let (code, script) = rb
        .http("GET", "/boot/v1/bootscript?mac=52:54:00:cc:00:01", None)
        .unwrap();
    assert_eq!(code, 200);
    assert!(
        script.contains(
            "kernel --name kernel http://192.0.2.1/images/k quiet xname=x1000c0s3b0n0 nid=12"
        ),
        "{script}"
    );
    let (ok, out) = cli(&ns, &rb, &["node", "rm", "x1000c0s3b0n0"]);
    assert!(ok, "{out}");
    let (code, _) = rb
        .http("GET", "/hsm/v2/State/Components/x1000c0s3b0n0", None)
        .unwrap();
    assert_eq!(code, 404);
}

#[test]
fn hostile_and_unauthorised_requests_get_problems() {
    if !preflight(false) {
        return;
    }
    let ns = Netns::new("hostile").unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    for (method, path, body, want) in [
        ("POST", "/boot/v1/bootparameters", "{not json", 400),
        (
            "POST",
            "/boot/v1/bootparameters",
            r#"{"hosts":["x1000c0s0b0"],"kernel":"k"}"#,
            400,
        ),
        (
            "POST",
            "/boot/v1/bootparameters",
            r#"{"macs":["zz:zz"],"kernel":"k"}"#,
            400,
        ),
        (
            "POST",
            "/boot/v1/bootparameters",
            "{\"macs\":[\"52:54:00:00:00:01\"],\"kernel\":\"k\",\"params\":\"a\\nchain http://evil\"}",
            400,
        ),
        (
            "POST",
            "/hsm/v2/Inventory/EthernetInterfaces",
            r#"{"MACAddress":"52:54:00:00:00:09","IPAddresses":[{"IPAddress":"300.1.1.1"}]}"#,
            400,
        ),
        (
            "POST",
            "/hsm/v2/State/Components",
            r#"{"Components":[{"ID":"not-an-xname"}]}"#,
            400,
        ),
        ("GET", "/no/such/route", "", 404),
        ("GET", "/boot/v1/bootscript", "", 400),
    ] {
        let (code, resp) = rb
            .http(method, path, (!body.is_empty()).then_some(body))
            .unwrap();
        assert_eq!(code, want, "{method} {path} {body}: {resp}");
        let v: serde_json::Value =
            serde_json::from_str(&resp).unwrap_or_else(|_| panic!("not problem JSON: {resp}"));
        assert_eq!(v["status"], want);
        assert!(
            v["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{resp}"
        );
    }
    // Duplicates: EthernetInterface 409 (SMD), boot parameters 400 (BSS).
    let ei = r#"{"MACAddress":"52:54:00:00:00:0A","IPAddresses":[{"IPAddress":"192.0.2.90"}]}"#;
    assert_eq!(
        rb.http("POST", "/hsm/v2/Inventory/EthernetInterfaces", Some(ei))
            .unwrap()
            .0,
        201
    );
    assert_eq!(
        rb.http("POST", "/hsm/v2/Inventory/EthernetInterfaces", Some(ei))
            .unwrap()
            .0,
        409
    );
    let bp = r#"{"macs":["52:54:00:00:00:0a"],"kernel":"http://k"}"#;
    assert_eq!(
        rb.http("POST", "/boot/v1/bootparameters", Some(bp))
            .unwrap()
            .0,
        201
    );
    let (code, resp) = rb
        .http("POST", "/boot/v1/bootparameters", Some(bp))
        .unwrap();
    assert_eq!(code, 400, "{resp}");
    // Uppercase MACs match what was stored lowercase.
    let (code, resp) = rb
        .http("GET", "/boot/v1/bootparameters?mac=52:54:00:00:00:0A", None)
        .unwrap();
    assert_eq!(code, 200, "{resp}");
    // No token → 401; a token without the scope → 403; the boot path stays open.
    let out = ns
        .cmd("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://192.0.2.1/hsm/v2/State/Components",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    let bin = rackboot_bin().unwrap();
    let tok = std::process::Command::new(&bin)
        .args([
            "token",
            "create",
            "--scope",
            "images:read",
            "--ttl",
            "5m",
            "--data-dir",
        ])
        .arg(rb.data_dir.path())
        .output()
        .unwrap();
    let tok = String::from_utf8_lossy(&tok.stdout).trim().to_owned();
    let out = ns
        .cmd("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Authorization: Bearer {tok}"),
        ])
        .arg("http://192.0.2.1/boot/v1/bootparameters")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
    let out = ns
        .cmd("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://192.0.2.1/boot/v1/bootscript?mac=52:54:00:00:00:0a",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    // The server is still healthy after all of it.
    assert_eq!(
        rb.http("GET", "/boot/v1/service/status", None).unwrap().0,
        200
    );
}

/// Every path and method in /openapi.json is served (no 405, no fallback "no route" 404), and
/// the health routes are open, as in SMD.
#[test]
fn openapi_document_matches_the_router() {
    if !preflight(false) {
        return;
    }
    let ns = Netns::new("oapi").unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    let (code, doc) = rb.http("GET", "/openapi.json", None).unwrap();
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{paths:?}");
    for (path, ops) in paths {
        let concrete = path
            .replace("{xname}", "x1000c0s0b0n0")
            .replace("{id}", "525400000001")
            .replace("{label}", "compute")
            .replace("{name}", "sample");
        for (method, op) in ops.as_object().unwrap() {
            // A stream never ends; its route is checked by the event-stream test. HTTPS-only
            // routes (enrollment, mTLS) are checked by tests/identity.rs.
            if op.to_string().contains("text/event-stream") || op["x-rackboot-listener"] == "https"
            {
                continue;
            }
            let m = method.to_ascii_uppercase();
            let body = (m != "GET").then_some("{}");
            let (code, resp) = rb.http(&m, &concrete, body).unwrap();
            assert_ne!(code, 405, "{m} {path}: {resp}");
            assert!(
                !(code == 404 && resp.contains("no route for")),
                "{m} {path} is documented but not routed"
            );
        }
    }
    for path in [
        "/hsm/v2/service/ready",
        "/hsm/v2/service/liveness",
        "/boot/v1/service/status",
    ] {
        let out = ns
            .cmd("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://192.0.2.1{path}"),
            ])
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            code == "200" || code == "204",
            "{path} must be open: {code}"
        );
    }
}

/// SMD groups as `ochami smd group …` drives them: create, members (add, duplicate, replace,
/// remove), patch, memberships; concurrent member additions are all kept.
#[test]
fn smd_groups_and_members() {
    if !preflight(false) {
        return;
    }
    let ns = Netns::new("grp").unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    let json = |s: &str| -> serde_json::Value { serde_json::from_str(s).unwrap() };
    let (code, body) = rb
        .http(
            "POST",
            "/hsm/v2/groups",
            Some(r#"{"label":"compute","description":"all","tags":["a"],"members":{"ids":["x1000c0s0b0n0"]}}"#),
        )
        .unwrap();
    assert_eq!(code, 201, "{body}");
    let (code, _) = rb
        .http("POST", "/hsm/v2/groups", Some(r#"{"label":"compute"}"#))
        .unwrap();
    assert_eq!(code, 409);
    let (code, body) = rb
        .http(
            "POST",
            "/hsm/v2/groups/compute/members",
            Some(r#"{"id":"x1000c0s0b0n0"}"#),
        )
        .unwrap();
    assert_eq!(code, 409, "{body}");
    let (code, _) = rb
        .http(
            "POST",
            "/hsm/v2/groups/compute/members",
            Some(r#"{"id":"not-an-xname"}"#),
        )
        .unwrap();
    assert_eq!(code, 400);

    // Twenty concurrent additions: none lost.
    std::thread::scope(|s| {
        for i in 1..=20 {
            let rb = &rb;
            s.spawn(move || {
                let body = format!(r#"{{"id":"x1000c0s{i}b0n0"}}"#);
                let (code, resp) = rb
                    .http("POST", "/hsm/v2/groups/compute/members", Some(&body))
                    .unwrap();
                assert_eq!(code, 201, "{resp}");
            });
        }
    });
    let (_, body) = rb
        .http("GET", "/hsm/v2/groups/compute/members", None)
        .unwrap();
    assert_eq!(json(&body)["ids"].as_array().unwrap().len(), 21, "{body}");

    let (code, body) = rb
        .http(
            "PATCH",
            "/hsm/v2/groups/compute",
            Some(r#"{"description":"compute nodes","tags":["b","c"]}"#),
        )
        .unwrap();
    assert_eq!(code, 204, "{body}");
    let (_, body) = rb.http("GET", "/hsm/v2/groups/compute", None).unwrap();
    let g = json(&body);
    assert_eq!(g["description"], "compute nodes");
    assert_eq!(g["tags"], serde_json::json!(["b", "c"]));
    assert_eq!(
        g["members"]["ids"].as_array().unwrap().len(),
        21,
        "PATCH keeps members"
    );

    let (code, body) = rb
        .http(
            "PUT",
            "/hsm/v2/groups/compute/members",
            Some(r#"{"group":"compute","ids":["x1000c0s1b0n0","x1000c0s2b0n0"]}"#),
        )
        .unwrap();
    // SMD answers 201 with one ResourceURI per member.
    assert_eq!(code, 201, "{body}");
    assert_eq!(json(&body).as_array().map(Vec::len), Some(2), "{body}");
    let (code, _) = rb
        .http(
            "PUT",
            "/hsm/v2/groups/compute/members",
            Some(r#"{"group":"other","ids":[]}"#),
        )
        .unwrap();
    assert_eq!(code, 400);
    let (code, _) = rb
        .http(
            "DELETE",
            "/hsm/v2/groups/compute/members/x1000c0s1b0n0",
            None,
        )
        .unwrap();
    assert_eq!(code, 200);
    let (code, _) = rb
        .http(
            "DELETE",
            "/hsm/v2/groups/compute/members/x1000c0s1b0n0",
            None,
        )
        .unwrap();
    assert_eq!(code, 404);
    let (_, body) = rb
        .http("GET", "/hsm/v2/memberships/x1000c0s2b0n0", None)
        .unwrap();
    assert_eq!(json(&body)["groupLabels"], serde_json::json!(["compute"]));
    // Neither a Component nor a member of any group: SMD's 404.
    let (code, _) = rb
        .http("GET", "/hsm/v2/memberships/x1000c0s1b0n0", None)
        .unwrap();
    assert_eq!(code, 404);
    let (code, _) = rb
        .http(
            "PATCH",
            "/hsm/v2/groups/nope",
            Some(r#"{"description":"x"}"#),
        )
        .unwrap();
    assert_eq!(code, 404);
}

/// Failures land on the timeline and in `/rackboot/v1/status` (last error, stuck flag past
/// `timeline.stuck_after`), and `/rackboot/v1/events` streams them as server-sent events.
#[test]
fn failures_stuck_nodes_and_the_event_stream() {
    if !preflight(false) {
        return;
    }
    let ns = Netns::new("evt").unwrap();
    let rb = Rackboot::start_with_env(&ns, &[("RACKBOOT_TIMELINE__STUCK_AFTER", "2s")]).unwrap();
    let (xname, mac) = ("x1000c0s9b0n0", "52:54:00:aa:09:01");
    rb.register_node(xname, 9, mac, "192.0.2.90").unwrap();
    // Watch the stream the way a dashboard would.
    let token = {
        let out = std::process::Command::new(rackboot_bin().unwrap())
            .args([
                "token",
                "create",
                "--scope",
                "status:read",
                "--ttl",
                "5m",
                "--data-dir",
            ])
            .arg(rb.data_dir.path())
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let stream_file = rb.data_dir.path().join("events.txt");
    let mut curl = ns
        .cmd("curl")
        .args([
            "-s",
            "-N",
            "-m",
            "20",
            "-H",
            &format!("Authorization: Bearer {token}"),
        ])
        .arg("http://192.0.2.1/rackboot/v1/events")
        .stdout(std::fs::File::create(&stream_file).unwrap())
        .spawn()
        .unwrap();
    // The stream is live once it carries an event: ask for the node's script until one shows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(&stream_file)
        .unwrap_or_default()
        .contains("event: boot")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the event stream never carried an event"
        );
        let (code, _) = rb
            .http("GET", &format!("/boot/v1/bootscript?mac={mac}"), None)
            .unwrap();
        assert_eq!(code, 200);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // iPXE comes back through the retry chain: a failed step.
    let (code, _) = rb
        .http(
            "GET",
            &format!("/boot/v1/bootscript?mac={mac}&retry=2"),
            None,
        )
        .unwrap();
    assert_eq!(code, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let node = loop {
        let (_, body) = rb.http("GET", "/rackboot/v1/status", None).unwrap();
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        let node = status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["xname"] == xname)
            .cloned()
            .unwrap();
        if node["stuck"] == true || std::time::Instant::now() > deadline {
            break node;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert_eq!(node["stage"], "bootscript_retry", "{node}");
    assert!(
        node["last_error"].as_str().unwrap().contains("retrying"),
        "{node}"
    );
    assert_eq!(
        node["stuck"], true,
        "no progress for longer than 2s: {node}"
    );
    let (ok, table) = cli(&ns, &rb, &["status", "--stuck"]);
    assert!(
        ok && table.contains(xname) && table.contains("STUCK"),
        "{table}"
    );
    let _ = curl.kill();
    let _ = curl.wait();
    let stream = std::fs::read_to_string(&stream_file).unwrap();
    assert!(
        stream.contains("event: boot")
            && stream.contains("bootscript_retry")
            && stream.contains(mac),
        "SSE stream: {stream}"
    );
    // Without a token the stream is refused, like every admin route.
    let out = ns
        .cmd("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://192.0.2.1/rackboot/v1/events",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
}

/// `rackboot --version` and `/rackboot/v1/status` name the same build: version, the git commit
/// this tree is at, and whether tracked files differed from it.
#[test]
fn version_and_commit_in_the_cli_and_the_status_api() {
    if !preflight(false) {
        return;
    }
    let out = std::process::Command::new(rackboot_bin().unwrap())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let ns = Netns::new("ver").unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    let (_, body) = rb.http("GET", "/rackboot/v1/status", None).unwrap();
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let build = &status["build"];
    let commit = build["commit"].as_str().unwrap();
    let tree = if build["dirty"] == true {
        "dirty"
    } else {
        "clean"
    };
    assert_eq!(
        line.trim(),
        format!(
            "rackboot {} (commit {commit}, tree {tree})",
            build["version"].as_str().unwrap()
        ),
        "{status}"
    );
    assert_eq!(build["version"], env!("CARGO_PKG_VERSION"));
    // Built from this checkout: the commit is its HEAD (a hex object name, not `unknown`).
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(qemu_tests::root())
        .output()
        .unwrap();
    if head.status.success() && std::env::var_os("RACKBOOT_BIN").is_none() {
        assert_eq!(commit, String::from_utf8_lossy(&head.stdout).trim());
    }
    assert!(
        commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "{commit}"
    );
}

/// Under systemd (`Type=notify`, `WatchdogSec`), `rackboot serve` says READY=1 once it
/// answers, then pings WATCHDOG=1, and says STOPPING=1 on SIGTERM: the test plays the service
/// manager's notification socket.
#[test]
fn serve_notifies_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    if !preflight(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let ns = Netns::new("notify").unwrap();
    let mut rb = Rackboot::start_with_env(
        &ns,
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            // 1 s: a ping every 0.5 s.
            ("WATCHDOG_USEC", "1000000"),
        ],
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let mut recv = || {
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert!(first.contains("READY=1"), "{first}");
    assert!(first.contains("STATUS=serving on br0"), "{first}");
    // The server already answers when it says it is ready.
    let (code, _) = rb.http("GET", "/boot/v1/service/status", None).unwrap();
    assert_eq!(code, 200);
    let ping = recv();
    assert_eq!(ping.trim(), "WATCHDOG=1");
    assert!(rb.terminate().unwrap().success());
    let mut last = recv();
    while last.trim() == "WATCHDOG=1" {
        last = recv();
    }
    assert_eq!(last.trim(), "STOPPING=1");
}
