//! Post-boot configuration and visibility, end to end: a QEMU node boots, fetches its
//! cloud-init documents from the seed URL on its kernel command line, gets its own templated
//! data merged over its group's and the cluster defaults, phones home; its timeline lists every
//! stage in order; `/metrics` parses with the Prometheus client library's parser; `rackboot
//! status` shows it; and all of it survives `kill -9` of rackboot.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use qemu_tests::{Firmware, Netns, Qemu, Rackboot, preflight};
use serde_json::{Value, json};

const XNAME: &str = "x1000c0s3b0n0";
const MAC: &str = "52:54:00:aa:03:01";
const IP: &str = "192.0.2.53";

fn cli(ns: &Netns, rb: &Rackboot, args: &[&str]) -> (bool, String) {
    rb.cli(ns, args, None)
}

/// The text the node printed between `RACKBOOT-CI-BEGIN doc` and `RACKBOOT-CI-END doc`.
fn block(console: &str, doc: &str) -> String {
    let begin = format!("RACKBOOT-CI-BEGIN {doc}");
    let end = format!("RACKBOOT-CI-END {doc}");
    let mut out = Vec::new();
    let mut inside = false;
    for line in console.lines() {
        let line = line.trim_end_matches('\r');
        if line.contains(&end) {
            break;
        }
        if inside {
            out.push(line);
        }
        if line.contains(&begin) {
            inside = true;
        }
    }
    out.join("\n")
}

fn json_of(rb: &Rackboot, method: &str, path: &str, body: Option<&str>, want: u16) -> Value {
    let (code, text) = rb.http(method, path, body).unwrap();
    assert_eq!(code, want, "{method} {path}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn stages(rb: &Rackboot) -> Vec<Value> {
    let t = json_of(
        rb,
        "GET",
        &format!("/rackboot/v1/nodes/{XNAME}/timeline"),
        None,
        200,
    );
    t["boots"]
        .as_array()
        .and_then(|b| b.last())
        .map(|b| b["events"].as_array().unwrap().clone())
        .unwrap_or_default()
}

#[test]
fn node_gets_merged_cloud_init_phones_home_and_its_timeline_survives_restart() {
    if !preflight(true) {
        return;
    }
    let mut ns = Netns::new("ci").unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    rb.import_node_images().unwrap();
    rb.register_node(XNAME, 3, MAC, IP).unwrap();
    json_of(
        &rb,
        "POST",
        "/hsm/v2/groups",
        Some(&format!(
            r#"{{"label":"compute","members":{{"ids":["{XNAME}"]}}}}"#
        )),
        201,
    );

    // Cluster defaults < group (by priority) < node, set through the API and the CLI.
    let defaults = json!({
        "cluster-name": "demo",
        "public-keys": ["ssh-ed25519 AAAAdemo admin@rack"],
        "file": {"content": "packages: [vim]\nwrite_files:\n  - path: /etc/motd\n    content: \"cluster {{ cluster_name }}\"\n"},
    });
    json_of(
        &rb,
        "PUT",
        "/cloud-init/admin/cluster-defaults",
        Some(&defaults.to_string()),
        200,
    );
    let group = json!({
        "name": "compute", "priority": 10, "meta-data": {"role": "compute"},
        "file": {"content": "packages: [slurm]\nruncmd:\n  - \"echo {{ xname }} in {{ groups | join(',') }}\"\n"},
    });
    json_of(
        &rb,
        "PUT",
        "/cloud-init/admin/groups/compute",
        Some(&group.to_string()),
        200,
    );
    // A bad template is refused when written, naming the line.
    let bad = json!({"file": {"content": "a: 1\nb: {{ no_such_variable }}\n"}});
    let (code, text) = rb
        .http(
            "PUT",
            &format!("/cloud-init/admin/instance-info/{XNAME}"),
            Some(&bad.to_string()),
        )
        .unwrap();
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("line 2"), "{text}");
    let user_data = rb.data_dir.path().join("node-user-data.yaml");
    std::fs::write(
        &user_data,
        "hostname: \"{{ hostname }}\"\npackages: [htop]\n",
    )
    .unwrap();
    let (ok, out) = cli(
        &ns,
        &rb,
        &[
            "cloud-init",
            "set",
            XNAME,
            "--user-data",
            user_data.to_str().unwrap(),
            "--meta-data",
            r#"{"rack":"r1"}"#,
        ],
    );
    assert!(ok, "{out}");
    let (ok, rendered) = cli(&ns, &rb, &["cloud-init", "render", XNAME]);
    assert!(
        ok && rendered.contains("htop") && rendered.contains("#include"),
        "{rendered}"
    );

    // Hostile and unknown callers.
    let (code, text) = rb.http("GET", "/cloud-init/meta-data", None).unwrap();
    assert_eq!(code, 422, "the appliance's own address is no node: {text}");
    let (code, _) = ns
        .cmd("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("X-Forwarded-For: {IP}"),
        ])
        .arg("http://192.0.2.1/cloud-init/meta-data")
        .output()
        .map(|o| (String::from_utf8_lossy(&o.stdout).into_owned(), ()))
        .unwrap();
    assert_eq!(
        code, "422",
        "X-Forwarded-For from an untrusted peer is ignored"
    );
    let (code, text) = rb
        .http("GET", &format!("/cloud-init/{XNAME}/user-data"), None)
        .unwrap();
    assert_eq!(
        code, 403,
        "only the node reads its own data by name: {text}"
    );

    // Boot the node: the initramfs plays cloud-init's NoCloud datasource and phones home.
    let mut vm = Qemu::start(&mut ns, Firmware::SeaBiosIpxe, MAC).unwrap();
    if let Err(e) = vm.wait_for("RACKBOOT-PHONED-HOME", Duration::from_secs(400)) {
        panic!("{e:#}\n---- rackboot log ----\n{}", rb.log_text());
    }
    let console = vm.console();
    assert!(!console.contains("RACKBOOT-CI-FAIL"), "{console}");
    let ud = block(&console, "user-data");
    assert!(ud.starts_with("#cloud-config"), "{ud}");
    let pk = |s: &str| {
        ud.find(s)
            .unwrap_or_else(|| panic!("{s} missing from user-data:\n{ud}"))
    };
    assert!(
        pk("vim") < pk("slurm") && pk("slurm") < pk("htop"),
        "merge order defaults < group < node:\n{ud}"
    );
    assert!(ud.contains("hostname: nid0003"), "{ud}");
    assert!(ud.contains(&format!("echo {XNAME} in compute")), "{ud}");
    assert!(ud.contains("cluster demo"), "{ud}");
    let md = block(&console, "meta-data");
    for want in [
        format!("instance-id: i-{XNAME}"),
        "local-hostname: nid0003".into(),
        "cluster-name: demo".into(),
        format!("local_ipv4: {IP}"),
        "role: compute".into(),
        "rack: r1".into(),
        "ssh-ed25519 AAAAdemo admin@rack".into(),
    ] {
        assert!(md.contains(&want), "{want} missing from meta-data:\n{md}");
    }
    let vd = block(&console, "vendor-data");
    assert!(
        vd.contains(&format!(
            "#include\nhttp://192.0.2.1/cloud-init/{XNAME}/compute.yaml"
        )),
        "{vd}"
    );

    // The timeline lists every stage in order (the writer is asynchronous: wait for the end).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut events = stages(&rb);
    while !events.iter().any(|e| e["stage"] == "phone_home") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        events = stages(&rb);
    }
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    let pos = |s: &str| {
        names
            .iter()
            .position(|n| *n == s)
            .unwrap_or_else(|| panic!("no {s} in {names:?}"))
    };
    let order = [
        "ipxe_dhcp_discover",
        "ipxe_dhcp",
        "bootscript",
        "kernel",
        "initrd",
        "os_dhcp",
        "cloud_init_meta_data",
        "cloud_init_user_data",
        "cloud_init_vendor_data",
        "phone_home",
    ];
    for w in order.windows(2) {
        assert!(pos(w[0]) < pos(w[1]), "{} before {}: {names:?}", w[0], w[1]);
    }
    let kernel = &events[pos("kernel")]["detail"];
    let size = std::fs::metadata(qemu_tests::root().join("build/node/vmlinuz"))
        .unwrap()
        .len();
    assert_eq!(kernel["bytes"].as_u64(), Some(size), "{kernel}");
    assert!(kernel["duration_ms"].as_u64().is_some(), "{kernel}");
    assert_eq!(events[pos("ipxe_dhcp")]["detail"]["ip"], IP);

    // rackboot status: table and JSON.
    let (ok, table) = cli(&ns, &rb, &["status"]);
    assert!(
        ok && table.contains(XNAME) && table.contains("phone_home"),
        "{table}"
    );
    assert!(table.lines().next().unwrap().starts_with("NODE"), "{table}");
    let (ok, out) = cli(&ns, &rb, &["status", "-o", "json"]);
    assert!(ok, "{out}");
    let status: Value = serde_json::from_str(&out).unwrap();
    let me = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["xname"] == XNAME)
        .unwrap();
    assert_eq!(me["stage"], "phone_home");
    assert_eq!(me["stuck"], false);
    let (ok, out) = cli(&ns, &rb, &["timeline", XNAME]);
    assert!(ok && out.contains("kernel") && out.contains("+"), "{out}");

    // /metrics parses with the Prometheus client library's OpenMetrics parser, and counters moved.
    let (code, metrics) = rb.http("GET", "/metrics", None).unwrap();
    assert_eq!(code, 200);
    let parsed = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys, json\n\
             from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
             out = {}\n\
             for f in text_string_to_metric_families(sys.stdin.read()):\n\
             \x20   for s in f.samples:\n\
             \x20       key = s.name + json.dumps(s.labels, sort_keys=True)\n\
             \x20       out[key] = s.value\n\
             print(json.dumps(out))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(metrics.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        parsed.status.success(),
        "{}\n{metrics}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let samples: serde_json::Map<String, Value> = serde_json::from_slice(&parsed.stdout).unwrap();
    let sample = |name: &str, labels: &str| {
        samples
            .get(&format!("{name}{labels}"))
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
    };
    assert!(
        sample(
            "rackboot_dhcp_packets_total",
            r#"{"outcome": "ack", "type": "request"}"#
        ) >= 2.0,
        "{metrics}"
    );
    assert!(
        sample("rackboot_image_bytes_total", r#"{"image": "vmlinuz"}"#) >= size as f64,
        "{metrics}"
    );
    assert!(
        sample(
            "rackboot_boot_events_total",
            r#"{"ok": "true", "stage": "phone_home"}"#
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        sample("rackboot_nodes_by_stage", r#"{"stage": "phone_home"}"#) >= 1.0,
        "{metrics}"
    );
    assert!(
        sample("rackboot_dhcp_active_leases", "{}") >= 1.0,
        "{metrics}"
    );
    assert!(
        samples
            .keys()
            .any(|k| k.starts_with("rackboot_http_request_duration_seconds_bucket")),
        "{metrics}"
    );

    // kill -9 and restart: cloud-init data and timeline history are still there.
    let before = stages(&rb).len();
    let rb = rb.kill9_and_restart(&ns).unwrap();
    let r = json_of(
        &rb,
        "GET",
        &format!("/cloud-init/admin/render/{XNAME}"),
        None,
        200,
    );
    let ud = r["user-data"].as_str().unwrap();
    assert!(
        ud.contains("htop") && ud.contains("slurm") && ud.contains("vim"),
        "{ud}"
    );
    assert_eq!(stages(&rb).len(), before, "timeline survives kill -9");
}
