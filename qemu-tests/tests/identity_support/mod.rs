//! Helpers shared by the machine-identity end-to-end tests (identity*.rs).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::Command;

use qemu_tests::{Netns, Rackboot};
use serde_json::Value;
pub const A: (&str, &str, &str) = ("x1000c0s0b0n0", "52:54:00:cc:00:01", "192.0.2.50");
pub const B: (&str, &str, &str) = ("x1000c0s0b0n1", "52:54:00:cc:00:02", "192.0.2.51");

/// Runs `prog args` in `ns` (stdin from `input`): (success, stdout + stderr).
pub fn run(ns: &Netns, prog: &str, args: &[&str], input: Option<&str>) -> (bool, String) {
    qemu_tests::run_in(ns, prog, args, &[], input).unwrap()
}

pub fn rb_cli(ns: &Netns, rb: &Rackboot, args: &[&str], input: Option<&str>) -> (bool, String) {
    rb.cli(ns, args, input)
}

/// The kernel line of the boot script `GET /boot/v1/bootscript?<query>` answers a request
/// from `src` in `node`.
pub fn script_from(node: &Netns, src: &str, query: &str) -> String {
    let out = node
        .cmd("curl")
        .args(["-s", "-m", "10", "--interface", src, "-w", "\n%{http_code}"])
        .arg(format!("http://192.0.2.1/boot/v1/bootscript?{query}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (script, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    assert_eq!(code.trim(), "200", "{text}");
    script
        .lines()
        .find(|l| l.starts_with("kernel "))
        .unwrap_or_else(|| panic!("no kernel line: {script}"))
        .to_owned()
}

/// Boots as firmware would from `node` as (`mac`, `ip`): a DHCP exchange from that MAC with
/// vendor class PXEClient (udhcpc), then the boot script from that address by MAC. The kernel
/// line, which carries the join token (the first fetch after a boot's ACK).
pub fn boot_as(node: &Netns, mac: &str, ip: &str) -> String {
    node.ip(&["link", "set", "vc", "address", mac]).unwrap();
    let out = node
        .cmd("udhcpc")
        .args(["-i", "vc", "-n", "-q", "-t", "5", "-V", "PXEClient"])
        .args(["-s", "/bin/true"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "udhcpc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = script_from(node, ip, &format!("mac={mac}"));
    assert!(line.contains("rackboot.join="), "no join token: {line}");
    line
}

/// A join token for `xname` from the admin API (`POST /identity/v1/join-tokens`).
pub fn admin_token(rb: &Rackboot, xname: &str) -> String {
    let (code, body) = rb
        .http(
            "POST",
            "/identity/v1/join-tokens",
            Some(&format!(r#"{{"node":"{xname}"}}"#)),
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

pub fn param<'a>(cmdline: &'a str, key: &str) -> &'a str {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {cmdline}"))
}

/// An enrollment POST with curl from `src`: (HTTP status, body).
pub fn curl_enroll(node: &Netns, dir: &Path, src: &str, token: &str, csr: &str) -> (u16, String) {
    let body = serde_json::json!({"token": token, "csr": csr}).to_string();
    let out = node
        .cmd("curl")
        .args(["-s", "-m", "10", "--interface", src, "--cacert"])
        .arg(dir.join("ca.pem"))
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ])
        .args([
            "-w",
            "\n%{http_code}",
            "https://192.0.2.1/identity/v1/enroll",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Writes the first certificate of `chain` (PEM) to `dir/leaf.pem` and checks with openssl that
/// it verifies as a TLS client certificate against `dir/ca.pem`.
pub fn verify_client_leaf(dir: &Path, chain: &str) {
    let leaf = chain
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap();
    std::fs::write(dir.join("leaf.pem"), leaf).unwrap();
    let v = openssl(
        dir,
        &[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            "ca.pem",
            "leaf.pem",
        ],
    );
    assert!(v.contains("leaf.pem: OK"), "{v}");
}

pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn audit(rb: &Rackboot, node: &str) -> Vec<Value> {
    rb.identity_audit(node).unwrap()
}

/// The MAC of `ns`'s `vc`.
pub fn mac_of(ns: &Netns) -> String {
    let out = ns
        .cmd("cat")
        .arg("/sys/class/net/vc/address")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Puts `mac` on `ns`'s `vc` and adds (`on`) or removes the address `ip`.
pub fn spoof(ns: &Netns, mac: &str, ip: &str, on: bool) {
    ns.ip(&["link", "set", "vc", "address", mac]).unwrap();
    let verb = if on { "add" } else { "del" };
    ns.ip(&["addr", verb, &format!("{ip}/24"), "dev", "vc"])
        .unwrap();
}

pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
