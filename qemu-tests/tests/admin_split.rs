//! The admin API kept off the rack network by binding, not by a firewall
//! (`--admin-interface` / `listen.admin_interfaces`): a host on the rack segment reaches the boot
//! path and enrollment only, even when it routes to the management address through the
//! appliance; the management network reaches the admin API and nothing of enrollment.

use qemu_tests::{Netns, Rackboot, preflight, rackboot_bin};

const MGMT: &str = "198.51.100.1";

/// `curl` from `ns`: (curl's exit code, HTTP status, body).
fn curl(ns: &Netns, url: &str, token: Option<&str>) -> (i32, u16, String) {
    let mut c = ns.cmd("curl");
    c.args(["-sk", "-m", "10", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = c.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_owned(),
    )
}

/// A management network: `mgmt0` (198.51.100.1/24) in the appliance's namespace, its peer in a
/// namespace of its own at 198.51.100.2.
fn management_ns(ns: &Netns) -> Netns {
    let m = Netns::new("mgmt").expect("management namespace");
    ns.ip(&[
        "link", "add", "mgmt0", "type", "veth", "peer", "name", "mgmtc", "netns", &m.name,
    ])
    .expect("veth");
    ns.ip(&["addr", "add", &format!("{MGMT}/24"), "dev", "mgmt0"])
        .expect("addr");
    ns.ip(&["link", "set", "mgmt0", "up"]).expect("up");
    m.ip(&["addr", "add", "198.51.100.2/24", "dev", "mgmtc"])
        .expect("addr");
    m.ip(&["link", "set", "mgmtc", "up"]).expect("up");
    m
}

#[test]
fn admin_api_answers_only_on_management_interfaces() {
    if !preflight(false) {
        return;
    }
    let ns = Netns::new("split").expect("namespace");
    let mgmt = management_ns(&ns);
    // The attacker: a host on the rack segment that also routes the management subnet through
    // the appliance (Linux accepts a packet for any local address on any interface).
    let rack = ns.add_client_ns().expect("rack client");
    rack.ip(&["addr", "add", "192.0.2.9/24", "dev", "vc"])
        .expect("addr");
    rack.ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.1"])
        .expect("route");
    // `lo` too: the readiness probe and the local CLI reach the admin API on 127.0.0.1/192.0.2.1
    // through the loopback device.
    let rb = Rackboot::start_with_env(&ns, &[("RACKBOOT_ADMIN_INTERFACES", "mgmt0,lo")])
        .expect("rackboot");
    let log = rb.log_text();
    assert!(
        log.contains("admin API listening") && log.contains("mgmt0"),
        "{log}"
    );
    let token = rb
        .mint_token(&rackboot_bin().expect("binary"), "10m")
        .expect("token");
    let components = "/hsm/v2/State/Components";

    // Rack network: the boot path answers, the admin API does not exist, even with a token and
    // even addressed to the management address.
    let (_, code, _) = curl(&rack, "http://192.0.2.1/boot/v1/service/status", None);
    assert_eq!(code, 200);
    for host in ["192.0.2.1", MGMT] {
        let (_, code, body) = curl(&rack, &format!("http://{host}{components}"), Some(&token));
        assert_eq!(
            code, 404,
            "admin API on the rack network via {host}: {body}"
        );
        assert!(body.contains("management interfaces"), "{body}");
    }
    // Enrollment (HTTPS) is on the rack network.
    let (rc, _, _) = curl(&rack, "https://192.0.2.1/identity/v1/ca.pem", None);
    assert_ne!(
        rc, 7,
        "the identity HTTPS listener refused a rack connection"
    );

    // Management network: the admin API, token required; no enrollment listener.
    let (_, code, _) = curl(&mgmt, &format!("http://{MGMT}{components}"), None);
    assert_eq!(code, 401);
    let (_, code, body) = curl(&mgmt, &format!("http://{MGMT}{components}"), Some(&token));
    assert_eq!(code, 200, "{body}");
    let (rc, _, _) = curl(&mgmt, &format!("https://{MGMT}/identity/v1/ca.pem"), None);
    assert_eq!(
        rc, 7,
        "the identity HTTPS listener answered on the management network"
    );
}

#[test]
fn admin_interface_misconfiguration_is_refused_at_start() {
    if !preflight(false) {
        return;
    }
    let ns = Netns::new("splitbad").expect("namespace");
    let bin = rackboot_bin().expect("binary");
    let dir = tempfile::tempdir().expect("tempdir");
    for (iface, want) in [
        ("br0", "is the rack interface"),
        ("nope0", "no such interface"),
    ] {
        let out = ns
            .cmd(bin.to_str().expect("path"))
            .args(["serve", "--interface", "br0", "--data-dir"])
            .arg(dir.path())
            .args(["--admin-interface", iface])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "started with --admin-interface {iface}"
        );
        assert!(err.contains(want), "{iface}: {err}");
    }
}
