//! `cargo xtask demo`: one QEMU node PXE-boots from rackboot, start to finish, narrated.

use std::time::Duration;

use anyhow::Context;
use qemu_tests::{Firmware, Netns, Qemu, Rackboot, field};

use crate::run::run;

pub fn run_demo() -> anyhow::Result<()> {
    crate::deps::install()?;
    let image = crate::image::node()?;
    crate::stage("build rackboot");
    run(std::process::Command::new(env!("CARGO"))
        .current_dir(crate::root())
        .args(["build", "-p", "appliance", "--bin", "rackboot"]))?;
    cleanup_leftovers();

    crate::stage("start rackboot in a network namespace (bridge br0 = 192.0.2.1/24)");
    let mut ns = Netns::new("demo")?;
    let rb = Rackboot::start(&ns)?;
    eprintln!(
        "rackboot serve --interface br0 --data-dir {}  (DHCP :67, TFTP :69, HTTP :80)",
        rb.data_dir.path().display()
    );

    crate::stage("register a node the OpenCHAMI way (SMD + BSS APIs) and import its kernel/initrd");
    rb.import_node_images()?;
    let (mac, ip, xname) = ("52:54:00:de:00:01", "192.0.2.50", "x1000c0s0b0n0");
    rb.register_node(xname, 1, mac, ip)?;
    eprintln!(
        "kernel {} and initrd {} imported as /images/vmlinuz, /images/initrd.img",
        image.kernel.display(),
        image.initrd.display()
    );
    eprintln!(
        "node {xname}: MAC {mac} → {ip} (EthernetInterface), boot parameters set (bootparameters)"
    );

    crate::stage("power on a QEMU node (SeaBIOS + iPXE ROM), PXE boot from the network");
    let mut vm = Qemu::start(&mut ns, Firmware::SeaBiosIpxe, mac)?;
    let line = vm
        .wait_for("RACKBOOT-NODE-UP", Duration::from_secs(300))
        .context("the node did not boot")?;

    // The node's initramfs fetches its cloud-init documents and phones home; wait for that.
    let _ = vm.wait_for("RACKBOOT-PHONED-HOME", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));

    crate::stage("what rackboot saw: the node's boot timeline (rackboot timeline XNAME)");
    let bin = qemu_tests::rackboot_bin()?;
    let out = ns
        .cmd(bin.to_str().context("binary path")?)
        .args(["timeline", xname])
        .env("RACKBOOT_URL", "http://192.0.2.1")
        .env("RACKBOOT_DATA_DIR", rb.data_dir.path())
        .output()?;
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
    let out = ns
        .cmd(bin.to_str().context("binary path")?)
        .args(["status"])
        .env("RACKBOOT_URL", "http://192.0.2.1")
        .env("RACKBOOT_DATA_DIR", rb.data_dir.path())
        .output()?;
    crate::stage("the rack (rackboot status)");
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
    crate::stage("what the node says");
    eprintln!("  {line}");
    eprintln!(
        "\nThe node booted with its inventory address {} as {} (nid {}).",
        field(&line, "ip").unwrap_or("?"),
        field(&line, "xname").unwrap_or("?"),
        field(&line, "nid").unwrap_or("?")
    );
    let (_, leases) = rb.http("GET", "/rackboot/v1/leases", None)?;
    eprintln!("Leases (GET /rackboot/v1/leases): {leases}");
    Ok(())
}

/// Namespaces left by an interrupted demo (Ctrl-C skips destructors).
fn cleanup_leftovers() {
    if let Ok(out) = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
    {
        for name in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
        {
            if name.starts_with("rbt-demo-") {
                let _ = std::process::Command::new("sh")
                    .args(["-c", &format!("for p in $(ip netns pids {name}); do kill -9 $p; done; ip netns del {name}")])
                    .status();
            }
        }
    }
}
