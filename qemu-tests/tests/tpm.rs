//! TPM-attested enrollment (policy `tpm`) against real TPMs: swtpm with EK certificates from a
//! manufacturer CA the test makes (swtpm_setup + swtpm_localca), tpm2-tools as the independent
//! TPM client, the real binary as server and node agent.
//!
//! - `make_credential_interoperates_with_tpm2_tools`: rackboot's MakeCredential opens with
//!   `tpm2_activatecredential`, its quote check accepts `tpm2_quote`'s output and refuses
//!   tampered ones.
//! - `tpm_node_enrolls_over_ovmf_and_swtpm_…`: acceptance 1, the genuine OVMF + swtpm node.
//! - `tpm_enrollment_with_a_self_made_ek_is_refused_and_audited`: acceptance 2.
//! - `tpm_enrollment_with_an_ek_not_bound_to_the_node_is_refused_and_audited`: acceptance 3.
//! - `tpm_agent_refuses_a_ca_not_authenticated_by_the_credential`: acceptance 4.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qemu_tests::{
    Firmware, Manufacturer, Netns, Qemu, Rackboot, Swtpm, VmTpm, agent_initrd, have, preflight,
    rackboot_bin, sh_ok as sh,
};
use rackboot::identity::{tpm, tpm_wire};
use serde_json::Value;

/// Everything these tests need besides root and the node image.
fn tpm_preflight(need_qemu: bool) -> bool {
    let missing: Vec<&str> = [
        "swtpm",
        "swtpm_setup",
        "swtpm_localca",
        "tpm2_createek",
        "tpm2_activatecredential",
        "openssl",
    ]
    .into_iter()
    .filter(|p| !have(p))
    .collect();
    if !missing.is_empty() {
        let msg = format!("TPM test tools missing: {}", missing.join(", "));
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED (not in CI): {msg}; `cargo xtask deps` installs them");
        return false;
    }
    preflight(need_qemu)
}

/// tpm2_makecredential's file format: magic, version, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
fn credential_file(c: &tpm_wire::Credential) -> Vec<u8> {
    let mut v = 0xBADC_C0DEu32.to_be_bytes().to_vec();
    v.extend(1u32.to_be_bytes());
    v.extend(&c.blob);
    v.extend(&c.secret);
    v
}

fn ek_spki(ek_der: &[u8], bundle: &Path) -> tpm_wire::EkCert {
    tpm_wire::check_ek_cert(ek_der, &std::fs::read_to_string(bundle).unwrap()).unwrap()
}

#[test]
fn make_credential_interoperates_with_tpm2_tools() {
    if !tpm_preflight(false) {
        return;
    }
    let ns = Netns::new("tpmi").unwrap();
    let maker = Manufacturer::new();
    let state = maker.tpm("node");
    let tpm = Swtpm::start(&ns, &state, 2321);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    tpm.tools(&ns, w, "tpm2_nvread", &["0x1c00002", "-o", "ek.der"]);
    tpm.tools(
        &ns,
        w,
        "tpm2_createek",
        &["-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"],
    );
    tpm.tools(
        &ns,
        w,
        "tpm2_createak",
        &[
            "-C", "ek.ctx", "-c", "ak.ctx", "-G", "rsa", "-g", "sha256", "-s", "rsassa", "-u",
            "ak.pub", "-f", "tss", "-n", "ak.name",
        ],
    );
    // The EK certificate chains to the manufacturer; the AK's name is the TPM's.
    let ek = ek_spki(&std::fs::read(w.join("ek.der")).unwrap(), &maker.bundle());
    let ak = tpm_wire::AkPublic::parse(&std::fs::read(w.join("ak.pub")).unwrap()).unwrap();
    assert_eq!(ak.name, std::fs::read(w.join("ak.name")).unwrap());

    let activate = |cred: &[u8]| -> (bool, Vec<u8>) {
        std::fs::write(w.join("cred.blob"), cred).unwrap();
        let _ = std::fs::remove_file(w.join("secret.out"));
        tpm.tools(
            &ns,
            w,
            "tpm2_startauthsession",
            &["--policy-session", "-S", "s.ctx"],
        );
        tpm.tools(&ns, w, "tpm2_policysecret", &["-S", "s.ctx", "-c", "e"]);
        let ok = ns
            .cmd("tpm2_activatecredential")
            .current_dir(w)
            .env("TPM2TOOLS_TCTI", &tpm.tcti)
            .args([
                "-c",
                "ak.ctx",
                "-C",
                "ek.ctx",
                "-i",
                "cred.blob",
                "-o",
                "secret.out",
                "-P",
                "session:s.ctx",
            ])
            .output()
            .unwrap();
        tpm.flush(&ns);
        tpm.tools(&ns, w, "tpm2_flushcontext", &["s.ctx"]);
        eprintln!("{}", String::from_utf8_lossy(&ok.stderr));
        let ok = ok.status.success();
        (ok, std::fs::read(w.join("secret.out")).unwrap_or_default())
    };
    // rackboot's MakeCredential opens in the TPM and gives back the secret.
    let secret: Vec<u8> = (1..=32).collect();
    let cred = tpm_wire::make_credential(&ek.spki, &ak.name, &secret).unwrap();
    let (ok, got) = activate(&credential_file(&cred));
    assert!(ok, "tpm2_activatecredential refused rackboot's credential");
    assert_eq!(got, secret);
    // A credential for another object's name does not open (the AK must be on this TPM).
    let mut other = ak.name.clone();
    other[5] ^= 1;
    let cred = tpm_wire::make_credential(&ek.spki, &other, &secret).unwrap();
    assert!(!activate(&credential_file(&cred)).0);

    // tpm2_quote over PCRs 0-7 and qualifying data: rackboot's check accepts it.
    let nonce = [9u8; 32];
    let csr =
        "-----BEGIN CERTIFICATE REQUEST-----\nnot parsed here\n-----END CERTIFICATE REQUEST-----\n";
    let qd = tpm::qualifying_data(&nonce, csr);
    tpm.tools(
        &ns,
        w,
        "tpm2_quote",
        &[
            "-c",
            "ak.ctx",
            "-l",
            "sha256:0,1,2,3,4,5,6,7",
            "-q",
            &hex::encode(&qd),
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-g",
            "sha256",
        ],
    );
    tpm.tools(
        &ns,
        w,
        "tpm2_pcrread",
        &["sha256:0,1,2,3,4,5,6,7", "-o", "pcrs.bin"],
    );
    let msg = std::fs::read(w.join("quote.msg")).unwrap();
    let sig = std::fs::read(w.join("quote.sig")).unwrap();
    let pcrs: Vec<Vec<u8>> = std::fs::read(w.join("pcrs.bin"))
        .unwrap()
        .chunks(32)
        .map(<[u8]>::to_vec)
        .collect();
    let q = tpm_wire::verify_quote(&ak, &msg, &sig, &qd, &pcrs).unwrap();
    assert_eq!(q.pcrs.len(), 8);
    // Another CSR, other PCR values, a flipped signature bit: refused.
    let other_qd = tpm::qualifying_data(&nonce, "another csr");
    assert!(tpm_wire::verify_quote(&ak, &msg, &sig, &other_qd, &pcrs).is_err());
    let mut bad = pcrs.clone();
    bad[0][0] ^= 1;
    assert!(tpm_wire::verify_quote(&ak, &msg, &sig, &qd, &bad).is_err());
    let mut bad_sig = sig.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    assert!(tpm_wire::verify_quote(&ak, &msg, &bad_sig, &qd, &pcrs).is_err());
}

const A: (&str, &str, &str) = ("x1000c0s0b0n0", "52:54:00:dd:00:01", "192.0.2.50");

/// rackboot with policy `tpm` for the whole rack and the manufacturer's bundle.
fn tpm_rackboot(ns: &Netns, maker: &Manufacturer) -> Rackboot {
    let bundle = maker.bundle();
    Rackboot::start_with_env(
        ns,
        &[
            ("RACKBOOT_IDENTITY__POLICY", "tpm"),
            ("RACKBOOT_IDENTITY__TPM__EK_CA", bundle.to_str().unwrap()),
        ],
    )
    .unwrap()
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

fn refusals(rb: &Rackboot, node: &str) -> Vec<String> {
    audit(rb, node)
        .into_iter()
        .filter(|e| e["action"] == "enroll-tpm" && e["ok"] == false)
        .map(|e| e["detail"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A node on the rack segment at A's inventory address with its own swtpm, and the agent.
struct HostNode {
    ns: Netns,
    tpm: Swtpm,
    dir: tempfile::TempDir,
}

impl HostNode {
    fn new(server: &Netns, maker: &Manufacturer) -> HostNode {
        let ns = server.add_client_ns().unwrap();
        ns.ip(&["addr", "add", &format!("{}/24", A.2), "dev", "vc"])
            .unwrap();
        let state = maker.tpm("host-node");
        let tpm = Swtpm::start(&ns, &state, 2321);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cmdline"),
            format!("console=ttyS0 xname={} rackboot.url=https://192.0.2.1", A.0),
        )
        .unwrap();
        HostNode { ns, tpm, dir }
    }

    /// The agent's `args` with this node's command line, identity dir and TPM.
    fn agent(&self, args: &[&str]) -> (bool, String) {
        let d = self.dir.path();
        let cmdline = d.join("cmdline");
        let id = d.join("id");
        let mut all = args.to_vec();
        all.extend([
            "--cmdline",
            cmdline.to_str().unwrap(),
            "--dir",
            id.to_str().unwrap(),
        ]);
        let bin = rackboot_bin().unwrap();
        qemu_tests::run_in(
            &self.ns,
            bin.to_str().unwrap(),
            &all,
            &[("RACKBOOT_TCTI", self.tpm.tcti.as_str())],
            None,
        )
        .unwrap()
    }

    /// This TPM's EK certificate (DER), as tpm2-tools reads it.
    fn ek_cert(&self) -> PathBuf {
        self.tpm.tools(
            &self.ns,
            self.dir.path(),
            "tpm2_nvread",
            &["0x1c00002", "-o", "ek.der"],
        );
        self.dir.path().join("ek.der")
    }
}

/// Acceptance 2: an EK certificate that does not chain to the manufacturer CA (a key and a
/// self-signed certificate made with openssl) is refused with RFC 7807 and audited.
#[test]
fn tpm_enrollment_with_a_self_made_ek_is_refused_and_audited() {
    if !tpm_preflight(false) {
        return;
    }
    let ns = Netns::new("tpms").unwrap();
    let maker = Manufacturer::new();
    maker.tpm("unused");
    let rb = tpm_rackboot(&ns, &maker);
    rb.register_node(A.0, 1, A.1, A.2).unwrap();
    let node = ns.add_client_ns().unwrap();
    node.ip(&["addr", "add", &format!("{}/24", A.2), "dev", "vc"])
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    sh(Command::new("openssl").current_dir(w).args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "fake.key",
        "-out",
        "fake.der",
        "-outform",
        "DER",
        "-subj",
        "/CN=self-made EK",
        "-days",
        "30",
    ]));
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = serde_json::json!({
        "xname": A.0,
        "ek_cert": b64.encode(std::fs::read(w.join("fake.der")).unwrap()),
        "ak_public": b64.encode([0u8; 32]),
    })
    .to_string();
    let out = node
        .cmd("curl")
        .args(["-sk", "-m", "10", "-H", "Content-Type: application/json"])
        .args(["--data-binary", &body])
        .args(["-w", "\n%{http_code} %{content_type}"])
        .arg("https://192.0.2.1/identity/v1/tpm/challenge")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    assert!(
        status.starts_with("403 application/problem+json"),
        "{status}: {body}"
    );
    let p: Value = serde_json::from_str(body).unwrap();
    assert_eq!(p["status"], 403, "{p}");
    assert!(p["title"].is_string() && p["type"].is_string(), "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("does not chain to the manufacturer CA bundle"),
        "{p}"
    );
    let r = refusals(&rb, A.0);
    assert!(
        r.iter()
            .any(|d| d.contains("does not chain to the manufacturer CA bundle")),
        "{r:?}"
    );
    // Under policy tpm a boot script carries no join token, and a token an administrator
    // issues is not enough either.
    let (code, script) = rb
        .http("GET", &format!("/boot/v1/bootscript?mac={}", A.1), None)
        .unwrap();
    assert_eq!(code, 200, "{script}");
    assert!(!script.contains("rackboot.join="), "{script}");
    assert!(script.contains("rackboot.url="), "{script}");
    let (code, issued) = rb
        .http(
            "POST",
            "/identity/v1/join-tokens",
            Some(&serde_json::json!({ "node": A.0 }).to_string()),
        )
        .unwrap();
    assert_eq!(code, 200, "{issued}");
    let token = serde_json::from_str::<Value>(&issued).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    sh(Command::new("openssl").current_dir(w).args([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "node.key",
        "-out",
        "node.csr",
        "-subj",
        &format!("/CN={}", A.0),
    ]));
    let body = serde_json::json!({
        "token": token,
        "csr": std::fs::read_to_string(w.join("node.csr")).unwrap(),
    })
    .to_string();
    let out = node
        .cmd("curl")
        .args(["-sk", "-m", "10", "-H", "Content-Type: application/json"])
        .args(["--data-binary", &body, "-w", "\n%{http_code}"])
        .arg("https://192.0.2.1/identity/v1/enroll")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.ends_with("\n403"), "{text}");
    assert!(text.contains("enrolls under policy tpm"), "{text}");
    // Nothing was issued, nothing bound.
    let (ok, certs) = rb.cli(&ns, &["cert", "list", "--node", A.0, "-o", "json"], None);
    assert!(ok && certs.trim() == "[]", "{certs}");
    let (code, _) = rb
        .http("GET", &format!("/identity/v1/tpm/eks/{}", A.0), None)
        .unwrap();
    assert_eq!(code, 404);
}

/// Acceptance 3: a real swtpm whose EK chains to the manufacturer CA, but the node's EK hash is
/// pre-registered to another value: refused (the agent shows why) and audited. Registering the
/// right EK (from its certificate, with the CLI) lets the same TPM enroll; a second node cannot
/// claim that EK.
#[test]
fn tpm_enrollment_with_an_ek_not_bound_to_the_node_is_refused_and_audited() {
    if !tpm_preflight(false) {
        return;
    }
    let ns = Netns::new("tpmb").unwrap();
    let maker = Manufacturer::new();
    let node = HostNode::new(&ns, &maker);
    let rb = tpm_rackboot(&ns, &maker);
    rb.register_node(A.0, 1, A.1, A.2).unwrap();
    rb.register_node("x1000c0s0b0n1", 2, "52:54:00:dd:00:02", "192.0.2.51")
        .unwrap();
    let other = format!("sha256:{}", "ab".repeat(32));
    let (ok, out) = rb.cli(&ns, &["cert", "ek", "set", A.0, "--hash", &other], None);
    assert!(ok, "{out}");

    let (ok, out) = node.agent(&["agent", "tpm-enroll"]);
    assert!(!ok, "{out}");
    assert!(out.contains("403"), "{out}");
    assert!(out.contains(&format!("is not {}'s", A.0)), "{out}");
    let r = refusals(&rb, A.0);
    assert!(r.iter().any(|d| d.contains(&other)), "{r:?}");
    assert!(!node.dir.path().join("id/cert.pem").exists());

    // The operator registers the right EK from its certificate: the TPM enrolls.
    let ek = node.ek_cert();
    let (ok, out) = rb.cli(
        &ns,
        &["cert", "ek", "set", A.0, "--ek", ek.to_str().unwrap()],
        None,
    );
    assert!(ok, "{out}");
    let (ok, out) = node.agent(&["agent", "tpm-enroll"]);
    assert!(ok, "{out}\n{}", rb.log_text());
    assert!(out.contains("enrolled x1000c0s0b0n0 with its TPM"), "{out}");
    let (ok, out) = rb.cli(&ns, &["cert", "ek", "show", A.0, "-o", "json"], None);
    assert!(ok && out.contains("\"operator\""), "{out}");
    // One TPM, one node: the same EK cannot be registered for another node.
    let (ok, out) = rb.cli(
        &ns,
        &[
            "cert",
            "ek",
            "set",
            "x1000c0s0b0n1",
            "--ek",
            ek.to_str().unwrap(),
        ],
        None,
    );
    assert!(!ok && out.contains("one TPM belongs to one node"), "{out}");
}

/// A TLS man in the middle (python3) in the appliance's place: it relays to the real rackboot
/// and, in `mode`, swaps the CA in the enrollment answer for its own (`forge-ca`) or corrupts
/// the credential (`bad-credential`).
fn start_mitm(ns: &Netns, w: &Path, mode: &str) -> Child {
    sh(Command::new("openssl").current_dir(w).args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "evil.key",
        "-out",
        "evil.pem",
        "-subj",
        "/CN=evil rackboot",
        "-days",
        "30",
    ]));
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

/// The `detail` of the latest `stage` event in a timeline answer (any nesting).
fn find_stage(v: &Value, stage: &str) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.get("stage").and_then(Value::as_str) == Some(stage) {
                return m.get("detail").cloned();
            }
            m.values().find_map(|x| find_stage(x, stage))
        }
        Value::Array(a) => a.iter().rev().find_map(|x| find_stage(x, stage)),
        _ => None,
    }
}

/// Golden PCRs: a member of a group whose golden PCR 0 differs from its quote is refused (with
/// the PCR named) and audited; a matching value enrolls. swtpm without firmware has all-zero
/// PCRs.
#[test]
fn tpm_golden_pcrs_refuse_a_node_that_booted_other_code() {
    if !tpm_preflight(false) {
        return;
    }
    let zero = "0".repeat(64);
    let wrong = "11".repeat(32);
    for (golden, enrolls) in [(&wrong, false), (&zero, true)] {
        let ns = Netns::new("tpmg").unwrap();
        let maker = Manufacturer::new();
        let node = HostNode::new(&ns, &maker);
        let bundle = maker.bundle();
        let pcrs = format!(r#"{{ compute = {{ "0" = "{golden}", "7" = "{zero}" }} }}"#);
        let rb = Rackboot::start_with_env(
            &ns,
            &[
                ("RACKBOOT_IDENTITY__POLICY", "token"),
                ("RACKBOOT_IDENTITY__GROUP_POLICY", r#"{ compute = "tpm" }"#),
                ("RACKBOOT_IDENTITY__TPM__EK_CA", bundle.to_str().unwrap()),
                ("RACKBOOT_IDENTITY__TPM__GOLDEN_PCRS", &pcrs),
            ],
        )
        .unwrap();
        rb.register_node(A.0, 1, A.1, A.2).unwrap();
        let (code, body) = rb
            .http(
                "POST",
                "/hsm/v2/groups",
                Some(&format!(
                    r#"{{"label":"compute","members":{{"ids":["{}"]}}}}"#,
                    A.0
                )),
            )
            .unwrap();
        assert!(code < 300, "{code} {body}");
        let (ok, out) = node.agent(&["agent", "tpm-enroll"]);
        assert_eq!(ok, enrolls, "{out}");
        if !enrolls {
            assert!(out.contains("PCR 0 of x1000c0s0b0n0"), "{out}");
            assert!(
                refusals(&rb, A.0).iter().any(|d| d.contains("golden")),
                "{:?}",
                audit(&rb, A.0)
            );
            // Refused before anything was bound.
            let (code, _) = rb
                .http("GET", &format!("/identity/v1/tpm/eks/{}", A.0), None)
                .unwrap();
            assert_eq!(code, 404);
        }
    }
}
