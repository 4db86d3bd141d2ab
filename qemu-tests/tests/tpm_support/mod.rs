//! Helpers shared by the TPM end-to-end tests (tpm*.rs).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

use qemu_tests::{Manufacturer, Netns, Rackboot, Swtpm, have, preflight, rackboot_bin};
use rackboot::identity::tpm_wire;
use serde_json::Value;

/// Everything these tests need besides root and the node image.
pub fn tpm_preflight(need_qemu: bool) -> bool {
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
pub fn credential_file(c: &tpm_wire::Credential) -> Vec<u8> {
    let mut v = 0xBADC_C0DEu32.to_be_bytes().to_vec();
    v.extend(1u32.to_be_bytes());
    v.extend(&c.blob);
    v.extend(&c.secret);
    v
}

pub fn ek_spki(ek_der: &[u8], bundle: &Path) -> tpm_wire::EkCert {
    tpm_wire::check_ek_cert(ek_der, &std::fs::read_to_string(bundle).unwrap()).unwrap()
}

pub const A: (&str, &str, &str) = ("x1000c0s0b0n0", "52:54:00:dd:00:01", "192.0.2.50");

/// rackboot with policy `tpm` for the whole rack and the manufacturer's bundle.
pub fn tpm_rackboot(ns: &Netns, maker: &Manufacturer) -> Rackboot {
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

pub fn audit(rb: &Rackboot, node: &str) -> Vec<Value> {
    rb.identity_audit(node).unwrap()
}

pub fn refusals(rb: &Rackboot, node: &str) -> Vec<String> {
    audit(rb, node)
        .into_iter()
        .filter(|e| e["action"] == "enroll-tpm" && e["ok"] == false)
        .map(|e| e["detail"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A node on the rack segment at A's inventory address with its own swtpm, and the agent.
pub struct HostNode {
    pub ns: Netns,
    pub tpm: Swtpm,
    pub dir: tempfile::TempDir,
}

impl HostNode {
    pub fn new(server: &Netns, maker: &Manufacturer) -> HostNode {
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
    pub fn agent(&self, args: &[&str]) -> (bool, String) {
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
    pub fn ek_cert(&self) -> PathBuf {
        self.tpm.tools(
            &self.ns,
            self.dir.path(),
            "tpm2_nvread",
            &["0x1c00002", "-o", "ek.der"],
        );
        self.dir.path().join("ek.der")
    }
}

/// The `detail` of the latest `stage` event in a timeline answer (any nesting).
pub fn find_stage(v: &Value, stage: &str) -> Option<Value> {
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
