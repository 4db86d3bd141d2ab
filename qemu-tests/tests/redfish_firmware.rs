//! Firmware update against a real emulator: sushy-tools' `sushy-emulator` with its libvirt
//! driver (a private libvirtd holding a defined, never started domain), over TLS with basic auth.
//! The fake driver keeps no firmware versions; the libvirt driver keeps them in the domain's
//! metadata and bumps `BiosVersion` on `UpdateService.SimpleUpdate`. rackboot's `firmware
//! update` must complete the BMC's task and record the version the BMC then reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use qemu_tests::{
    LibvirtBmc, Netns, Rackboot, SERVER, preflight, preflight_libvirt, preflight_sushy,
};
use serde_json::Value;

const UUID: &str = "3b7e1f0a-5c2d-4e8f-9a61-7d0c2b4e6f81";
const MAC: &str = "52:54:00:aa:07:01";
const BMC_IP: &str = "192.0.2.202";
const NODE: &str = "x1000c0s0b0n0";

fn cli(ns: &Netns, rb: &Rackboot, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    rb.cli(ns, args, stdin)
}

/// The first JSON document in a CLI's output (stdout comes first; stderr's notes follow it).
fn first_json(out: &str) -> Value {
    let start = out
        .find(['{', '['])
        .unwrap_or_else(|| panic!("no JSON: {out}"));
    serde_json::Deserializer::from_str(&out[start..])
        .into_iter::<Value>()
        .next()
        .unwrap_or_else(|| panic!("no JSON: {out}"))
        .unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The BIOS version the emulator itself reports for the system.
fn emulator_bios(bmc: &LibvirtBmc) -> String {
    let sys = bmc.get(&format!("/redfish/v1/Systems/{UUID}")).unwrap();
    sys["BiosVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("no BiosVersion from the emulator: {sys}"))
        .to_owned()
}

/// `rackboot firmware list -o json`: the node's recorded BIOS version.
fn listed_bios(ns: &Netns, rb: &Rackboot) -> String {
    let (ok, out) = cli(ns, rb, &["firmware", "list", "-o", "json"], None);
    assert!(ok, "{out}");
    let rows = first_json(&out);
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["xname"] == NODE)
        .unwrap_or_else(|| panic!("{NODE} not listed: {rows}"));
    assert_eq!(row["bmc"], "x1000c0s0b0", "{rows}");
    row["bios_version"].as_str().unwrap_or("").to_owned()
}

/// The BIOS version in the node's RedfishEndpoint.
fn endpoint_bios(rb: &Rackboot) -> String {
    let (code, ep) = rb
        .http(
            "GET",
            "/hsm/v2/Inventory/RedfishEndpoints/x1000c0s0b0",
            None,
        )
        .unwrap();
    assert_eq!(code, 200, "{ep}");
    let ep: Value = serde_json::from_str(&ep).unwrap();
    let sys = ep["Systems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Node"] == NODE)
        .unwrap_or_else(|| panic!("{NODE} not in the endpoint: {ep}"));
    assert_eq!(sys["UUID"], UUID, "{ep}");
    sys["BiosVersion"].as_str().unwrap_or("").to_owned()
}

#[test]
fn firmware_update_completes_and_records_the_new_version() {
    if !preflight(false) || !preflight_libvirt() {
        return;
    }
    let Some(sushy) = preflight_sushy() else {
        return;
    };
    let ns = Netns::new("rfw").unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    // The BMC is another host on the rack segment.
    let bmc_ns = ns.add_client_ns().unwrap();
    bmc_ns
        .ip(&["addr", "add", &format!("{BMC_IP}/24"), "dev", "vc"])
        .unwrap();
    let bmc = LibvirtBmc::start(
        &bmc_ns,
        &sushy,
        BMC_IP,
        &[(UUID, "fwnode1", MAC)],
        "admin",
        "fw-s3cret",
        true,
    )
    .unwrap();

    let (ok, out) = cli(
        &ns,
        &rb,
        &["bmc", "creds-set", "--username", "admin"],
        Some("fw-s3cret\n"),
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(&ns, &rb, &["discover", &bmc.base()], None);
    assert!(ok, "{out}\n{}", rb.log_text());
    assert!(out.contains(MAC) && out.contains(NODE), "{out}");

    // The version discovery recorded is the one the emulator reports.
    let before = emulator_bios(&bmc);
    assert!(!before.is_empty());
    assert_eq!(
        listed_bios(&ns, &rb),
        before,
        "firmware list before the update"
    );
    assert_eq!(
        endpoint_bios(&rb),
        before,
        "RedfishEndpoint before the update"
    );

    // The image the BMC is told to fetch; the BMC's network reaches it.
    let image = rb.data_dir.path().join("bios-2.1.bin");
    let bytes: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(31) >> 3) as u8)
        .collect();
    std::fs::write(&image, &bytes).unwrap();
    let (ok, out) = cli(
        &ns,
        &rb,
        &["image", "import", "bios-2.1", image.to_str().unwrap()],
        None,
    );
    assert!(ok, "{out}");
    let fetched = bmc_ns
        .cmd("curl")
        .args(["-sf", &format!("http://{SERVER}/images/bios-2.1")])
        .output()
        .unwrap();
    assert!(
        fetched.status.success() && fetched.stdout == bytes,
        "the BMC's namespace cannot fetch the image from rackboot"
    );

    let (ok, out) = cli(
        &ns,
        &rb,
        &[
            "firmware", "update", NODE, "--image", "bios-2.1", "-o", "json",
        ],
        None,
    );
    assert!(ok, "{out}\n{}\n{}", rb.log_text(), bmc.logs());

    // The emulator's own view: a new version, also in libvirt's domain metadata.
    let after = emulator_bios(&bmc);
    assert_ne!(after, before, "the emulator's BIOS version did not change");
    let xml = bmc.domain_xml(UUID).unwrap();
    assert!(
        xml.contains(&format!(r#"name="BiosVersion" value="{after}""#)),
        "libvirt's domain metadata holds the new version: {xml}"
    );

    // rackboot followed the BMC's task to its end and recorded what the BMC now reports.
    let res = first_json(&out);
    let r = &res["results"][0];
    assert_eq!(r["xname"], NODE, "{res}");
    assert_eq!(r["ok"], true, "{res}");
    let detail = r["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("completed") && detail.contains(&format!("BIOS {before} -> {after}")),
        "{res}"
    );
    assert!(
        rb.log_text().contains("firmware update task"),
        "the task was polled: {}",
        rb.log_text()
    );
    assert_eq!(
        listed_bios(&ns, &rb),
        after,
        "firmware list after the update"
    );
    assert_eq!(
        endpoint_bios(&rb),
        after,
        "RedfishEndpoint after the update"
    );

    // A second update moves it on again: the recorded version follows the BMC each time.
    let (ok, out) = cli(
        &ns,
        &rb,
        &["firmware", "update", NODE, "--image", "bios-2.1"],
        None,
    );
    assert!(ok, "{out}");
    let again = emulator_bios(&bmc);
    assert_ne!(
        again, after,
        "the second update changed nothing on the emulator"
    );
    assert_eq!(listed_bios(&ns, &rb), again);
    assert_eq!(endpoint_bios(&rb), again);
}
