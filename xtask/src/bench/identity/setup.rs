//! Setup: the nodes, their registration through the API and the boot scripts that mint
//! their join tokens.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use qemu_tests::Netns;
use serde_json::Value;

use crate::run::output;

use super::{FIRST_NODE, NODES, SERVER};

pub(super) struct Node {
    pub(super) xname: String,
    pub(super) mac: String,
    pub(super) ip: Ipv4Addr,
}

pub(super) fn nodes() -> Vec<Node> {
    (0..NODES)
        .map(|i| {
            let n = i as u32;
            Node {
                xname: format!("x{}c{}s{}b0n0", 1000 + n / 512, (n / 64) % 8, n % 64),
                mac: format!("52:54:00:e0:{:02x}:{:02x}", (n >> 8) & 0xff, n & 0xff),
                ip: Ipv4Addr::from(u32::from(FIRST_NODE) + n),
            }
        })
        .collect()
}

/// A curl config-file string (`"…"` with `\` and `"` escaped).
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An API request from the server namespace with the body from a file: (status, body).
pub(super) fn api(
    ns: &Netns,
    token: &str,
    dir: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let answer = dir.join("answer");
    let mut cmd = ns.cmd("curl");
    cmd.args(["-s", "-m", "120", "-X", method])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-w", "%{http_code}", "-o"])
        .arg(&answer);
    if let Some(b) = body {
        let f = dir.join("body.json");
        std::fs::write(&f, b)?;
        cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(format!("@{}", f.display()));
    }
    let out = cmd.arg(format!("http://{SERVER}{path}")).output()?;
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    Ok((code, std::fs::read_to_string(&answer).unwrap_or_default()))
}

/// Runs the transfers of curl config blocks `cfg` (`--parallel`), each of which writes
/// `%{http_code} %{errormsg}`; the number that answered `want`, or the first other answer.
fn curl_many(
    ns: &Netns,
    dir: &Path,
    name: &str,
    cfg: &[String],
    want: u16,
) -> anyhow::Result<usize> {
    let f = dir.join(name);
    // `next` only between transfers: a trailing one is a transfer without a URL, and that
    // error aborts the transfers still running.
    std::fs::write(&f, cfg.join("next\n"))?;
    let out = ns
        .cmd("curl")
        .args([
            "-s",
            "--no-progress-meter",
            "--parallel",
            "--parallel-max",
            "32",
            "-K",
        ])
        .arg(&f)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut ok = 0;
    for line in text.lines() {
        let code = line.split_whitespace().next().unwrap_or("");
        if code.parse::<u16>().ok() != Some(want) {
            bail!("{name}: a transfer answered {line:?} ({ok} ok before it)");
        }
        ok += 1;
    }
    Ok(ok)
}

/// Registers every node: Components, EthernetInterfaces, boot parameters.
pub(super) fn register(ns: &Netns, token: &str, dir: &Path, nodes: &[Node]) -> anyhow::Result<()> {
    let comps: Vec<Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            serde_json::json!({"ID": n.xname, "Type": "Node", "State": "Ready", "Enabled": true,
                "NID": i + 1, "Arch": "X86", "Role": "Compute"})
        })
        .collect();
    let body = serde_json::json!({ "Components": comps }).to_string();
    let (code, text) = api(
        ns,
        token,
        dir,
        "POST",
        "/hsm/v2/State/Components",
        Some(&body),
    )?;
    if code != 204 {
        bail!("POST /hsm/v2/State/Components → {code}: {text}");
    }

    let mut cfg = Vec::new();
    for n in nodes {
        let ei = serde_json::json!({"MACAddress": n.mac, "ComponentID": n.xname, "Type": "Node",
            "IPAddresses": [{"IPAddress": n.ip.to_string()}]})
        .to_string();
        cfg.push(format!(
            "url = {}\nrequest = \"POST\"\nheader = {}\nheader = \"Content-Type: application/json\"\n\
             data-binary = {}\noutput = \"/dev/null\"\nwrite-out = \"%{{http_code}} %{{errormsg}}\\n\"\n",
            q(&format!(
                "http://{SERVER}/hsm/v2/Inventory/EthernetInterfaces"
            )),
            q(&format!("Authorization: Bearer {token}")),
            q(&ei)
        ));
    }
    let created = curl_many(ns, dir, "interfaces.curl", &cfg, 201)?;
    if created != nodes.len() {
        bail!("{created} of {} EthernetInterfaces created", nodes.len());
    }

    let macs: Vec<&str> = nodes.iter().map(|n| n.mac.as_str()).collect();
    let bp = serde_json::json!({"macs": macs,
        "kernel": format!("http://{SERVER}/images/vmlinuz"),
        "initrd": format!("http://{SERVER}/images/initrd.img"),
        "params": "console=ttyS0 quiet"})
    .to_string();
    let (code, text) = api(ns, token, dir, "PUT", "/boot/v1/bootparameters", Some(&bp))?;
    if code != 200 {
        bail!("PUT /boot/v1/bootparameters → {code}: {text}");
    }
    Ok(())
}

/// The rackboot.* values of a boot script's kernel line: (xname, token, url, ca).
fn boot_params(script: &str) -> Option<(String, String, String, String)> {
    let line = script.lines().find(|l| l.starts_with("kernel "))?;
    let get = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_owned)
    };
    Some((
        get("xname=")?,
        get("rackboot.join=")?,
        get("rackboot.url=")?,
        get("rackboot.ca=")?,
    ))
}

/// Fetches every node's boot script (minting its token); writes `ip token xname` lines to
/// `file`; returns (rackboot.url, rackboot.ca).
pub(super) fn mint(
    ns: &Netns,
    dir: &Path,
    nodes: &[Node],
    file: &Path,
) -> anyhow::Result<(String, String)> {
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts)?;
    let cfg: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "url = {}\noutput = {}\nwrite-out = \"%{{http_code}} %{{errormsg}}\\n\"\n",
                q(&format!("http://{SERVER}/boot/v1/bootscript?mac={}", n.mac)),
                q(&scripts.join(i.to_string()).display().to_string())
            )
        })
        .collect();
    let served = curl_many(ns, dir, "scripts.curl", &cfg, 200)?;
    if served != nodes.len() {
        bail!("{served} of {} boot scripts served", nodes.len());
    }
    let mut lines = String::new();
    let mut server = None;
    for (i, n) in nodes.iter().enumerate() {
        let script = std::fs::read_to_string(scripts.join(i.to_string()))?;
        let (xname, token, url, ca) = boot_params(&script).with_context(|| {
            format!("no join token in the boot script of {}:\n{script}", n.xname)
        })?;
        if xname != n.xname {
            bail!("the boot script for {} names {xname}", n.mac);
        }
        let _ = writeln!(lines, "{} {token} {xname}", n.ip);
        server.get_or_insert((url, ca));
    }
    std::fs::write(file, lines)?;
    server.context("no nodes")
}

/// The pid of the rackboot process in `ns`.
pub(super) fn server_pid(ns: &Netns) -> anyhow::Result<u32> {
    let pids = output(Command::new("ip").args(["netns", "pids", &ns.name]))?;
    pids.split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "rackboot")
        })
        .context("no rackboot process in the namespace")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_script_parameters() {
        let script = "#!ipxe\nkernel --name kernel http://x/vmlinuz initrd=initrd console=ttyS0 \
                      xname=x1000c0s0b0n0 nid=1 rackboot.join=tok-_1 rackboot.ca=sha256:00 \
                      rackboot.url=https://198.18.0.1\ninitrd --name initrd http://x/i\nboot\n";
        let (x, t, u, c) = boot_params(script).unwrap();
        assert_eq!(
            (x.as_str(), t.as_str(), u.as_str(), c.as_str()),
            ("x1000c0s0b0n0", "tok-_1", "https://198.18.0.1", "sha256:00")
        );
    }

    #[test]
    fn node_names_addresses_and_macs_are_distinct() {
        let n = nodes();
        let xs: std::collections::BTreeSet<&str> = n.iter().map(|n| n.xname.as_str()).collect();
        let macs: std::collections::BTreeSet<&str> = n.iter().map(|n| n.mac.as_str()).collect();
        assert_eq!((xs.len(), macs.len()), (NODES, NODES));
        let last = n.last().unwrap().ip;
        assert!(
            last < Ipv4Addr::new(198, 18, 128, 0),
            "{last} is in the DHCP pool"
        );
    }
}
