//! The Ansible inventory provider against real `ansible-core` (PyPI, in build/venv): rackboot's
//! binary, symlinked as `rackboot-ansible-inventory`, is the inventory script Ansible runs.

use std::process::Command;

use qemu_tests::{Netns, Rackboot, preflight, rackboot_bin, root};
use serde_json::Value;

/// `ansible-inventory` from build/venv, or `None` (a failure under `CI=true`).
fn ansible_inventory() -> Option<std::path::PathBuf> {
    let bin = root().join("build/venv/bin/ansible-inventory");
    if bin.exists() {
        return Some(bin);
    }
    let msg = "build/venv/bin/ansible-inventory missing (ansible-core; `cargo xtask deps`)";
    assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "{msg}");
    eprintln!("SKIPPED (not in CI): {msg}");
    None
}

/// A token with only `scope`, minted from the server's data dir.
fn token(rb: &Rackboot, scope: &str) -> String {
    let out = Command::new(rackboot_bin().unwrap())
        .args([
            "token",
            "create",
            "--scope",
            scope,
            "--ttl",
            "30m",
            "--data-dir",
        ])
        .arg(rb.data_dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn post(rb: &Rackboot, path: &str, body: &str, want: u16) {
    let (code, resp) = rb.http("POST", path, Some(body)).unwrap();
    assert_eq!(code, want, "POST {path}: {resp}");
}

#[test]
fn ansible_inventory_lists_groups_and_hostvars_from_the_rack() {
    if !preflight(false) {
        return;
    }
    let Some(ansible) = ansible_inventory() else {
        return;
    };
    let ns = Netns::new("ansible").unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    rb.register_node("x1000c0s0b0n0", 1, "52:54:00:aa:00:01", "192.0.2.11")
        .unwrap();
    rb.register_node("x1000c0s1b0n0", 2, "52:54:00:aa:00:02", "192.0.2.12")
        .unwrap();
    post(
        &rb,
        "/hsm/v2/State/Components",
        r#"{"Components":[{"ID":"x1000c0s1b0n0","Type":"Node","State":"Ready","NID":2,"Role":"Storage","SubRole":"Gateway"}]}"#,
        204,
    );
    post(
        &rb,
        "/hsm/v2/Inventory/RedfishEndpoints",
        r#"{"ID":"x1000c0s0b0","FQDN":"192.0.2.200","User":"root","Password":"x"}"#,
        201,
    );
    post(
        &rb,
        "/hsm/v2/groups",
        r#"{"label":"gpu-nodes","members":{"ids":["x1000c0s0b0n0"]}}"#,
        201,
    );

    // Ansible runs the script with only `--list`: the binary, under this name, is the script.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("rackboot-ansible-inventory");
    std::os::unix::fs::symlink(rackboot_bin().unwrap(), &script).unwrap();
    let home = dir.path().join("ansible");
    let run = |token: &str, args: &[&str]| {
        let out = ns
            .cmd(ansible.to_str().unwrap())
            .arg("-i")
            .arg(&script)
            .args(args)
            .env("RACKBOOT_URL", "http://192.0.2.1")
            .env("RACKBOOT_TOKEN", token)
            .env("RACKBOOT_DATA_DIR", "/nonexistent")
            .env("ANSIBLE_HOME", &home)
            .env("ANSIBLE_LOCAL_TEMP", &home)
            .env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "true")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The inventory needs only `inventory:read`.
    let read = token(&rb, "inventory:read");
    let (ok, out, err) = run(&read, &["--list"]);
    assert!(ok, "{out}\n{err}");
    let inv: Value = serde_json::from_str(&out).unwrap();
    let hosts = |g: &str| -> Vec<String> {
        inv[g]["hosts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(hosts("gpu_nodes"), ["x1000c0s0b0n0"], "{out}");
    assert_eq!(hosts("role_compute"), ["x1000c0s0b0n0"], "{out}");
    assert_eq!(hosts("role_storage"), ["x1000c0s1b0n0"], "{out}");
    assert_eq!(hosts("subrole_gateway"), ["x1000c0s1b0n0"], "{out}");
    assert_eq!(
        hosts("rack_x1000"),
        ["x1000c0s0b0n0", "x1000c0s1b0n0"],
        "{out}"
    );
    let vars = &inv["_meta"]["hostvars"]["x1000c0s0b0n0"];
    assert_eq!(vars["ansible_host"], "192.0.2.11", "{out}");
    assert_eq!(vars["xname"], "x1000c0s0b0n0");
    assert_eq!(vars["hostname"], "nid0001");
    assert_eq!(vars["nid"], 1);
    assert_eq!(vars["macs"][0], "52:54:00:aa:00:01");
    assert_eq!(vars["ips"][0], "192.0.2.11");
    assert_eq!(vars["bmc"], "x1000c0s0b0");
    assert_eq!(vars["bmc_ip"], "192.0.2.200");
    assert_eq!(vars["boot_kernel"], "http://192.0.2.1/images/vmlinuz");
    assert_eq!(vars["boot_initrd"], "http://192.0.2.1/images/initrd.img");
    // No boot seen yet: the stage is null, not invented.
    assert!(vars["boot_stage"].is_null(), "{out}");

    let (ok, out, err) = run(&read, &["--graph"]);
    assert!(ok, "{out}\n{err}");
    for want in [
        "@gpu_nodes:",
        "@role_storage:",
        "@rack_x1000:",
        "x1000c0s1b0n0",
    ] {
        assert!(out.contains(want), "--graph lacks {want}:\n{out}");
    }
    let (ok, out, err) = run(&read, &["--host", "x1000c0s1b0n0"]);
    assert!(ok, "{out}\n{err}");
    let vars: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(vars["role"], "Storage", "{out}");

    // The script on its own, as Ansible calls it for one host, and for an unknown one.
    let (ok, out) = qemu_tests::run_in(
        &ns,
        script.to_str().unwrap(),
        &["--host", "x1000c0s0b0n0"],
        &[
            ("RACKBOOT_URL", "http://192.0.2.1"),
            ("RACKBOOT_TOKEN", &read),
        ],
        None,
    )
    .unwrap();
    assert!(ok && out.contains("\"nid0001\""), "{out}");
    let (ok, out) = qemu_tests::run_in(
        &ns,
        script.to_str().unwrap(),
        &["--host", "nosuchhost"],
        &[
            ("RACKBOOT_URL", "http://192.0.2.1"),
            ("RACKBOOT_TOKEN", &read),
        ],
        None,
    )
    .unwrap();
    assert!(ok && out.trim().starts_with("{}"), "{out}");

    // A token for another area is refused (403), and Ansible reports the script's failure.
    let other = token(&rb, "images:read");
    let (ok, out, err) = run(&other, &["--list"]);
    assert!(!ok, "{out}\n{err}");
    assert!(err.contains("inventory:read"), "{err}");
}

/// Ansible reaches a QEMU node over SSH: the inventory script names it, `ansible_host` is its
/// inventory address, and the node runs Debian's dropbear (appended to its initrd).
#[test]
fn ansible_raw_reaches_a_qemu_node_over_ssh() {
    if !preflight(true) {
        return;
    }
    let Some(inventory) = ansible_inventory() else {
        return;
    };
    if !std::path::Path::new("/usr/sbin/dropbear").exists() || !qemu_tests::have("ssh") {
        let msg = "dropbear-bin and openssh-client are needed (`cargo xtask deps`)";
        assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "{msg}");
        eprintln!("SKIPPED (not in CI): {msg}");
        return;
    }
    let ansible = inventory.with_file_name("ansible");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();

    let mut ns = Netns::new("ansvm").unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    rb.import_node_images().unwrap();
    rb.import_image(
        "initrd.img",
        &qemu_tests::ssh_initrd(dir.path(), &public).unwrap(),
    )
    .unwrap();
    let (mac, ip) = ("52:54:00:aa:00:31", "192.0.2.31");
    rb.register_node("x1000c0s5b0n0", 31, mac, ip).unwrap();
    let mut vm = qemu_tests::Qemu::start(&mut ns, qemu_tests::Firmware::SeaBiosIpxe, mac).unwrap();
    vm.wait_for("RACKBOOT-SSH-UP", std::time::Duration::from_secs(400))
        .unwrap_or_else(|e| panic!("{e:#}\n---- rackboot log ----\n{}", rb.log_text()));

    let script = dir.path().join("rackboot-ansible-inventory");
    std::os::unix::fs::symlink(rackboot_bin().unwrap(), &script).unwrap();
    let home = dir.path().join("ansible");
    let out = ns
        .cmd(ansible.to_str().unwrap())
        .arg("-i")
        .arg(&script)
        .args(["all", "-m", "raw", "-a", "cat /proc/cmdline", "-u", "root"])
        .arg("--private-key")
        .arg(&key)
        .env("RACKBOOT_URL", "http://192.0.2.1")
        .env("RACKBOOT_TOKEN", token(&rb, "inventory:read"))
        .env("RACKBOOT_DATA_DIR", "/nonexistent")
        .env("ANSIBLE_HOME", &home)
        .env("ANSIBLE_LOCAL_TEMP", &home)
        .env("ANSIBLE_HOST_KEY_CHECKING", "False")
        .env(
            "ANSIBLE_SSH_ARGS",
            "-o UserKnownHostsFile=/dev/null -o ConnectTimeout=20",
        )
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // The node's own kernel command line, as rackboot's boot script set it.
    assert!(
        text.contains("x1000c0s5b0n0 | CHANGED") && text.contains("xname=x1000c0s5b0n0"),
        "{text}"
    );
}
