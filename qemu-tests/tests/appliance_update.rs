//! An A→B update of the appliance image the way a sysadmin does it: the bundle uploaded through
//! the admin API, the appliance rebooting into slot b under OVMF Secure Boot with its NVRAM
//! kept across boots, the data partition kept, slot b made the default only once healthy, and
//! a node PXE-booting from the updated appliance. A bundle signed with another key is refused
//! first, with nothing changed.

#[path = "support/appliance_vm.rs"]
mod vm;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vm::*;

fn api(ns: &qemu_tests::Netns, token: &str, method: &str, path: &str) -> (u16, Value) {
    let (code, body) = http(
        ns,
        method,
        &format!("http://{MGMT_ADDR}{path}"),
        Some(token),
        None,
    )
    .expect("curl");
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Uploads `bundle` with curl (streamed from the file) and returns (status, JSON body).
fn upload(ns: &qemu_tests::Netns, token: &str, bundle: &Path, reboot: &str) -> (u16, Value) {
    let out = ns
        .cmd("curl")
        .args(["-s", "-m", "600", "-X", "PUT", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg("-T")
        .arg(bundle)
        .arg(format!(
            "http://{MGMT_ADDR}/rackboot/v1/appliance/update?reboot={reboot}"
        ))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    )
}

/// The build's payloads re-bundled and signed with a key the appliance does not trust.
fn forged_bundle(dir: &Path) -> std::path::PathBuf {
    let key = dir.join("stranger.key");
    let st = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key)
        .status()
        .expect("openssl");
    assert!(st.success());
    let out = dir.join("forged.rbu");
    let st = Command::new(qemu_tests::root().join("buildroot/board/rackboot/make-bundle.sh"))
        .arg(&out)
        .arg(&key)
        .args([
            "x86_64-uefi",
            "6.6.6",
            &image_env("roothash").expect("roothash"),
        ])
        .arg(image_dir())
        .status()
        .expect("make-bundle.sh");
    assert!(st.success());
    out
}

fn wait_exit(vm: &mut Appliance, deadline: Duration) {
    let until = Instant::now() + deadline;
    while vm.child.try_wait().expect("qemu").is_none() {
        assert!(
            Instant::now() < until,
            "the appliance did not reboot; console:\n{}",
            vm.console_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One appliance for an update test: its network, a private disk grown by `grow_mib` (room
/// for uploads), and an enrolled firmware variable store kept across its boots.
struct Rig {
    ns: qemu_tests::Netns,
    disk: Disk,
    vars: std::path::PathBuf,
    _nvram: tempfile::TempDir,
    bundle: std::path::PathBuf,
}

impl Rig {
    fn new(tag: &str, grow_mib: u64) -> Rig {
        let bundle = image_dir().join("rackboot-update.rbu");
        assert!(
            bundle.exists(),
            "no {} (cargo xtask image appliance)",
            bundle.display()
        );
        let ns = network(tag).expect("test network");
        let disk = Disk::new().expect("disk copy");
        disk.grow(grow_mib).expect("grow the disk");
        let nvram = tempfile::tempdir().expect("tempdir");
        let vars = enrolled_vars(nvram.path()).expect("OVMF vars");
        Rig {
            ns,
            disk,
            vars,
            _nvram: nvram,
            bundle,
        }
    }

    fn boot(&self) -> Appliance {
        Appliance::boot_with_vars(
            &self.ns,
            &self.disk,
            &self.vars,
            tempfile::tempdir().expect("tempdir"),
        )
        .expect("start the appliance VM")
    }

    /// The first boot, until ready; with the admin token it printed.
    fn first_boot(&self) -> (Appliance, String) {
        let mut vm = self.boot();
        wait_ready(&self.ns, &mut vm).unwrap_or_else(|e| panic!("first boot: {e:#}"));
        let token = admin_token(&vm.console_text());
        (vm, token)
    }
}

#[test]
fn update_a_to_b_through_the_api_keeps_the_data_and_boots_nodes() {
    if !preflight() {
        return;
    }
    // Room on the data partition for the uploaded bundle and the node images.
    let mut rig = Rig::new("aupd", 384);
    let (ns, bundle, boot) = (&rig.ns, rig.bundle.clone(), || rig.boot());
    let (mut vm, token) = rig.first_boot();
    let (code, st) = api(ns, &token, "GET", "/rackboot/v1/appliance");
    assert_eq!(code, 200, "{st}");
    assert_eq!(st["booted_slot"], "a");
    // Something to keep: a node in the inventory.
    let (code, _) = http(
        ns,
        "POST",
        &format!("http://{MGMT_ADDR}/hsm/v2/State/Components"),
        Some(&token),
        Some(br#"{"Components":[{"ID":"x1000c0s9b0n0","Type":"Node","State":"Ready","Enabled":true,"NID":9}]}"#),
    )
    .expect("curl");
    assert_eq!(code, 204);

    // Without the scope, or signed by a stranger: refused, nothing changes.
    let (code, _) = http(
        ns,
        "PUT",
        &format!("http://{MGMT_ADDR}/rackboot/v1/appliance/update"),
        None,
        Some(b"x"),
    )
    .expect("curl");
    assert_eq!(code, 401);
    let work = tempfile::tempdir().expect("tempdir");
    let (code, body) = upload(ns, &token, &forged_bundle(work.path()), "now");
    assert_eq!(code, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("does not verify"),
        "{body}"
    );
    let (_, st) = api(ns, &token, "GET", "/rackboot/v1/appliance");
    assert!(st["pending"].is_null(), "{st}");
    assert_eq!(st["slots"]["b"]["state"], "empty", "{st}");

    // The real bundle: written into slot b, and the appliance's updater reboots into it at the
    // time asked for (a little ahead: the install itself takes a while under TCG).
    let at = std::time::SystemTime::now() + Duration::from_secs(45);
    let at_text = humantime::format_rfc3339_seconds(at).to_string();
    let (code, body) = upload(ns, &token, &bundle, &format!("at%20{at_text}"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["slot"], "b", "{body}");
    assert_eq!(body["rebooting"], false, "{body}");
    assert_eq!(body["reboot"], format!("at {at_text}"), "{body}");
    let (code, st) = api(ns, &token, "GET", "/rackboot/v1/appliance");
    if code == 200 {
        // Still up (the install took less than the lead): the schedule is on record.
        assert_eq!(st["pending"]["stage"], "trial", "{st}");
        assert_eq!(st["pending"]["reboot_at"], at_text.as_str(), "{st}");
    }
    wait_exit(&mut vm, BOOT_DEADLINE);
    // The guest's clock is the host's (QEMU's RTC, UTC), to the second.
    assert!(
        std::time::SystemTime::now() + Duration::from_secs(1) >= at,
        "the appliance rebooted before the time it was given ({at_text})"
    );
    drop(vm);

    // Second boot: the firmware's BootNext picks slot b once; healthy, it becomes the default.
    let mut vm = boot();
    wait_ready(ns, &mut vm).unwrap_or_else(|e| panic!("boot into slot b: {e:#}"));
    assert!(
        vm.console_text().contains("rackboot.slot=b"),
        "the kernel command line is not slot b's"
    );
    let until = Instant::now() + Duration::from_secs(300);
    let st = loop {
        let (code, st) = api(ns, &token, "GET", "/rackboot/v1/appliance");
        assert_eq!(
            code, 200,
            "the admin token from before the update no longer works: {st}"
        );
        if st["slots"]["b"]["state"] == "good" {
            break st;
        }
        assert!(Instant::now() < until, "slot b never became good: {st}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(st["booted_slot"], "b", "{st}");
    assert!(st["pending"].is_null(), "{st}");
    // The data partition came along.
    let (code, c) = api(ns, &token, "GET", "/hsm/v2/State/Components/x1000c0s9b0n0");
    assert_eq!(code, 200, "the inventory was lost: {c}");

    // A power cut now: the firmware's BootOrder starts with slot b.
    drop(vm);
    let mut vm = boot();
    wait_ready(ns, &mut vm).unwrap_or_else(|e| panic!("third boot: {e:#}"));
    let (_, st) = api(ns, &token, "GET", "/rackboot/v1/appliance");
    assert_eq!(st["booted_slot"], "b", "slot b is not the default: {st}");

    // Nodes boot from the updated appliance.
    pxe_boot_nodes(&mut rig.ns, &token);
}

/// An update whose rackboot fails its health check, as badly as it can: the bundle (signed
/// like any other, `rackboot-update-broken.rbu` from the image build) carries a rackboot that
/// cannot run at all, so on the trial boot not even `boot-check --failed` runs. The boot scripts
/// leave the reason and reset once; BootNext is spent, so the firmware boots slot a, whose boot
/// check reports the failed update and why, and slot a stays the default.
#[test]
fn an_unhealthy_trial_boots_slot_a_again_and_is_reported() {
    if !preflight() {
        return;
    }
    let mut rig = Rig::new("aufl", 256);
    rig.bundle = image_dir().join("rackboot-update-broken.rbu");
    let (ns, bundle, boot) = (&rig.ns, &rig.bundle, || rig.boot());
    let (mut vm, token) = rig.first_boot();
    let (code, body) = upload(ns, &token, bundle, "now");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["slot"], "b", "{body}");
    assert_eq!(body["rebooting"], true, "{body}");
    wait_exit(&mut vm, BOOT_DEADLINE);
    drop(vm);

    // The trial boot: slot b comes up, its rackboot cannot run, the boot scripts give up,
    // leave the reason and reset.
    let mut vm = boot();
    wait_exit(&mut vm, BOOT_DEADLINE);
    let console = vm.console_text();
    drop(vm);
    for want in [
        "rackboot.slot=b",
        "this build is broken on purpose",
        "resetting once, so the firmware boots the last good slot",
    ] {
        assert!(
            console.contains(want),
            "no {want:?} on the trial boot:\n{console}"
        );
    }

    // Back to slot a, which reports the failed update.
    let mut vm = boot();
    wait_ready(ns, &mut vm).unwrap_or_else(|e| panic!("boot after the failed trial: {e:#}"));
    assert!(
        vm.console_text().contains("rackboot.slot=a"),
        "slot a did not come back"
    );
    let until = Instant::now() + Duration::from_secs(300);
    let st = loop {
        let (code, st) = api(ns, &token, "GET", "/rackboot/v1/appliance");
        assert_eq!(code, 200, "{st}");
        if st["pending"].is_null() {
            break st;
        }
        assert!(
            Instant::now() < until,
            "the failed trial was never reported: {st}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(st["booted_slot"], "a", "{st}");
    assert_eq!(st["slots"]["b"]["state"], "failed", "{st}");
    let reason = st["last_failure"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("slot b: ")
            && reason.contains("120 s")
            && reason.contains("could not run its boot check (exit 70)"),
        "{st}"
    );
    // A power cut: slot a is still the default.
    drop(vm);
    let mut vm = boot();
    wait_ready(ns, &mut vm).unwrap_or_else(|e| panic!("boot after a power cut: {e:#}"));
    assert!(
        vm.console_text().contains("rackboot.slot=a"),
        "slot a is not the default after the failed trial"
    );
}
