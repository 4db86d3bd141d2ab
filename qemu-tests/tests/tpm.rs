//! TPM-attested enrollment (policy `tpm`) against real TPMs: swtpm with EK certificates from a
//! manufacturer CA the test makes (swtpm_setup + swtpm_localca), tpm2-tools as the independent
//! TPM client, the real binary as server and node agent.
//!
//! - `make_credential_interoperates_with_tpm2_tools`: rackboot's MakeCredential opens with
//!   `tpm2_activatecredential`, its quote check accepts `tpm2_quote`'s output and refuses
//!   tampered ones.
//! - `tpm_enrollment_with_a_self_made_ek_is_refused_and_audited`: acceptance 2.
//! - `tpm_enrollment_with_an_ek_not_bound_to_the_node_is_refused_and_audited`: acceptance 3.
//! - `tpm_golden_pcrs_refuse_a_node_that_booted_other_code`.
//!
//! Acceptance 1 (the OVMF + swtpm node) and 4 (a man in the middle): `tpm_node.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::Command;

use qemu_tests::{Manufacturer, Netns, P256, Rackboot, Swtpm, openssl_p256, sh_ok as sh};
use rackboot::identity::{tpm, tpm_wire};
use serde_json::Value;

mod tpm_support;

use tpm_support::*;

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
    openssl_p256(
        w,
        P256::Csr,
        "node.key",
        "node.csr",
        &format!("/CN={}", A.0),
        &[],
    )
    .unwrap();
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
