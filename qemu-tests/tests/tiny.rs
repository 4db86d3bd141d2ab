//! The embedded profile (`rackboot-tiny`: pxe-core on embassy-net/smoltcp, fixed memory) boots
//! real firmware over a TAP: SeaBIOS+iPXE, and OVMF with its own PXE+TFTP, one node and two at
//! once. The nodes are reserved in its postcard flash store, and its counting allocator shows
//! that nothing in the boot path allocated. Its TFTP serves several transfers at once: one
//! client stalled mid-transfer holds only its own slot.
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
            tiny.log_text().contains("tftp start snponly.efi"),
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

/// A raw TFTP client that asks for a 255-second retransmission timeout (RFC 2349), takes the
/// first block of `vmlinuz`, says `STALLED` and stops acknowledging: its transfer holds a slot
/// and, for 255 s, gets nothing resent. A line on stdin resumes it: it ACKs block 1 and must get
/// block 2 from the same transfer ID (`RESUMED`), then ends the transfer with an ERROR.
const STALLED_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(300)
s.sendto(b"\x00\x01vmlinuz\x00octet\x00timeout\x00255\x00", ("192.0.2.1", 69))
d, tid = s.recvfrom(2048)
assert d[:2] == b"\x00\x06", d
s.sendto(b"\x00\x04\x00\x00", tid)
d, frm = s.recvfrom(2048)
assert frm == tid and d[:4] == b"\x00\x03\x00\x01", (frm, d[:4])
print("STALLED", flush=True)
sys.stdin.readline()
s.sendto(b"\x00\x04\x00\x01", tid)
d, frm = s.recvfrom(2048)
while frm == tid and d[:4] == b"\x00\x03\x00\x01":  # a resend, if the stall outlasted 255 s
    d, frm = s.recvfrom(2048)
assert frm == tid and d[:4] == b"\x00\x03\x00\x02", (frm, d[:4])
print("RESUMED", flush=True)
s.sendto(b"\x00\x05\x00\x00stop\x00", tid)
"#;

/// Several TFTP transfers at once: while one client stalls mid-transfer (its slot held), three
/// tftp-hpa clients fetch the initrd at the same time and get it byte-exact; the stalled
/// transfer is still there afterwards and goes on when its client does.
#[test]
fn tiny_tftp_serves_others_while_one_client_stalls() {
    use std::process::Stdio;

    if !preflight(false) || !have_tools() {
        return;
    }
    let mut ns = Netns::with_address("ttftp", TINY_BRIDGE).unwrap();
    let (dir, flash) = Tiny::provision().unwrap();
    let tiny = Tiny::start(&mut ns, dir, flash).unwrap();

    let mut stalled = Stalled::start(&ns, &tiny);

    let want = std::fs::read(qemu_tests::root().join("build/node/initrd.img")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let clients: Vec<_> = (0..3)
        .map(|i| {
            let dest = work.path().join(format!("initrd-{i}"));
            let child = ns
                .cmd("tftp")
                .args(["-m", "binary", "192.0.2.1", "-c", "get", "initrd.img"])
                .arg(&dest)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (dest, child)
        })
        .collect();
    for (dest, child) in clients {
        let out = child.wait_with_output().unwrap();
        let got = std::fs::read(&dest).unwrap_or_default();
        assert!(
            out.status.success() && got == want,
            "tftp get: {} ({} of {} bytes)\n{}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            got.len(),
            want.len(),
            String::from_utf8_lossy(&out.stdout),
            tiny.log_text()
        );
    }

    // The stalled transfer kept its slot and its transfer ID all along.
    stalled.resume(&tiny);
    let stats = tiny.stats_in(&ns).unwrap();
    assert_eq!(stats.own, 0, "TFTP allocated: {stats:?}");
}

/// Two OVMF nodes PXE-boot (DHCP, TFTP of snponly.efi, iPXE, HTTP) at the same time while a
/// third TFTP client holds a transfer slot, stalled mid-transfer; the stalled transfer is still
/// alive after both boots.
#[test]
fn tiny_two_nodes_boot_while_a_tftp_client_stalls() {
    if !preflight(true) || !have_tools() {
        return;
    }
    let mut ns = Netns::with_address("ttwo", TINY_BRIDGE).unwrap();
    let (dir, flash) = Tiny::provision().unwrap();
    let nodes = [
        ("52:54:00:ab:02:01", "192.0.2.60", "x1000c0s1b0n0", 11),
        ("52:54:00:ab:02:02", "192.0.2.61", "x1000c0s1b1n0", 12),
    ];
    for (mac, ip, xname, nid) in nodes {
        Tiny::reserve(&flash, mac, ip, xname, nid).unwrap();
    }
    let tiny = Tiny::start(&mut ns, dir, flash).unwrap();
    let mut stalled = Stalled::start(&ns, &tiny);
    let mut vms: Vec<Qemu> = nodes
        .iter()
        .map(|(mac, ..)| Qemu::start(&mut ns, Firmware::OvmfPxe, mac).unwrap())
        .collect();
    for (vm, (_, ip, xname, _)) in vms.iter_mut().zip(nodes) {
        let line = match vm.wait_for("RACKBOOT-NODE-UP", BOOT_TIMEOUT) {
            Ok(l) => l,
            Err(e) => panic!(
                "{xname}: {e:#}\n---- rackboot-tiny log ----\n{}",
                tiny.log_text()
            ),
        };
        assert_eq!(field(&line, "ip"), Some(ip), "{line}");
        assert_eq!(field(&line, "xname"), Some(xname), "{line}");
    }
    stalled.resume(&tiny);
    let stats = tiny.stats_in(&ns).unwrap();
    assert_eq!(stats.own, 0, "the boot path allocated: {stats:?}");
}

/// tftp-hpa and python3 (Debian's, installed by `cargo xtask deps`); missing ones fail in CI.
fn have_tools() -> bool {
    for tool in ["tftp", "python3"] {
        if !qemu_tests::have(tool) {
            let msg = format!("{tool} missing (tftp-hpa, python3: `cargo xtask deps`)");
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
            eprintln!("SKIPPED (not in CI): {msg}");
            return false;
        }
    }
    true
}

/// A running [`STALLED_CLIENT`], stalled after block 1.
struct Stalled {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Stalled {
    /// Starts it and waits until it stalls.
    fn start(ns: &Netns, tiny: &Tiny) -> Stalled {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = ns
            .cmd("python3")
            .args(["-c", STALLED_CLIENT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "STALLED", "log:\n{}", tiny.log_text());
        Stalled { child, out }
    }

    /// Lets it go on: its transfer must still be there.
    fn resume(&mut self, tiny: &Tiny) {
        use std::io::{BufRead, Write};
        let mut stdin = self.child.stdin.take().unwrap();
        writeln!(stdin).unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "RESUMED", "log:\n{}", tiny.log_text());
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
