//! Machine identity end to end, with the real binary as server and as node agent, curl and
//! openssl as independent peers: a node enrolls with the join token from its boot script,
//! fetches its secret over mTLS, and every abuse is refused: a replayed token, another node's
//! token, the wrong source address, a CSR for another xname, a client certificate from a
//! foreign CA, another group's secret, a revoked certificate (on the very next request) and
//! an expired one. CA key, secrets and audit survive `kill -9`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use qemu_tests::{Firmware, Netns, Qemu, Rackboot, agent_initrd, preflight_with, rackboot_bin};
use serde_json::Value;

const A: (&str, &str, &str) = ("x1000c0s0b0n0", "52:54:00:cc:00:01", "192.0.2.50");
const B: (&str, &str, &str) = ("x1000c0s0b0n1", "52:54:00:cc:00:02", "192.0.2.51");

/// Runs `prog args` in `ns` (stdin from `input`): (success, stdout + stderr).
fn run(ns: &Netns, prog: &str, args: &[&str], input: Option<&str>) -> (bool, String) {
    qemu_tests::run_in(ns, prog, args, &[], input).unwrap()
}

fn rb_cli(ns: &Netns, rb: &Rackboot, args: &[&str], input: Option<&str>) -> (bool, String) {
    rb.cli(ns, args, input)
}

/// The kernel line of the boot script `GET /boot/v1/bootscript?<query>` answers a request
/// from `src` in `node`.
fn script_from(node: &Netns, src: &str, query: &str) -> String {
    let out = node
        .cmd("curl")
        .args(["-s", "-m", "10", "--interface", src, "-w", "\n%{http_code}"])
        .arg(format!("http://192.0.2.1/boot/v1/bootscript?{query}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (script, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    assert_eq!(code.trim(), "200", "{text}");
    script
        .lines()
        .find(|l| l.starts_with("kernel "))
        .unwrap_or_else(|| panic!("no kernel line: {script}"))
        .to_owned()
}

/// Boots as firmware would from `node` as (`mac`, `ip`): a DHCP exchange from that MAC with
/// vendor class PXEClient (udhcpc), then the boot script from that address by MAC. The kernel
/// line, which carries the join token (the first fetch after a boot's ACK).
fn boot_as(node: &Netns, mac: &str, ip: &str) -> String {
    node.ip(&["link", "set", "vc", "address", mac]).unwrap();
    let out = node
        .cmd("udhcpc")
        .args(["-i", "vc", "-n", "-q", "-t", "5", "-V", "PXEClient"])
        .args(["-s", "/bin/true"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "udhcpc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = script_from(node, ip, &format!("mac={mac}"));
    assert!(line.contains("rackboot.join="), "no join token: {line}");
    line
}

/// A join token for `xname` from the admin API (`POST /identity/v1/join-tokens`).
fn admin_token(rb: &Rackboot, xname: &str) -> String {
    let (code, body) = rb
        .http(
            "POST",
            "/identity/v1/join-tokens",
            Some(&format!(r#"{{"node":"{xname}"}}"#)),
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

fn param<'a>(cmdline: &'a str, key: &str) -> &'a str {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {cmdline}"))
}

/// An enrollment POST with curl from `src`: (HTTP status, body).
fn curl_enroll(node: &Netns, dir: &Path, src: &str, token: &str, csr: &str) -> (u16, String) {
    let body = serde_json::json!({"token": token, "csr": csr}).to_string();
    let out = node
        .cmd("curl")
        .args(["-s", "-m", "10", "--interface", src, "--cacert"])
        .arg(dir.join("ca.pem"))
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ])
        .args([
            "-w",
            "\n%{http_code}",
            "https://192.0.2.1/identity/v1/enroll",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn audit(rb: &Rackboot, node: &str) -> Vec<Value> {
    let (_, a) = rb
        .http("GET", &format!("/identity/v1/audit?node={node}"), None)
        .unwrap();
    serde_json::from_str::<Value>(&a)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn nodes_enroll_fetch_secrets_over_mtls_and_every_abuse_is_refused() {
    if !preflight_with(false, &["udhcpc", "openssl"]) {
        return;
    }
    let ns = Netns::new("idt").unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    for (x, mac, ip) in [A, B] {
        rb.register_node(x, 1 + u32::from(x.ends_with('1')), mac, ip)
            .unwrap();
    }
    // Node A is a host on the rack segment at its inventory address (plus one stranger address).
    let node = ns.add_client_ns().unwrap();
    node.ip(&["addr", "add", &format!("{}/24", A.2), "dev", "vc"])
        .unwrap();
    node.ip(&["addr", "add", "192.0.2.77/24", "dev", "vc"])
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let bin = rackboot_bin().unwrap();
    let bin = bin.to_str().unwrap();

    // The boot script carries token, CA fingerprint and URL; the fingerprint is the CA's.
    let line_a = boot_as(&node, A.1, A.2);
    // Only the first fetch after the boot's ACK, only by MAC, only from the node's address.
    for (src, query) in [
        (A.2, format!("mac={}", A.1)),
        (A.2, format!("name={}", A.0)),
        ("192.0.2.77", format!("mac={}", A.1)),
    ] {
        let line = script_from(&node, src, &query);
        assert!(!line.contains("rackboot.join="), "{src} {query}: {line}");
    }
    // Booting from a script without a token, the agent fails loudly, saying why.
    std::fs::write(
        w.join("tokenless"),
        script_from(&node, A.2, &format!("mac={}", A.1)),
    )
    .unwrap();
    let tokenless = w.join("tokenless");
    let nowhere = w.join("nowhere");
    let (ok, out) = run(
        &node,
        bin,
        &[
            "agent",
            "enroll",
            "--cmdline",
            tokenless.to_str().unwrap(),
            "--dir",
            nowhere.to_str().unwrap(),
        ],
        None,
    );
    assert!(!ok && out.contains("carries no join token"), "{out}");
    let (ok, show) = rb_cli(&ns, &rb, &["ca", "show"], None);
    assert!(ok, "{show}");
    assert!(
        show.contains(param(&line_a, "rackboot.ca")),
        "{show}\n{line_a}"
    );
    assert_eq!(param(&line_a, "rackboot.url"), "https://192.0.2.1");

    // Enrollment with the agent, as the node's initramfs runs it.
    std::fs::write(w.join("cmdline"), &line_a).unwrap();
    let id_dir = w.join("id");
    let agent = |args: &[&str]| {
        let cmdline_path = w.join("cmdline");
        let mut all = args.to_vec();
        all.extend([
            "--cmdline",
            cmdline_path.to_str().unwrap(),
            "--dir",
            id_dir.to_str().unwrap(),
        ]);
        run(&node, bin, &all, None)
    };
    let (ok, out) = agent(&["agent", "enroll"]);
    assert!(ok, "{out}\n{}", rb.log_text());
    // openssl accepts the certificate against the rack CA, with the profile we promise.
    std::fs::copy(id_dir.join("ca.pem"), w.join("ca.pem")).unwrap();
    let leaf = std::fs::read_to_string(id_dir.join("cert.pem")).unwrap();
    let leaf = leaf
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap();
    std::fs::write(w.join("leaf.pem"), leaf).unwrap();
    let v = openssl(
        w,
        &[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            "ca.pem",
            "leaf.pem",
        ],
    );
    assert!(v.contains("leaf.pem: OK"), "{v}");
    let text = openssl(w, &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    assert!(
        text.contains("URI:spiffe://rack/node/x1000c0s0b0n0"),
        "{text}"
    );
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    let mode = std::fs::metadata(id_dir.join("key.pem")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    // The timeline shows the enrollment.
    let (_, tl) = rb
        .http("GET", &format!("/rackboot/v1/nodes/{}/timeline", A.0), None)
        .unwrap();
    assert!(tl.contains("identity_enrolled"), "{tl}");

    // Secrets: the node's own, its group's; not another group's.
    let (ok, out) = rb_cli(
        &ns,
        &rb,
        &["secret", "set", "--node", A.0, "db-password"],
        Some("hunter2"),
    );
    assert!(ok, "{out}");
    let (code, _) = rb
        .http(
            "POST",
            "/hsm/v2/groups",
            Some(&format!(
                r#"{{"label":"compute","members":{{"ids":["{}"]}}}}"#,
                A.0
            )),
        )
        .unwrap();
    assert!(code == 201 || code == 200, "group: {code}");
    for (group, value) in [("compute", "c-token"), ("login", "l-token")] {
        let (ok, out) = rb_cli(
            &ns,
            &rb,
            &["secret", "set", "--group", group, &format!("{group}-key")],
            Some(value),
        );
        assert!(ok, "{out}");
    }
    let (ok, out) = agent(&["agent", "secret", "db-password"]);
    assert!(ok && out == "hunter2", "{out}");
    let (ok, out) = agent(&["agent", "secret", "compute-key"]);
    assert!(ok && out == "c-token", "{out}");
    let (ok, out) = agent(&["agent", "secret", "login-key"]);
    assert!(!ok && out.contains("404"), "another group's secret: {out}");
    let (ok, out) = agent(&["agent", "user-data"]);
    assert!(ok && out.starts_with("#cloud-config"), "{out}");
    // The secret is not stored in the clear.
    let db = std::fs::read(rb.data_dir.path().join("rackboot.db")).unwrap_or_default();
    assert!(
        !db.windows(7).any(|x| x == b"hunter2"),
        "secret in the clear"
    );

    // A replayed token.
    let token_a = param(&line_a, "rackboot.join");
    openssl(
        w,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "k.pem",
            "-out",
            "a.csr",
            "-subj",
            "/CN=x1000c0s0b0n0",
        ],
    );
    let csr_a = std::fs::read_to_string(w.join("a.csr")).unwrap();
    let (code, body) = curl_enroll(&node, w, A.2, token_a, &csr_a);
    assert_eq!(code, 409, "replay: {body}");
    assert!(body.contains("already used"), "{body}");
    // Another node's token, from this node's address.
    let token_b = admin_token(&rb, B.0);
    let (code, body) = curl_enroll(&node, w, A.2, &token_b, &csr_a);
    assert_eq!(code, 403, "another node's token: {body}");
    assert!(body.contains("bound to 192.0.2.51"), "{body}");
    // The node's own (fresh: it boots again) token from a stranger address.
    let line_a2 = boot_as(&node, A.1, A.2);
    let (code, body) = curl_enroll(
        &node,
        w,
        "192.0.2.77",
        param(&line_a2, "rackboot.join"),
        &csr_a,
    );
    assert_eq!(code, 403, "wrong source: {body}");
    assert!(body.contains("came from 192.0.2.77"), "{body}");
    // A CSR for another xname (the token was not used up by the refusals above).
    openssl(
        w,
        &[
            "req",
            "-new",
            "-key",
            "k.pem",
            "-out",
            "b.csr",
            "-subj",
            "/CN=x1000c0s0b0n1",
        ],
    );
    let csr_b = std::fs::read_to_string(w.join("b.csr")).unwrap();
    let (code, body) = curl_enroll(&node, w, A.2, param(&line_a2, "rackboot.join"), &csr_b);
    assert_eq!(code, 403, "CSR for another node: {body}");
    assert!(body.contains("x1000c0s0b0n1"), "{body}");
    // The plain openssl + curl flow works with the same token.
    let (code, body) = curl_enroll(&node, w, A.2, param(&line_a2, "rackboot.join"), &csr_a);
    assert_eq!(code, 200, "openssl flow: {body}");
    let chain: Value = serde_json::from_str(&body).unwrap();
    std::fs::write(w.join("curl-cert.pem"), chain["chain"].as_str().unwrap()).unwrap();
    let whoami = |cert: &str, key: &str| {
        let out = node
            .cmd("curl")
            .args(["-s", "-m", "10", "--cacert"])
            .arg(w.join("ca.pem"))
            .arg("--cert")
            .arg(w.join(cert))
            .arg("--key")
            .arg(w.join(key))
            .args([
                "-w",
                "\n%{http_code}",
                "https://192.0.2.1/identity/v1/node/whoami",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let me = whoami("curl-cert.pem", "k.pem");
    assert!(me.contains(A.0) && me.ends_with("200"), "{me}");
    // The node reports boot events and phones home with its certificate.
    let post = |path: &str, body: &str| {
        let out = node
            .cmd("curl")
            .args(["-s", "-m", "10", "--cacert"])
            .arg(w.join("ca.pem"))
            .arg("--cert")
            .arg(w.join("curl-cert.pem"))
            .arg("--key")
            .arg(w.join("k.pem"))
            .args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ])
            .args(["-w", "\n%{http_code}", &format!("https://192.0.2.1{path}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let r = post(
        "/identity/v1/node/events",
        r#"{"stage":"cloud_init_user_data","detail":{"src":"node"}}"#,
    );
    assert!(r.ends_with("204"), "{r}");
    let r = post("/identity/v1/node/events", r#"{"stage":"made_up"}"#);
    assert!(r.ends_with("400"), "{r}");
    let r = post("/identity/v1/node/phone-home", "{}");
    assert!(r.ends_with("204"), "{r}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, tl) = rb
            .http("GET", &format!("/rackboot/v1/nodes/{}/timeline", A.0), None)
            .unwrap();
        if tl.contains("phone_home") && tl.contains("\"via\":\"mtls\"") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{tl}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A client certificate from a foreign CA: the handshake is refused.
    openssl(
        w,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "evil-ca.key",
            "-out",
            "evil-ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=evil",
        ],
    );
    std::fs::write(
        w.join("ext"),
        "extendedKeyUsage=clientAuth\nsubjectAltName=URI:spiffe://rack/node/x1000c0s0b0n0\n",
    )
    .unwrap();
    openssl(
        w,
        &[
            "x509",
            "-req",
            "-in",
            "a.csr",
            "-CA",
            "evil-ca.pem",
            "-CAkey",
            "evil-ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext",
            "-out",
            "evil.pem",
        ],
    );
    let me = whoami("evil.pem", "k.pem");
    assert!(!me.ends_with("200"), "foreign CA accepted: {me}");
    // No certificate at all on an mTLS route: 401.
    let out = node
        .cmd("curl")
        .args(["-s", "-m", "10", "--cacert"])
        .arg(w.join("ca.pem"))
        .args([
            "-w",
            "\n%{http_code}",
            "https://192.0.2.1/identity/v1/node/secrets/db-password",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("401"));

    // Revocation: refused on the very next request, listed in the signed CRL.
    let serial = openssl(w, &["x509", "-in", "curl-cert.pem", "-noout", "-serial"]);
    let serial = serial
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    let (ok, out) = rb_cli(&ns, &rb, &["cert", "revoke", &serial], None);
    assert!(ok, "{out}");
    let me = whoami("curl-cert.pem", "k.pem");
    assert!(me.ends_with("403") && me.contains("revoked"), "{me}");
    let (ok, _) = agent(&["agent", "secret", "db-password"]);
    assert!(ok, "the agent's own certificate is still good");
    let crl = node
        .cmd("curl")
        .args(["-s", "-m", "10", "-o"])
        .arg(w.join("crl.der"))
        .arg("http://192.0.2.1/identity/v1/crl")
        .status()
        .unwrap();
    assert!(crl.success());
    let crl = openssl(
        w,
        &[
            "crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "ca.pem", "-noout", "-text",
        ],
    );
    assert!(crl.to_ascii_lowercase().contains(&serial), "{crl}");

    // Renewal over mTLS with a new key; the old certificate stays valid until it expires.
    let before = std::fs::read_to_string(id_dir.join("key.pem")).unwrap();
    let (ok, out) = agent(&["agent", "renew"]);
    assert!(ok, "{out}");
    assert_ne!(
        before,
        std::fs::read_to_string(id_dir.join("key.pem")).unwrap()
    );
    let (ok, out) = agent(&["agent", "secret", "db-password"]);
    assert!(ok && out == "hunter2", "{out}");

    // Audit: issuance, refusals, revocation, renewal, secret reads, all for node A.
    let actions: Vec<String> = audit(&rb, A.0)
        .iter()
        .map(|a| format!("{}:{}", a["action"].as_str().unwrap(), a["ok"]))
        .collect();
    for want in [
        "join-token:true",
        "join-token:false",
        "enroll:true",
        "enroll:false",
        "revoke:true",
        "renew:true",
        "secret-read:true",
        "secret-read:false",
    ] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} missing: {actions:?}"
        );
    }

    // kill -9: the CA key, the secrets and the audit survive; the node keeps working.
    let fp = param(&line_a, "rackboot.ca").to_owned();
    let rows = audit(&rb, A.0).len();
    let rb = rb.kill9_and_restart(&ns).unwrap();
    let (ok, show) = rb_cli(&ns, &rb, &["ca", "show"], None);
    assert!(ok && show.contains(&fp), "the CA changed: {show}");
    let (ok, out) = agent(&["agent", "secret", "db-password"]);
    assert!(ok && out == "hunter2", "{out}");
    assert!(audit(&rb, A.0).len() > rows, "audit kept and appended");
    let key = std::fs::metadata(rb.data_dir.path().join("identity/ca.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );
}

/// The renewal daemon keeps a short-lived certificate alive; once expired, a certificate can
/// neither fetch secrets nor renew; the `approval` policy holds an enrollment until
/// `rackboot cert approve`.
#[test]
fn renewal_expiry_and_approval() {
    if !preflight_with(false, &["udhcpc", "openssl"]) {
        return;
    }
    let ns = Netns::new("idx").unwrap();
    let rb = Rackboot::start_with_env(
        &ns,
        &[
            ("RACKBOOT_IDENTITY__CERT_LIFETIME", "6s"),
            ("RACKBOOT_IDENTITY__SERVER_CERT_LIFETIME", "6s"),
            (
                "RACKBOOT_IDENTITY__GROUP_POLICY",
                r#"{ "login" = "approval" }"#,
            ),
        ],
    )
    .unwrap();
    rb.register_node(A.0, 1, A.1, A.2).unwrap();
    let node = ns.add_client_ns().unwrap();
    node.ip(&["addr", "add", &format!("{}/24", A.2), "dev", "vc"])
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let bin = rackboot_bin().unwrap();
    let bin = bin.to_str().unwrap().to_owned();
    let id_dir = w.join("id");
    let cmdline_path = w.join("cmdline");
    let agent = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend([
            "--cmdline",
            cmdline_path.to_str().unwrap(),
            "--dir",
            id_dir.to_str().unwrap(),
        ]);
        run(&node, &bin, &all, None)
    };
    let (ok, out) = rb_cli(&ns, &rb, &["secret", "set", "--node", A.0, "s"], Some("v"));
    assert!(ok, "{out}");
    std::fs::write(&cmdline_path, boot_as(&node, A.1, A.2)).unwrap();
    let (ok, out) = agent(&["agent", "enroll"]);
    assert!(ok, "{out}");

    // The daemon renews two thirds of the way into each 6 s certificate.
    let mut daemon = node
        .cmd(&bin)
        .args(["agent", "renew", "--daemon", "--cmdline"])
        .arg(&cmdline_path)
        .arg("--dir")
        .arg(&id_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Two renewals mean the daemon carried the node past its first certificate's lifetime.
    let renewals = || {
        audit(&rb, A.0)
            .iter()
            .filter(|a| a["action"] == "renew" && a["ok"] == true)
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while renewals() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
    }
    let (ok, out) = agent(&["agent", "secret", "s"]);
    let _ = daemon.kill();
    let log = daemon.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&log.stderr);
    assert!(renewals() >= 2, "{} renewals\n{log}", renewals());
    assert!(
        ok && out == "v",
        "still valid after two renewals: {out}\n{log}"
    );

    // The HTTPS certificate renews itself too (every third of its 6 s lifetime).
    let server_serial = || {
        let out = node
            .cmd("sh")
            .args([
                "-c",
                "openssl s_client -connect 192.0.2.1:443 </dev/null 2>/dev/null | openssl x509 -noout -serial",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let first = server_serial();
    assert!(first.starts_with("serial="), "{first}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = server_serial();
        if now.starts_with("serial=") && now != first {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the HTTPS certificate was not renewed: {first} / {now}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Without the daemon the certificate expires: no secrets, no renewal. Expiry is the thing
    // under test, so wait for the certificate's own notAfter (openssl -checkend 0), not a guess.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while node
        .cmd("openssl")
        .args(["x509", "-checkend", "0", "-noout", "-in"])
        .arg(id_dir.join("cert.pem"))
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the 6 s certificate never expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // openssl calls a certificate expired from the first instant of its notAfter second; RFC 5280
    // (and rustls/webpki) count that whole second as valid. Expired for both means the wall
    // clock has moved into the next whole second.
    let expired_at = unix_secs();
    while unix_secs() <= expired_at {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, out) = agent(&["agent", "secret", "s"]);
    assert!(!ok, "an expired certificate fetched a secret: {out}");
    let (ok, out) = agent(&["agent", "renew"]);
    assert!(!ok, "an expired certificate renewed: {out}");

    // Approval: the node joins group `login`; its enrollment waits for an administrator.
    let (code, _) = rb
        .http(
            "POST",
            "/hsm/v2/groups",
            Some(&format!(
                r#"{{"label":"login","members":{{"ids":["{}"]}}}}"#,
                A.0
            )),
        )
        .unwrap();
    assert!(code == 201 || code == 200);
    std::fs::write(&cmdline_path, boot_as(&node, A.1, A.2)).unwrap();
    let waiting = std::thread::scope(|s| {
        let h = s.spawn(|| agent(&["agent", "enroll", "--wait", "60s"]));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let id = loop {
            let (_, reqs) = rb.http("GET", "/identity/v1/requests", None).unwrap();
            let reqs: Value = serde_json::from_str(&reqs).unwrap();
            if let Some(r) = reqs
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["state"] == "pending")
            {
                break r["id"].as_str().unwrap().to_owned();
            }
            assert!(std::time::Instant::now() < deadline, "no pending request");
            std::thread::sleep(Duration::from_millis(300));
        };
        // Nothing is issued before the approval.
        assert!(!audit(&rb, A.0).iter().any(|a| a["action"] == "approve"));
        let (ok, out) = rb_cli(&ns, &rb, &["cert", "approve", &id], None);
        assert!(ok, "{out}");
        h.join().unwrap()
    });
    assert!(waiting.0, "{}", waiting.1);
    assert!(
        waiting.1.contains("waits for `rackboot cert approve") && waiting.1.contains("enrolled"),
        "{}",
        waiting.1
    );
    assert!(
        audit(&rb, A.0)
            .iter()
            .any(|a| a["action"] == "approve" && a["ok"] == true)
    );
}

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
    let leaf = pem
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap();
    std::fs::write(w.join("leaf.pem"), leaf).unwrap();
    let (ok, ca) = rb_cli(&ns, &rb, &["ca", "show", "--pem"], None);
    assert!(ok, "{ca}");
    std::fs::write(w.join("ca.pem"), ca).unwrap();
    let v = openssl(
        w,
        &[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            "ca.pem",
            "leaf.pem",
        ],
    );
    assert!(v.contains("leaf.pem: OK"), "{v}");
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
    openssl(
        w,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "evil.key",
            "-out",
            "evil.csr",
            "-subj",
            &format!("/CN={}", NODE.0),
        ],
    );
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

/// The MAC of `ns`'s `vc`.
fn mac_of(ns: &Netns) -> String {
    let out = ns
        .cmd("cat")
        .arg("/sys/class/net/vc/address")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Puts `mac` on `ns`'s `vc` and adds (`on`) or removes the address `ip`.
fn spoof(ns: &Netns, mac: &str, ip: &str, on: bool) {
    ns.ip(&["link", "set", "vc", "address", mac]).unwrap();
    let verb = if on { "add" } else { "del" };
    ns.ip(&["addr", verb, &format!("{ip}/24"), "dev", "vc"])
        .unwrap();
}

/// An intermediate signed by a site CA: `ca csr` → openssl signs → `ca import` (bad chains are
/// refused first) → restart; nodes then enroll under the site root.
#[test]
fn an_intermediate_signed_elsewhere_is_imported_and_issues() {
    if !preflight_with(false, &["udhcpc", "openssl"]) {
        return;
    }
    let ns = Netns::new("idi").unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    rb.register_node(A.0, 1, A.1, A.2).unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    // The site CA, and a CSR for the rack intermediate.
    openssl(
        w,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "site.key",
            "-out",
            "site.pem",
            "-days",
            "30",
            "-subj",
            "/CN=site root",
        ],
    );
    let (ok, csr) = rb_cli(&ns, &rb, &["ca", "csr", "--cluster", "rack"], None);
    assert!(ok, "{csr}");
    let csr_pem: String = csr
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("sign this request"))
        .collect();
    std::fs::write(w.join("rack.csr"), csr_pem).unwrap();
    std::fs::write(
        w.join("ca.ext"),
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    std::fs::write(w.join("leaf.ext"), "basicConstraints=CA:FALSE\n").unwrap();
    let sign = |ext: &str, out: &str| {
        openssl(
            w,
            &[
                "x509",
                "-req",
                "-in",
                "rack.csr",
                "-CA",
                "site.pem",
                "-CAkey",
                "site.key",
                "-CAcreateserial",
                "-days",
                "10",
                "-extfile",
                ext,
                "-out",
                out,
            ],
        )
    };
    sign("ca.ext", "rack.pem");
    sign("leaf.ext", "not-a-ca.pem");
    let cat = |parts: &[&str], out: &str| {
        let text: String = parts
            .iter()
            .map(|p| std::fs::read_to_string(w.join(p)).unwrap())
            .collect();
        std::fs::write(w.join(out), text).unwrap();
        w.join(out).to_str().unwrap().to_owned()
    };
    // Refused: not a CA; no root at the end; a certificate for another key.
    let bad = cat(&["not-a-ca.pem", "site.pem"], "bad1.pem");
    let (ok, out) = rb_cli(&ns, &rb, &["ca", "import", &bad], None);
    assert!(!ok && out.contains("not a CA"), "{out}");
    let bad = cat(&["rack.pem"], "bad2.pem");
    let (ok, out) = rb_cli(&ns, &rb, &["ca", "import", &bad], None);
    assert!(!ok && out.contains("self-signed root"), "{out}");
    let bad = cat(&["site.pem"], "bad3.pem");
    let (ok, out) = rb_cli(&ns, &rb, &["ca", "import", &bad], None);
    assert!(!ok && out.contains("pending key"), "{out}");
    // Accepted.
    let good = cat(&["rack.pem", "site.pem"], "chain.pem");
    let (ok, out) = rb_cli(&ns, &rb, &["ca", "import", &good], None);
    assert!(ok, "{out}");
    let site_fp = openssl(
        w,
        &[
            "x509",
            "-in",
            "site.pem",
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
    );
    let site_fp = site_fp
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_ascii_lowercase();
    let rb = rb.kill9_and_restart(&ns).unwrap();
    let (ok, show) = rb_cli(&ns, &rb, &["ca", "show"], None);
    assert!(
        ok && show.contains("intermediate") && show.contains(&site_fp),
        "{show}"
    );
    // A node enrolls and its certificate chains to the site root.
    let node = ns.add_client_ns().unwrap();
    node.ip(&["addr", "add", &format!("{}/24", A.2), "dev", "vc"])
        .unwrap();
    let line = boot_as(&node, A.1, A.2);
    assert_eq!(param(&line, "rackboot.ca"), format!("sha256:{site_fp}"));
    std::fs::write(w.join("cmdline"), &line).unwrap();
    let bin = rackboot_bin().unwrap();
    let id = w.join("id");
    let cmdline_path = w.join("cmdline");
    let (ok, out) = run(
        &node,
        bin.to_str().unwrap(),
        &[
            "agent",
            "enroll",
            "--cmdline",
            cmdline_path.to_str().unwrap(),
            "--dir",
            id.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{out}\n{}", rb.log_text());
    let chain = std::fs::read_to_string(id.join("cert.pem")).unwrap();
    let mut parts = chain.split_inclusive("-----END CERTIFICATE-----\n");
    std::fs::write(w.join("leaf.pem"), parts.next().unwrap()).unwrap();
    std::fs::write(w.join("inter.pem"), parts.next().unwrap()).unwrap();
    let v = openssl(
        w,
        &[
            "verify",
            "-CAfile",
            "site.pem",
            "-untrusted",
            "inter.pem",
            "leaf.pem",
        ],
    );
    assert!(v.contains("leaf.pem: OK"), "{v}");
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
