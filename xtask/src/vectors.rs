//! `cargo xtask capture-vectors`: records the DHCP messages real firmware sends while it boots
//! from rackboot, as test vectors for pxe-core (pxe-core/tests/vectors/).
//!
//! Each firmware path boots once in its own namespace with tcpdump on the bridge; the client's
//! UDP payloads (source port 68) are cut out of the pcap and written in order.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use qemu_tests::{Firmware, Netns, Qemu, Rackboot};

pub fn capture() -> anyhow::Result<()> {
    crate::deps::install()?;
    crate::image::node()?;
    let out_dir = crate::root().join("pxe-core/tests/vectors");
    std::fs::create_dir_all(&out_dir)?;
    for (fw, name, mac) in [
        (Firmware::SeaBiosIpxe, "seabios-ipxe", "52:54:00:ee:00:01"),
        (Firmware::OvmfPxe, "ovmf-pxe", "52:54:00:ee:00:02"),
        (Firmware::OvmfHttp, "ovmf-http", "52:54:00:ee:00:03"),
    ] {
        crate::stage(&format!("capture {name}"));
        let mut ns = Netns::new("vec")?;
        let rb = Rackboot::start(&ns)?;
        rb.import_node_images()?;
        rb.register_node("x1000c0s0b0n0", 1, mac, "192.0.2.50")?;
        let pcap = tempfile::NamedTempFile::new()?;
        let mut dump = ns
            .cmd("tcpdump")
            .args(["-i", "br0", "-U", "-s", "0", "-w"])
            .arg(pcap.path())
            .args(["udp", "port", "67", "or", "udp", "port", "68"])
            .stderr(Stdio::null())
            .spawn()
            .context("tcpdump")?;
        std::thread::sleep(Duration::from_secs(1));
        let mut vm = Qemu::start(&mut ns, fw, mac)?;
        vm.wait_for("RACKBOOT-NODE-UP", Duration::from_secs(400))?;
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(dump.id().to_string())
            .status();
        let _ = dump.wait();
        let payloads = client_payloads(pcap.path())?;
        if payloads.is_empty() {
            bail!("no DHCP client packets captured for {name}");
        }
        for (i, p) in payloads.iter().enumerate() {
            let kind = p.message_type.as_deref().unwrap_or("unknown");
            let file = out_dir.join(format!("{name}-{:02}-{kind}.bin", i + 1));
            std::fs::write(&file, &p.bytes)?;
            eprintln!("wrote {} ({} bytes)", file.display(), p.bytes.len());
        }
    }
    Ok(())
}

struct Payload {
    bytes: Vec<u8>,
    message_type: Option<String>,
}

/// UDP payloads sent from port 68 to port 67 (Ethernet/IPv4 pcap, microsecond format).
fn client_payloads(pcap: &Path) -> anyhow::Result<Vec<Payload>> {
    let data = std::fs::read(pcap)?;
    let mut out = Vec::new();
    let mut at = 24; // global header
    while at + 16 <= data.len() {
        let incl = u32::from_le_bytes(data[at + 8..at + 12].try_into()?) as usize;
        let frame = data
            .get(at + 16..at + 16 + incl)
            .context("truncated pcap")?;
        at += 16 + incl;
        // Ethernet II, IPv4, UDP.
        if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        if frame[14 + 9] != 17 {
            continue;
        }
        let udp = &frame[14 + ihl..];
        if udp.len() < 8 {
            continue;
        }
        let (sport, dport) = (
            u16::from_be_bytes([udp[0], udp[1]]),
            u16::from_be_bytes([udp[2], udp[3]]),
        );
        if sport != 68 || dport != 67 {
            continue;
        }
        let bytes = udp[8..].to_vec();
        let message_type = pxe_message_type(&bytes);
        out.push(Payload {
            bytes,
            message_type,
        });
    }
    Ok(out)
}

fn pxe_message_type(b: &[u8]) -> Option<String> {
    let mut rest = b.get(240..)?;
    while let [code, tail @ ..] = rest {
        match code {
            0 => rest = tail,
            255 => return None,
            _ => {
                let (&len, tail) = tail.split_first()?;
                let value = tail.get(..usize::from(len))?;
                if *code == 53 {
                    return Some(
                        match value.first()? {
                            1 => "discover",
                            3 => "request",
                            8 => "inform",
                            _ => "other",
                        }
                        .to_owned(),
                    );
                }
                rest = tail.get(usize::from(len)..)?;
            }
        }
    }
    None
}
