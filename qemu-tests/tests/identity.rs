//! Machine identity end to end, with the real binary as server and as node agent, curl and
//! openssl as independent peers: a node enrolls with the join token from its boot script,
//! fetches its secret over mTLS, and every abuse is refused: a replayed token, another node's
//! token, the wrong source address, a CSR for another xname, a client certificate from a
//! foreign CA, another group's secret, a revoked certificate (on the very next request) and
//! an expired one. CA key, secrets and audit survive `kill -9`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::Stdio;
use std::time::Duration;

use qemu_tests::{Netns, P256, Rackboot, openssl_p256, preflight_with, rackboot_bin};
use serde_json::Value;

mod identity_support;

use identity_support::*;

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
    let chain = std::fs::read_to_string(id_dir.join("cert.pem")).unwrap();
    verify_client_leaf(w, &chain);
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
    openssl_p256(w, P256::Csr, "k.pem", "a.csr", "/CN=x1000c0s0b0n0", &[]).unwrap();
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
    openssl_p256(
        w,
        P256::SelfSigned { days: 2 },
        "evil-ca.key",
        "evil-ca.pem",
        "/CN=evil",
        &[],
    )
    .unwrap();
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
