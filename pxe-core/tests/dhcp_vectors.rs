#![allow(clippy::unwrap_used, clippy::indexing_slicing)]
//! Real firmware DHCP messages, captured from QEMU by `cargo xtask capture-vectors`
//! (see tests/vectors/README.md): each decodes, carries what that firmware is known to send, and
//! gets the right boot answer from the engine.

#[path = "../benches/common.rs"]
mod common;

use std::path::PathBuf;

use pxe_core::dhcp::wire::{MessageType, Packet, Request};

fn vectors() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "bin"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_firmware_vector_decodes_with_its_known_options() {
    let all = vectors();
    for fw in ["seabios-ipxe", "ovmf-pxe", "ovmf-http"] {
        assert!(
            all.iter().any(|(n, _)| n.starts_with(fw)),
            "no vectors for {fw}"
        );
    }
    for (name, bytes) in &all {
        let r = Request::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let vendor = String::from_utf8_lossy(&r.vendor_class).into_owned();
        if name.contains("discover") {
            assert_eq!(r.message_type, MessageType::Discover, "{name}");
        }
        // The final OS DHCP (udhcpc) carries no PXE options; firmware stages do.
        if vendor.starts_with("udhcp") {
            assert!(r.client_arch.is_empty(), "{name}");
            continue;
        }
        if name.starts_with("seabios-ipxe") {
            assert!(r.is_ipxe(), "{name}: QEMU's iPXE ROM sends user class iPXE");
            assert_eq!(r.client_arch.as_slice(), &[0], "{name}: BIOS");
            assert!(vendor.starts_with("PXEClient"), "{name}: {vendor}");
        }
        if name.starts_with("ovmf-pxe") && !r.is_ipxe() {
            assert_eq!(r.client_arch.as_slice(), &[7], "{name}: EDK2 x64 PXE");
            assert!(
                vendor.starts_with("PXEClient:Arch:00007"),
                "{name}: {vendor}"
            );
            assert!(
                r.client_ndi.is_some() && r.client_uuid.len() == 17,
                "{name}: options 94 and 97"
            );
        }
        if name.starts_with("ovmf-http") && !r.is_ipxe() {
            assert_eq!(
                r.client_arch.as_slice(),
                &[16],
                "{name}: EDK2 x64 HTTP Boot"
            );
            assert!(vendor.starts_with("HTTPClient"), "{name}: {vendor}");
        }
        if r.is_ipxe() && name.starts_with("ovmf") {
            // snponly.efi after the firmware stage.
            assert!(
                r.client_arch.first().is_some_and(|a| *a == 7 || *a == 9),
                "{name}"
            );
        }
    }
}

#[test]
fn the_engine_answers_each_firmware_discover_correctly() {
    let mut s = common::server();
    let mut out = [0u8; 1500];
    for (name, bytes) in vectors().iter().filter(|(n, _)| n.contains("discover")) {
        let r = Request::parse(bytes).unwrap();
        if r.vendor_class.starts_with(b"udhcp") {
            continue;
        }
        let h = s
            .handle(
                pxe_core::Instant::from_secs(1),
                &common::RX,
                bytes,
                &common::OneNode,
                &mut out,
            )
            .unwrap();
        let t = h.reply.unwrap_or_else(|| panic!("{name}: no reply"));
        let p = Packet::new_checked(&out[..t.len]).unwrap();
        let file: String = pxe_core::dhcp::wire::OptionIter::new(p.options())
            .filter_map(Result::ok)
            .find(|(c, _)| *c == 67)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let want = if r.is_ipxe() {
            "http://192.0.2.1/boot/v1/bootscript?mac="
        } else if r.vendor_class.starts_with(b"HTTPClient") {
            "http://192.0.2.1/ipxe/snponly.efi"
        } else {
            "snponly.efi"
        };
        assert!(
            file.starts_with(want),
            "{name}: boot file {file:?}, wanted {want}"
        );
    }
}
