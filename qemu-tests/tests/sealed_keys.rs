//! Private keys sealed to the TPM (issue 15), on the host with the real binary and swtpm:
//!
//! - a data dir made without a TPM setting keeps plain key files, and status says so;
//! - started again with `RACKBOOT_TPM=auto` and a TPM, rackboot seals every key file in place
//!   (the same keys: the issuer's key id and the CA stay), serves, and mints tokens through it;
//! - a backup carries the keys unsealed (inside its encrypted archive), so a restore elsewhere
//!   gets the same keys;
//! - a copy of the data dir given to another TPM, or the same TPM after PCR 7 changed (the
//!   Secure Boot state), yields no key: rackboot refuses to start and says why.
//!
//! The appliance VM's version (OVMF measuring Secure Boot into PCR 7, the data partition moved
//! to a fresh VM with a fresh swtpm) is in appliance.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;

use qemu_tests::{Netns, Rackboot, Swtpm, preflight_with, rackboot_bin, run_in};
use serde_json::Value;

const MAGIC: &[u8] = b"RACKBOOT-TPM-SEALED/1\n";
const KEYS: [&str; 4] = [
    "identity/ca.key",
    "identity/secrets.key",
    "bmc-credentials.key",
    "auth/issuer.pem",
];

fn cli(ns: &Netns, env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let bin = rackboot_bin().unwrap();
    run_in(ns, bin.to_str().unwrap(), args, env, None).unwrap()
}

fn keys_status(ns: &Netns, env: &[(&str, &str)], dir: &Path) -> String {
    let (ok, out) = cli(
        ns,
        env,
        &[
            "appliance",
            "status",
            "--data-dir",
            dir.to_str().unwrap(),
            "-o",
            "json",
        ],
    );
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["keys"].as_str().unwrap().to_owned()
}

fn kid(rb: &Rackboot) -> String {
    let (code, body) = rb.http("GET", "/.well-known/jwks.json", None).unwrap();
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["keys"][0]["kid"].as_str().unwrap().to_owned()
}

fn read(dir: &Path, rel: &str) -> Vec<u8> {
    std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn keys_sealed_to_a_tpm_serve_and_are_useless_to_another_tpm_or_after_pcr7_changes() {
    if !preflight_with(false, &["swtpm", "tpm2_getrandom", "tpm2_pcrextend"]) {
        return;
    }
    let ns = Netns::new("seal").unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let state_a = w.join("tpm-a");
    std::fs::create_dir(&state_a).unwrap();
    let tpm_a = Swtpm::start(&ns, &state_a, 2421);
    let env_a = [
        ("RACKBOOT_TPM", "auto"),
        ("RACKBOOT_TPM_TCTI", tpm_a.tcti.as_str()),
    ];

    // 1. No TPM setting: plain key files, as before this feature, and status says so.
    let mut rb =
        Rackboot::start_in_dir(&ns, tempfile::tempdir().unwrap(), w.join("plain.log"), &[])
            .unwrap();
    let dd = rb.data_dir.path().to_path_buf();
    let plain: Vec<Vec<u8>> = KEYS.iter().map(|k| read(&dd, k)).collect();
    assert!(!plain.iter().any(|b| b.starts_with(MAGIC)));
    let kid_before = kid(&rb);
    let st = keys_status(&ns, &[], &dd);
    assert!(st.starts_with("not sealed (RACKBOOT_TPM=off)"), "{st}");
    rb.terminate().unwrap();
    let data = std::mem::replace(&mut rb.data_dir, tempfile::tempdir().unwrap());

    // 2. With RACKBOOT_TPM=auto and a TPM: each key file is sealed in place, keeping its key.
    let mut rb = Rackboot::start_in_dir(&ns, data, w.join("sealed.log"), &env_a).unwrap();
    for (rel, before) in KEYS.iter().zip(&plain) {
        let now = read(&dd, rel);
        assert!(now.starts_with(MAGIC), "{rel} is not sealed");
        assert!(
            !now.windows(11).any(|x| x == b"PRIVATE KEY"),
            "{rel} has a PEM key in it"
        );
        assert!(
            !now.windows(before.len()).any(|x| x == before.as_slice()),
            "{rel} holds its plain key"
        );
    }
    assert!(
        rb.log_text().contains("sealed the key file to the TPM"),
        "{}",
        rb.log_text()
    );
    // The token minted at start came from the sealed issuer key, through the CLI in the
    // namespace; the server verifies it with the key it unsealed: same key id as before.
    assert_eq!(kid(&rb), kid_before);
    let (code, body) = rb.http("GET", "/rackboot/v1/leases", None).unwrap();
    assert_eq!(code, 200, "{body}");
    let st = keys_status(&ns, &env_a, &dd);
    assert!(
        st.starts_with("sealed to the TPM (policy sha256:7)"),
        "{st}"
    );

    // 3. A restart on the same TPM unseals them again.
    rb.terminate().unwrap();
    let data = std::mem::replace(&mut rb.data_dir, tempfile::tempdir().unwrap());
    let mut rb = Rackboot::start_in_dir(&ns, data, w.join("again.log"), &env_a).unwrap();
    assert_eq!(kid(&rb), kid_before);

    // 4. A backup carries the keys unsealed inside its encrypted archive: restored without a
    //    TPM, they are the same keys, in plain files.
    let pass = w.join("passphrase");
    std::fs::write(&pass, "sealed keys test passphrase\n").unwrap();
    let target = w.join("backups");
    let (ok, out) = cli(
        &ns,
        &env_a,
        &[
            "backup",
            "create",
            target.to_str().unwrap(),
            "--data-dir",
            dd.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    let archive = out.lines().next().unwrap().trim().to_owned();
    let restored = w.join("restored");
    let (ok, out) = cli(
        &ns,
        &[],
        &[
            "backup",
            "restore",
            &archive,
            "--data-dir",
            restored.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    for (rel, before) in KEYS.iter().zip(&plain) {
        assert_eq!(&read(&restored, rel), before, "{rel} after the restore");
    }
    rb.terminate().unwrap();
    let data = std::mem::replace(&mut rb.data_dir, tempfile::tempdir().unwrap());

    // 5. The data dir copied to a machine with another TPM: nothing unseals.
    let copy = tempfile::tempdir().unwrap();
    qemu_tests::sh_ok(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", data.path().display()))
            .arg(copy.path()),
    );
    let state_b = w.join("tpm-b");
    std::fs::create_dir(&state_b).unwrap();
    let tpm_b = Swtpm::start(&ns, &state_b, 2431);
    let env_b = [
        ("RACKBOOT_TPM", "auto"),
        ("RACKBOOT_TPM_TCTI", tpm_b.tcti.as_str()),
    ];
    let err = Rackboot::start_in_dir(&ns, copy, w.join("other-tpm.log"), &env_b)
        .err()
        .expect("rackboot started on another TPM")
        .to_string();
    assert!(err.contains("sealed by another TPM"), "{err}");
    let (ok, out) = cli(
        &ns,
        &env_b,
        &[
            "token",
            "create",
            "--scope",
            "admin",
            "--data-dir",
            dd.to_str().unwrap(),
        ],
    );
    assert!(!ok && out.contains("sealed by another TPM"), "{out}");

    // 6. The same TPM after PCR 7 changed (new Secure Boot keys, a dbx update, Secure Boot off).
    tpm_a.tools(
        &ns,
        w,
        "tpm2_pcrextend",
        &[&format!("7:sha256={}", "ab".repeat(32))],
    );
    let err = Rackboot::start_in_dir(&ns, data, w.join("pcr7.log"), &env_a)
        .err()
        .expect("rackboot started after PCR 7 changed")
        .to_string();
    assert!(err.contains("PCR 7"), "{err}");
}
