//! Machine identity with a real booting node: the join token rides the boot script, and an
//! attacker on the same bridge who spoofs the node's MAC and address is refused (or, where the
//! `token` policy cannot tell, audited). Helpers: `identity_support`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use qemu_tests::{
    Firmware, Netns, P256, Qemu, Rackboot, agent_initrd, openssl_p256, preflight_with,
};
use serde_json::Value;

mod identity_support;

use identity_support::*;

/// A real node: it PXE-boots, its initramfs runs `rackboot agent enroll` with the token from its
/// kernel command line, fetches its secret over mTLS and prints it; `openssl verify` accepts the
/// certificate it printed, and its timeline shows `identity_enrolled`.
///
/// An attacker host on the same bridge gets no token: before the boot it asks by name and
/// with the node's MAC and address spoofed (no boot of that MAC yet); after the node enrolled
/// and powered off it spoofs MAC and address again (the token of that boot was handed out),
/// asks by name, and replays the token it read from the node's console (used up). Every
/// refusal is an audit row. What the `token` policy cannot stop is shown last: a spoofer that
/// does its own PXE DHCP exchange as the node gets a token and enrolls; the audit shows it.
#[test]
fn a_booting_node_enrolls_and_fetches_its_secret_over_mtls() {
    if !preflight_with(true, &["udhcpc", "openssl"]) {
        return;
    }
    const NODE: (&str, &str, &str) = ("x1000c0s4b0n0", "52:54:00:aa:04:01", "192.0.2.54");
    let mut ns = Netns::new("idq").unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    rb.import_node_images().unwrap();
    rb.import_image("initrd.img", &agent_initrd(w).unwrap())
        .unwrap();
    rb.register_node(NODE.0, 4, NODE.1, NODE.2).unwrap();
    let (ok, out) = rb_cli(
        &ns,
        &rb,
        &["secret", "set", "--node", NODE.0, "node-secret"],
        Some("s3cr3t-for-n4"),
    );
    assert!(ok, "{out}");
    // The attacker: a host on the rack segment with its own address.
    let evil = ns.add_client_ns().unwrap();
    evil.ip(&["addr", "add", "192.0.2.66/24", "dev", "vc"])
        .unwrap();
    let own_mac = mac_of(&evil);
    let no_token = |src: &str, query: &str| {
        let line = script_from(&evil, src, query);
        assert!(!line.contains("rackboot.join="), "{src} {query}: {line}");
    };
    // (c) By name, from its own address.
    no_token("192.0.2.66", &format!("name={}", NODE.0));
    // (a) Before the node boots: its MAC and address spoofed, but that MAC has no lease.
    spoof(&evil, NODE.1, NODE.2, true);
    no_token(NODE.2, &format!("mac={}", NODE.1));
    // Off the segment again before the real node (same MAC) boots.
    spoof(&evil, &own_mac, NODE.2, false);

    let mut vm = Qemu::start(&mut ns, Firmware::SeaBiosIpxe, NODE.1).unwrap();
    if let Err(e) = vm.wait_for("RACKBOOT-SECRET", Duration::from_secs(400)) {
        panic!(
            "{e}\n--- console ---\n{}\n--- log ---\n{}",
            vm.console(),
            rb.log_text()
        );
    }
    let console = vm.console();
    assert!(console.contains("RACKBOOT-ENROLLED"), "{console}");
    assert!(
        console.contains("RACKBOOT-SECRET s3cr3t-for-n4"),
        "{console}\n{}",
        rb.log_text()
    );
    // The certificate the node printed verifies against the rack CA.
    let pem: String = console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .skip_while(|l| !l.contains("RACKBOOT-CERT-BEGIN"))
        .skip(1)
        .take_while(|l| !l.contains("RACKBOOT-CERT-END"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (ok, ca) = rb_cli(&ns, &rb, &["ca", "show", "--pem"], None);
    assert!(ok, "{ca}");
    std::fs::write(w.join("ca.pem"), ca).unwrap();
    verify_client_leaf(w, &pem);
    let subject = openssl(
        w,
        &[
            "x509",
            "-in",
            "leaf.pem",
            "-noout",
            "-ext",
            "subjectAltName",
        ],
    );
    assert!(
        subject.contains("spiffe://rack/node/x1000c0s4b0n0"),
        "{subject}"
    );
    let (_, tl) = rb
        .http(
            "GET",
            &format!("/rackboot/v1/nodes/{}/timeline", NODE.0),
            None,
        )
        .unwrap();
    assert!(tl.contains("identity_enrolled"), "{tl}");
    let a = audit(&rb, NODE.0);
    assert!(
        a.iter()
            .any(|e| e["action"] == "secret-read" && e["ok"] == true),
        "{a:?}"
    );

    // After the node enrolled and powered off, the attacker takes its MAC and address.
    let token = param(
        console
            .lines()
            .find(|l| l.contains("RACKBOOT-NODE-UP"))
            .unwrap()
            .trim_end_matches('\r'),
        "rackboot.join",
    )
    .to_owned();
    vm.wait_powered_off(Duration::from_secs(120)).unwrap();
    spoof(&evil, NODE.1, NODE.2, true);
    // (a) The token of this boot was handed out: none for the spoofer.
    no_token(NODE.2, &format!("mac={}", NODE.1));
    // (c) By name from the node's own address.
    no_token(NODE.2, &format!("name={}", NODE.0));
    // (b) The node's token, read from its console, replayed from its address: used up.
    openssl_p256(
        w,
        P256::Csr,
        "evil.key",
        "evil.csr",
        &format!("/CN={}", NODE.0),
        &[],
    )
    .unwrap();
    let csr = std::fs::read_to_string(w.join("evil.csr")).unwrap();
    let (code, body) = curl_enroll(&evil, w, NODE.2, &token, &csr);
    assert_eq!(code, 409, "replay: {body}");
    assert!(body.contains("already used"), "{body}");
    // Each refusal is an audit row, read with the CLI as an administrator would.
    let (ok, out) = rb_cli(
        &ns,
        &rb,
        &["cert", "audit", "--node", NODE.0, "-o", "json"],
        None,
    );
    assert!(ok, "{out}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    let refused = |action: &str, has: &str| {
        rows.iter()
            .filter(|r| {
                r["action"] == action
                    && r["ok"] == false
                    && r["detail"].as_str().unwrap().contains(has)
            })
            .count()
    };
    assert_eq!(refused("join-token", "no mac"), 2, "{out}");
    assert_eq!(refused("join-token", "no lease"), 1, "{out}");
    assert_eq!(refused("join-token", "already issued"), 1, "{out}");
    assert_eq!(refused("enroll", "already used"), 1, "{out}");
    let issued = |action: &str| {
        rows.iter()
            .filter(|r| r["action"] == action && r["ok"] == true)
            .count()
    };
    assert_eq!((issued("join-token"), issued("enroll")), (1, 1), "{out}");

    // What `token` cannot stop (docs/threat-model.md): a spoofer that does its own PXE DHCP
    // exchange as the node starts a "boot", gets that boot's token and enrolls. It shows: a
    // second token and enrollment for the node in the audit, a second certificate.
    let line = boot_as(&evil, NODE.1, NODE.2);
    let (code, body) = curl_enroll(&evil, w, NODE.2, param(&line, "rackboot.join"), &csr);
    assert_eq!(code, 200, "{body}");
    let rows = audit(&rb, NODE.0);
    let issued = |action: &str| {
        rows.iter()
            .filter(|r| r["action"] == action && r["ok"] == true)
            .count()
    };
    assert_eq!((issued("join-token"), issued("enroll")), (2, 2), "{rows:?}");
    let (_, certs) = rb
        .http("GET", &format!("/identity/v1/certs?node={}", NODE.0), None)
        .unwrap();
    let certs: Vec<Value> = serde_json::from_str(&certs).unwrap();
    assert_eq!(certs.len(), 2, "{certs:?}");
}
