//! The embedded profile (`rackboot-tiny`: pxe-core on embassy-net/smoltcp, fixed memory) boots
//! real firmware over a TAP: SeaBIOS+iPXE, and OVMF with its own PXE+TFTP. The nodes are
//! reserved in its postcard flash store, and its counting allocator shows that nothing in the
//! boot path allocated.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use qemu_tests::{Firmware, Netns, Qemu, TINY_BRIDGE, Tiny, field, preflight};

/// Under TCG a boot takes ~25–40 s; several run in parallel on two cores.
const BOOT_TIMEOUT: Duration = Duration::from_secs(400);

fn boot_reserved_node(fw: Firmware, tag: &str, mac: &str, ip: &str, xname: &str, nid: u32) {
    if !preflight(true) {
        return;
    }
    let mut ns = Netns::with_address(tag, TINY_BRIDGE).unwrap();
    let (dir, flash) = Tiny::provision().unwrap();
    Tiny::reserve(&flash, mac, ip, xname, nid).unwrap();
    let tiny = Tiny::start(&mut ns, dir, flash).unwrap();
    let mut vm = Qemu::start(&mut ns, fw, mac).unwrap();
    let line = match vm.wait_for("RACKBOOT-NODE-UP", BOOT_TIMEOUT) {
        Ok(l) => l,
        Err(e) => panic!(
            "{fw:?}: {e:#}\n---- rackboot-tiny log ----\n{}",
            tiny.log_text()
        ),
    };
    assert_eq!(
        field(&line, "ip"),
        Some(ip),
        "{fw:?}: its reserved IP: {line}"
    );
    assert_eq!(field(&line, "xname"), Some(xname), "{line}");
    assert_eq!(
        field(&line, "nid"),
        Some(nid.to_string().as_str()),
        "{line}"
    );
    assert_eq!(field(&line, "initrd"), Some("initrd"), "{line}");
    let bootif = format!("01-{}", mac.replace(':', "-"));
    assert_eq!(field(&line, "BOOTIF"), Some(bootif.as_str()), "{line}");

    // From start-up (before the first DHCP packet) to the userspace marker, the profile's
    // code, pxe-core's engines, embassy-net and smoltcp allocated nothing. The hosted stand-ins
    // for a board may, and are named: `embassy_net_tuntap::TunTapDevice::receive` and
    // `TxToken::consume` (a `Vec` per frame, on the executor thread, inside the calls that
    // `rackboot_tiny::board::Nic` marks) and the threads of async-io's reactor and embassy-time's
    // std alarm. A board's Ethernet driver and timer have none of them.
    let stats = tiny.stats_in(&ns).unwrap();
    assert_eq!(
        stats.own, 0,
        "{fw:?}: the boot path allocated ({stats:?}); rerun rackboot-tiny with \
         RACKBOOT_TINY_ALLOC_TRACE=1 for the call sites"
    );
    assert!(
        stats.tap > 0,
        "the TAP stand-in's per-frame Vecs are counted (so the counter is armed): {stats:?}"
    );
    eprintln!(
        "{fw:?}: allocations in the boot path: own={} (profile, pxe-core, embassy-net, smoltcp); \
         stand-ins: embassy-net-tuntap receive/transmit={}, other threads (async-io reactor, \
         embassy-time std driver)={}; stack high-water {} bytes",
        stats.own, stats.tap, stats.other_threads, stats.stack_high_water
    );

    // The node's lease is in the postcard store, as a reservation's (static) lease.
    let show = tiny.show().unwrap();
    assert!(
        show.lines()
            .any(|l| l.contains(&format!("mac={mac} ip={ip} dynamic=false"))),
        "{show}"
    );
    if fw == Firmware::OvmfPxe {
        assert!(
            tiny.log_text().contains("tftp open snponly.efi"),
            "EDK2 PXE must TFTP iPXE:\n{}",
            tiny.log_text()
        );
    }
}

#[test]
fn tiny_seabios_ipxe_boots_reserved_node() {
    boot_reserved_node(
        Firmware::SeaBiosIpxe,
        "tbios",
        "52:54:00:ab:01:01",
        "192.0.2.50",
        "x1000c0s0b0n0",
        1,
    );
}

#[test]
fn tiny_ovmf_pxe_tftp_boots_reserved_node() {
    boot_reserved_node(
        Firmware::OvmfPxe,
        "tuefi",
        "52:54:00:ab:01:02",
        "192.0.2.51",
        "x1000c0s0b1n0",
        2,
    );
}
