//! The appliance with a TPM (QEMU's tpm-tis on swtpm; OVMF measures Secure Boot into PCR 7):
//! its private keys are sealed to the TPM from the first boot and it serves with them; the same
//! disk in another machine (a fresh VM with a fresh swtpm, the same Secure Boot keys) yields no
//! key: rackboot refuses to start and says why, and no private key is readable on the disk.
//! The host-side cases (migration, another TPM, PCR 7 changes, backups) are in sealed_keys.rs.

#[path = "support/appliance_vm.rs"]
mod vm;

use qemu_tests::VmTpm;
use vm::*;

/// Whether `needle` occurs in the file at `path` (read in pieces: the disk is hundreds of MiB).
fn file_contains(path: &std::path::Path, needle: &[u8]) -> bool {
    use std::io::Read;
    let mut f = std::fs::File::open(path).expect("disk");
    let mut buf = vec![0u8; 8 << 20];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = f.read(&mut buf).expect("read disk");
        if n == 0 {
            return false;
        }
        carry.extend_from_slice(&buf[..n]);
        if carry.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        let keep = carry.len().saturating_sub(needle.len());
        carry.drain(..keep);
    }
}

#[test]
fn appliance_keys_are_sealed_to_its_tpm_and_useless_in_another_machine() {
    if !preflight() || !qemu_tests::have("swtpm") {
        assert!(
            std::env::var("CI").ok().as_deref() != Some("true"),
            "swtpm is missing"
        );
        return;
    }
    let ns = network("atpm").expect("test network");
    let disk = Disk::new().expect("disk copy");
    let state = tempfile::tempdir().unwrap();
    let tpm = VmTpm::start(state.path());
    let dir = tempfile::tempdir().unwrap();
    let vars = enrolled_vars(dir.path()).expect("firmware variables");
    let mut vm = Appliance::boot_with_devices(&ns, &disk, &vars, dir, &tpm.qemu_args())
        .expect("start the appliance VM");
    if let Err(e) = wait_ready(&ns, &mut vm) {
        panic!("the appliance did not come up: {e:#}");
    }
    let keys = vm.report("keys").unwrap_or_default();
    assert!(
        keys.starts_with("sealed to the TPM (policy sha256:7)"),
        "keys: {keys}"
    );
    // The policy binds a measured Secure Boot state, not an empty PCR.
    let pcr7 = vm.report("pcr7").unwrap_or_default();
    assert!(
        pcr7.len() == 64 && pcr7.chars().any(|c| c != '0'),
        "PCR 7 is {pcr7:?}"
    );
    // It serves with them: the admin token it minted at first boot (the sealed issuer key)
    // opens the API on the management NIC.
    let token = admin_token(&vm.console_text());
    let (code, body) = http(
        &ns,
        "GET",
        &format!("http://{MGMT_ADDR}/hsm/v2/State/Components"),
        Some(&token),
        None,
    )
    .expect("curl");
    assert_eq!(code, 200, "{body}");
    drop(vm);
    drop(tpm);

    // The disk, pulled and put into another machine: same firmware keys, another TPM.
    assert!(!file_contains(&disk.path(), b"PRIVATE KEY-----"));
    assert!(file_contains(&disk.path(), b"RACKBOOT-TPM-SEALED/1"));
    let other = Disk::new().expect("second disk");
    std::fs::copy(disk.path(), other.path()).expect("copy the disk");
    let state = tempfile::tempdir().unwrap();
    let tpm = VmTpm::start(state.path());
    let dir = tempfile::tempdir().unwrap();
    let vars = enrolled_vars(dir.path()).expect("firmware variables");
    let mut vm = Appliance::boot_with_devices(&ns, &other, &vars, dir, &tpm.qemu_args())
        .expect("start the second VM");
    let line = vm
        .wait_for_any(&["sealed by another TPM"], BOOT_DEADLINE)
        .expect("rackboot did not say why it cannot start");
    assert!(line.contains("cannot unseal"), "{line}");
    let (code, _) = http(
        &ns,
        "GET",
        &format!("http://{MGMT_ADDR}/boot/v1/service/status"),
        None,
        None,
    )
    .expect("curl");
    assert_eq!(code, 0, "rackboot answered without its keys");
}
