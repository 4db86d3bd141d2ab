//! Setup: the nodes, their registration through the API and their join tokens (minted through
//! the admin API).

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

/// Mints every node's join token through the admin API (`POST /identity/v1/join-tokens`; the
/// boot path hands a token only to the node itself, after its DHCP ACK, from its own address);
/// writes `ip token xname` lines to `file`; returns (rackboot.url, rackboot.ca).
pub(super) fn mint(
    ns: &Netns,
    token: &str,
    dir: &Path,
    nodes: &[Node],
    file: &Path,
) -> anyhow::Result<(String, String)> {
    let answers = dir.join("tokens");
    std::fs::create_dir_all(&answers)?;
    let cfg: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "url = {}\nheader = {}\nheader = \"Content-Type: application/json\"\ndata-binary = {}\noutput = {}\nwrite-out = \"%{{http_code}} %{{errormsg}}\\n\"\n",
                q(&format!("http://{SERVER}/identity/v1/join-tokens")),
                q(&format!("Authorization: Bearer {token}")),
                q(&serde_json::json!({"node": n.xname}).to_string()),
                q(&answers.join(i.to_string()).display().to_string())
            )
        })
        .collect();
    let issued = curl_many(ns, dir, "tokens.curl", &cfg, 200)?;
    if issued != nodes.len() {
        bail!("{issued} of {} join tokens issued", nodes.len());
    }
    let mut lines = String::new();
    let mut ca = None;
    for (i, n) in nodes.iter().enumerate() {
        let answer = std::fs::read_to_string(answers.join(i.to_string()))?;
        let v: Value = serde_json::from_str(&answer)
            .with_context(|| format!("join token answer for {}: {answer}", n.xname))?;
        let (Some(t), Some(bound), Some(fp)) = (
            v["token"].as_str(),
            v["bound_to"].as_str(),
            v["ca"].as_str(),
        ) else {
            bail!("join token answer for {}: {answer}", n.xname);
        };
        if bound != n.ip.to_string() {
            bail!(
                "the token for {} is bound to {bound}, not {}",
                n.xname,
                n.ip
            );
        }
        let _ = writeln!(lines, "{} {t} {}", n.ip, n.xname);
        ca.get_or_insert_with(|| fp.to_owned());
    }
    std::fs::write(file, lines)?;
    Ok((format!("https://{SERVER}"), ca.context("no nodes")?))
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
