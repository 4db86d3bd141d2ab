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

use qemu_tests::{Netns, have, preflight};
use rackboot::identity::{tpm, tpm_wire};

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

fn sh(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TPM manufacturer: swtpm_localca's root and issuing CA in a directory of the test's.
struct Manufacturer {
    dir: tempfile::TempDir,
}

impl Manufacturer {
    fn new() -> Manufacturer {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("ca")).unwrap();
        std::fs::write(
            d.join("localca.conf"),
            format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
                ca = d.join("ca").display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("setup.conf"),
            format!(
                "create_certs_tool = swtpm_localca\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = /etc/swtpm-localca.options\nactive_pcr_banks = sha256\n",
                d.join("localca.conf").display()
            ),
        )
        .unwrap();
        Manufacturer { dir }
    }

    /// A new TPM's state, with an RSA EK and its certificate from this manufacturer.
    fn tpm(&self, name: &str) -> PathBuf {
        let state = self.dir.path().join(name);
        std::fs::create_dir_all(&state).unwrap();
        sh(Command::new("swtpm_setup")
            .args([
                "--tpm2",
                "--create-ek-cert",
                "--pcr-banks",
                "sha256",
                "--tpmstate",
            ])
            .arg(&state)
            .arg("--config")
            .arg(self.dir.path().join("setup.conf")));
        state
    }

    /// The EK CA bundle an operator would configure: issuing CA and root.
    fn bundle(&self) -> PathBuf {
        let ca = self.dir.path().join("ca");
        let mut pem = std::fs::read_to_string(ca.join("issuercert.pem")).unwrap();
        pem.push_str(&std::fs::read_to_string(ca.join("swtpm-localca-rootca-cert.pem")).unwrap());
        let out = self.dir.path().join("ek-ca.pem");
        std::fs::write(&out, pem).unwrap();
        out
    }
}

/// swtpm serving `state` on 127.0.0.1:`port` inside a namespace.
struct Swtpm {
    child: Child,
    tcti: String,
}

impl Swtpm {
    fn start(ns: &Netns, state: &Path, port: u16) -> Swtpm {
        let child = ns
            .cmd("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .args(["--server", &format!("type=tcp,port={port}")])
            .args(["--ctrl", &format!("type=tcp,port={}", port + 1)])
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Swtpm {
            child,
            tcti: format!("swtpm:host=127.0.0.1,port={port}"),
        };
        // Ready when it answers a command.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = ns
                .cmd("tpm2_getrandom")
                .args(["-T", &s.tcti, "4"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|st| st.success());
            if ok {
                return s;
            }
            assert!(Instant::now() < deadline, "swtpm did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a tpm2-tools command against this TPM in `dir`, then flushes the transient
    /// objects it left loaded (no resource manager here, and swtpm has three object slots).
    fn tools(&self, ns: &Netns, dir: &Path, prog: &str, args: &[&str]) -> String {
        let out = sh(ns
            .cmd(prog)
            .current_dir(dir)
            .env("TPM2TOOLS_TCTI", &self.tcti)
            .args(args));
        self.flush(ns);
        out
    }

    fn flush(&self, ns: &Netns) {
        sh(ns
            .cmd("tpm2_flushcontext")
            .env("TPM2TOOLS_TCTI", &self.tcti)
            .arg("-t"));
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
