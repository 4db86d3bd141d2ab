//! TPM-attested enrollment of a real node, and of a node behind an attacker:
//! - `tpm_agent_refuses_a_ca_not_authenticated_by_the_credential`: acceptance 4, a TLS man in
//!   the middle in the appliance's place;
//! - `tpm_node_enrolls_over_ovmf_and_swtpm_…`: acceptance 1, the genuine OVMF + swtpm node.
//!
//! Helpers: `tpm_support`; the rest of the TPM tests: `tpm.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qemu_tests::{
    Firmware, Manufacturer, Netns, P256, Qemu, VmTpm, agent_initrd, openssl_p256, sh_ok as sh,
};
use serde_json::Value;

mod tpm_support;

use tpm_support::*;

/// A TLS man in the middle (python3) in the appliance's place: it relays to the real rackboot
/// and, in `mode`, swaps the CA in the enrollment answer for its own (`forge-ca`) or corrupts
/// the credential (`bad-credential`).
fn start_mitm(ns: &Netns, w: &Path, mode: &str) -> Child {
    openssl_p256(
        w,
        P256::SelfSigned { days: 30 },
        "evil.key",
        "evil.pem",
        "/CN=evil rackboot",
        &[],
    )
    .unwrap();
    std::fs::write(
        w.join("mitm.py"),
        r#"
import base64, http.server, json, ssl, sys, urllib.error, urllib.request
mode, forged = sys.argv[1], open(sys.argv[2]).read()
up = ssl._create_unverified_context()
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        req = urllib.request.Request("https://192.0.2.1" + self.path, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=up, timeout=30) as r:
                status, data = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read()
        if status == 200 and mode == "forge-ca" and self.path.endswith("/tpm/enroll"):
            a = json.loads(data); a["ca"] = forged; data = json.dumps(a).encode()
        if status == 200 and mode == "bad-credential" and self.path.endswith("/tpm/challenge"):
            a = json.loads(data); b = bytearray(base64.b64decode(a["credential_blob"]))
            b[-1] ^= 1; a["credential_blob"] = base64.b64encode(bytes(b)).decode()
            data = json.dumps(a).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
srv = http.server.HTTPServer(("192.0.2.66", 443), H)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
c.load_cert_chain("evil.pem", "evil.key")
srv.socket = c.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#,
    )
    .unwrap();
    let child = ns
        .cmd("python3")
        .current_dir(w)
        .args(["mitm.py", mode, "evil.pem"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ns
        .cmd("curl")
        .args(["-sk", "-m", "2", "-o", "/dev/null", "https://192.0.2.66/"])
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(Instant::now() < deadline, "the MITM did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// Acceptance 4: an attacker answering in the appliance's place, relaying to the real rackboot,
/// cannot feed the agent a forged CA: the answer's HMAC (keyed with the credential only the
/// node's TPM could open) does not cover it. The agent refuses, says why and logs it in
/// refused.log; a corrupted credential fails in the TPM itself.
#[test]
fn tpm_agent_refuses_a_ca_not_authenticated_by_the_credential() {
    if !tpm_preflight(false) {
        return;
    }
    let ns = Netns::new("tpmm").unwrap();
    let maker = Manufacturer::new();
    let node = HostNode::new(&ns, &maker);
    let rb = tpm_rackboot(&ns, &maker);
    rb.register_node(A.0, 1, A.1, A.2).unwrap();
    // Pre-registered, so the relayed requests (from the MITM's address) are not first use.
    let ek = node.ek_cert();
    let (ok, out) = rb.cli(
        &ns,
        &["cert", "ek", "set", A.0, "--ek", ek.to_str().unwrap()],
        None,
    );
    assert!(ok, "{out}");
    // The attacker sits on the node's segment (rackboot itself holds *:443 on the server).
    node.ns
        .ip(&["addr", "add", "192.0.2.66/24", "dev", "vc"])
        .unwrap();
    let work = tempfile::tempdir().unwrap();

    for (mode, want) in [
        ("forge-ca", "not authenticated by the activated credential"),
        ("bad-credential", "TPM2_ActivateCredential failed"),
    ] {
        let mut mitm = start_mitm(&node.ns, work.path(), mode);
        let (ok, out) = node.agent(&["agent", "tpm-enroll", "--url", "https://192.0.2.66"]);
        let _ = mitm.kill();
        let _ = mitm.wait();
        assert!(!ok, "{mode}: {out}");
        assert!(out.contains(want), "{mode}: {out}");
        let log = std::fs::read_to_string(node.dir.path().join("id/refused.log")).unwrap();
        assert!(log.contains(want), "{mode}: {log}");
        assert!(!node.dir.path().join("id/ca.pem").exists(), "{mode}");
    }
    // Without the attacker the same node enrolls, and trusts the real CA.
    let (ok, out) = node.agent(&["agent", "tpm-enroll"]);
    assert!(ok, "{out}");
    let (ok, ca) = rb.cli(&ns, &["ca", "show", "--pem"], None);
    assert!(ok);
    assert_eq!(
        std::fs::read_to_string(node.dir.path().join("id/ca.pem")).unwrap(),
        ca
    );
}

/// Acceptance 1: the genuine node, OVMF (native PXE) with a swtpm whose EK certificate comes
/// from the manufacturer CA, PXE-boots and its initramfs runs `rackboot agent tpm-enroll` with
/// no join token or CA fingerprint needed: its EK is bound on first use (audited), it fetches
/// its secret over mTLS, its PCRs 0-7 are on its timeline, it renews over mTLS; after
/// `rackboot cert revoke` its certificates are in the CRL and its next mTLS request is refused.
#[test]
fn tpm_node_enrolls_over_ovmf_and_swtpm_fetches_its_secret_renews_and_is_revoked() {
    if !tpm_preflight(true) {
        return;
    }
    const NODE: (&str, &str, &str) = ("x1000c0s5b0n0", "52:54:00:aa:05:01", "192.0.2.55");
    let mut ns = Netns::new("tpmq").unwrap();
    let maker = Manufacturer::new();
    let tpm = VmTpm::start(&maker.tpm("vm"));
    let rb = tpm_rackboot(&ns, &maker);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    rb.import_node_images().unwrap();
    rb.import_image("initrd.img", &agent_initrd(w).unwrap())
        .unwrap();
    rb.register_node(NODE.0, 5, NODE.1, NODE.2).unwrap();
    let (code, body) = rb
        .http(
            "PUT",
            "/boot/v1/bootparameters",
            Some(&format!(
                r#"{{"macs":["{}"],"kernel":"http://192.0.2.1/images/vmlinuz","initrd":"http://192.0.2.1/images/initrd.img","params":"console=ttyS0 quiet rackboot.watch-revocation"}}"#,
                NODE.1
            )),
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let (ok, out) = rb.cli(
        &ns,
        &["secret", "set", "--node", NODE.0, "node-secret"],
        Some("tpm-s3cr3t"),
    );
    assert!(ok, "{out}");

    let mut vm = Qemu::start_with(&mut ns, Firmware::OvmfPxe, NODE.1, &tpm.qemu_args()).unwrap();
    let wait = |vm: &mut Qemu, what: &str| {
        vm.wait_for(what, Duration::from_secs(600))
            .unwrap_or_else(|e| {
                panic!(
                    "{e}\n--- console ---\n{}\n--- log ---\n{}",
                    vm.console(),
                    rb.log_text()
                )
            })
    };
    let line = wait(&mut vm, "RACKBOOT-RENEWED");
    let console = vm.console();
    assert!(console.contains("RACKBOOT-ENROLLED"), "{console}");
    assert!(console.contains("RACKBOOT-SECRET tpm-s3cr3t"), "{console}");
    assert!(line.contains("tpm-s3cr3t"), "renewed, then fetched: {line}");

    // Bound on first use, audited; issued and renewed; two certificate rows.
    let a = audit(&rb, NODE.0);
    let has = |action: &str| a.iter().any(|e| e["action"] == action && e["ok"] == true);
    assert!(
        has("tpm-ek-bind") && has("enroll-tpm") && has("renew"),
        "{a:?}"
    );
    assert!(has("secret-read"), "{a:?}");
    let (ok, ek) = rb.cli(&ns, &["cert", "ek", "show", NODE.0, "-o", "json"], None);
    assert!(ok && ek.contains("\"tofu\""), "{ek}");
    // PCRs 0-7 of the quote are on the node's timeline.
    let (_, tl) = rb
        .http(
            "GET",
            &format!("/rackboot/v1/nodes/{}/timeline", NODE.0),
            None,
        )
        .unwrap();
    let tl: Value = serde_json::from_str(&tl).unwrap();
    let attested = find_stage(&tl, "identity_attested")
        .unwrap_or_else(|| panic!("no identity_attested on the timeline: {tl}"));
    let pcrs = &attested["pcrs"];
    for i in 0..8 {
        let v = pcrs[i.to_string()].as_str().unwrap_or_default();
        assert_eq!(v.len(), 64, "PCR {i}: {attested}");
    }
    // OVMF measured itself into PCR 0: these are the firmware's values, not a blank TPM's.
    assert_ne!(pcrs["0"].as_str().unwrap(), "0".repeat(64), "{attested}");

    // Revocation: every certificate of the node, in the CRL, refused on the next request.
    let (ok, out) = rb.cli(&ns, &["cert", "revoke", "--node", NODE.0], None);
    assert!(ok, "{out}");
    let refused = wait(&mut vm, "RACKBOOT-MTLS-REFUSED");
    assert!(refused.contains("revoked"), "{refused}");
    let (ok, certs) = rb.cli(&ns, &["cert", "list", "--node", NODE.0, "-o", "json"], None);
    assert!(ok, "{certs}");
    let certs: Value = serde_json::from_str(&certs).unwrap();
    let serials: Vec<String> = certs
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(serials.len(), 2, "{certs}");
    let crl = w.join("crl.der");
    sh(ns
        .cmd("curl")
        .args(["-sf", "-m", "10", "-o"])
        .arg(&crl)
        .arg("http://192.0.2.1/identity/v1/crl"));
    let text = sh(Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&crl))
    .to_ascii_lowercase();
    for s in &serials {
        assert!(
            text.contains(s.trim_start_matches('0')),
            "{s} not in\n{text}"
        );
    }
}
