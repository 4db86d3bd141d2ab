//! `cargo xtask bench redfish`: Redfish discovery, timed end to end.
//!
//! - A silent /20: 4,094 addresses routed into a dummy interface (or, without the dummy driver,
//!   to a namespace that does not forward), so every SYN vanishes and each probe costs its full
//!   timeout.
//! - A crawl curve: 64, 128 and 256 BMCs served by `appliance/examples/bmc_fixture.rs` on
//!   loopback addresses, every BMC answering with sushy-emulator responses recorded at the start
//!   of the run (the recording lives in a temporary directory and is never committed).
//!
//! Every run gets a fresh rackboot (release build, empty data dir, default discovery settings)
//! and is checked: a crawl only gets a time if every BMC was discovered and the inventory holds
//! what it should.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use qemu_tests::{FakeBmc, Netns, Rackboot};
use serde_json::Value;

use crate::run::run;

/// The section's heading in docs/benchmarks.md.
pub const HEADING: &str = "## Redfish discovery";

/// BMC counts of the scaling curve.
const CURVE: [usize; 3] = [64, 128, 256];
/// Crawls per point (the median is reported).
const RUNS: usize = 3;
/// The fixture BMCs: `FIRST`, `FIRST + 1`, … on `PORT`.
const FIRST: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 1);
const PORT: u16 = 8000;
/// The silent range and the discovery defaults it is measured with.
const SILENT: &str = "10.64.0.0/20";
const SILENT_HOSTS: usize = 4094;
const PROBE_TIMEOUT_S: f64 = 1.0;
const PROBE_PARALLEL: usize = 1024;
/// Credentials for the recording (the fixture accepts any).
const USER: &str = "admin";
const PASSWORD: &str = "bench-pw";
/// The two systems recorded: UUIDs differ in their first group and MACs in their last octet,
/// which the fixture keeps while it makes the rest specific to each BMC.
const SYSTEMS: [(&str, &str, &str); 2] = [
    (
        "a1c0ffee-0000-4000-8000-00000000b001",
        "bench-node-0",
        "52:54:00:00:00:01",
    ),
    (
        "b2c0ffee-0000-4000-8000-00000000b002",
        "bench-node-1",
        "52:54:00:00:00:02",
    ),
];

/// Builds the fixture, records the tree, runs every measurement; the markdown section.
pub fn section(root: &Path, rackboot: &Path) -> anyhow::Result<String> {
    let sushy = root.join("build/venv/bin/sushy-emulator");
    if !sushy.exists() {
        bail!(
            "{} is missing: `cargo xtask deps` installs it",
            sushy.display()
        );
    }
    run(Command::new(env!("CARGO")).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "appliance",
        "--example",
        "bmc_fixture",
    ]))?;
    let fixture = root.join("target/release/examples/bmc_fixture");

    crate::stage("redfish: recording sushy-emulator (fake driver, 2 systems)");
    let tree = tempfile::tempdir()?;
    let docs = record(&sushy, tree.path())?;
    eprintln!("recorded {docs} documents into {}", tree.path().display());

    crate::stage(&format!(
        "redfish: discovery of a silent {SILENT} (every SYN dropped on its way)"
    ));
    let silent = silent_scan(rackboot);
    match &silent {
        Ok((s, _)) => eprintln!("{SILENT}: {s:.2} s"),
        Err(e) => eprintln!("{SILENT}: failed: {e:#}"),
    }

    let mut curve = Vec::new();
    {
        let ns = Netns::new("brf")?;
        let max = CURVE.iter().copied().max().unwrap_or(0);
        let _farm = Fixture::start(&ns, &fixture, tree.path(), max)?;
        for n in CURVE {
            crate::stage(&format!("redfish: crawl {n} fixture BMCs ({RUNS} runs)"));
            let mut secs = Vec::new();
            let mut failure = None;
            for r in 1..=RUNS {
                match crawl(&ns, rackboot, n) {
                    Ok(s) => {
                        eprintln!("{n} BMCs, run {r}: {s:.2} s");
                        secs.push(s);
                    }
                    Err(e) => {
                        eprintln!("{n} BMCs, run {r}: failed: {e:#}");
                        failure = Some(format!("{e:#}"));
                        break;
                    }
                }
            }
            curve.push((n, failure.map_or(Ok(secs), Err)));
        }
    }
    Ok(markdown(docs, &silent, &curve))
}

fn markdown(
    docs: usize,
    silent: &anyhow::Result<(f64, &'static str)>,
    curve: &[(usize, Result<Vec<f64>, String>)],
) -> String {
    let waves = SILENT_HOSTS.div_ceil(PROBE_PARALLEL);
    let mut s = format!(
        "{HEADING}\n\n\
         `cargo xtask bench redfish`: `POST /rackboot/v1/discovery` timed end to end (curl's \
         `time_total`, in the namespace) against a fresh release rackboot with an empty \
         inventory and the default discovery settings (probe_timeout {PROBE_TIMEOUT_S} s, \
         probe_parallel {PROBE_PARALLEL}, max_parallel 64). Each BMC is \
         `appliance/examples/bmc_fixture.rs` serving sushy-emulator responses recorded in the \
         same run ({docs} documents: fake driver, **2 systems per BMC**, ServiceRoot, Systems and \
         their EthernetInterfaces, Managers, Chassis) over **plain HTTP on its own loopback \
         address**, MACs and UUIDs made distinct per BMC. A crawl counts only if every BMC \
         answered ok and the inventory then holds one RedfishEndpoint per BMC and 2 distinct \
         node MACs per BMC. Crawls: median of {RUNS} runs, each from an empty data dir.\n\n\
         | run | BMCs | seconds | BMCs/s | ms per BMC | target |\n|---|---|---|---|---|---|\n"
    );
    let silent_cell = match silent {
        Ok((t, _)) => format!("{t:.2}"),
        Err(e) => format!("**failed**: {}", one_line(&format!("{e:#}"))),
    };
    s.push_str(&format!(
        "| silent {SILENT}: {SILENT_HOSTS} addresses, nothing answers | 0 | {silent_cell} | — | — | ≤ 10 s |\n"
    ));
    let mut runs = Vec::new();
    for (n, r) in curve {
        let target = if *n == 256 { "≤ 5 s" } else { "" };
        match r {
            Ok(secs) => {
                let m = median(secs);
                s.push_str(&format!(
                    "| crawl | {n} | {m:.2} | {:.0} | {:.1} | {target} |\n",
                    *n as f64 / m.max(0.001),
                    1000.0 * m / *n as f64
                ));
                let all: Vec<String> = secs.iter().map(|t| format!("{t:.2}")).collect();
                runs.push(format!("{n} BMCs: {}", all.join(", ")));
            }
            Err(e) => s.push_str(&format!(
                "| crawl | {n} | **failed**: {} | — | — | {target} |\n",
                one_line(e)
            )),
        }
    }
    if let Ok((_, how)) = silent {
        s.push_str(&format!(
            "\nThe silent range is {how}, so every SYN vanishes: each wave of \
             {PROBE_PARALLEL} probes (443 and 80 at once) costs the full probe timeout, and \
             {waves} waves make about {:.0} s the floor at these settings.\n",
            waves as f64 * PROBE_TIMEOUT_S
        ));
    }
    if !runs.is_empty() {
        s.push_str(&format!(
            "\nAll crawl runs (seconds): {}.\n",
            runs.join("; ")
        ));
    }
    s
}

fn one_line(s: &str) -> String {
    let flat = s.replace(['\n', '|'], " ");
    flat.chars().take(300).collect()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Replaces the `heading` section of `doc` (up to the next `## ` heading) with `section`,
/// or appends it.
pub fn replace_section(doc: &str, heading: &str, section: &str) -> String {
    let section = section.trim_end();
    let lines: Vec<&str> = doc.lines().collect();
    let Some(start) = lines.iter().position(|l| l.trim_end() == heading) else {
        let doc = doc.trim_end();
        return if doc.is_empty() {
            format!("{section}\n")
        } else {
            format!("{doc}\n\n{section}\n")
        };
    };
    let end = lines
        .iter()
        .enumerate()
        .skip(start + 1)
        .find(|(_, l)| l.starts_with("## "))
        .map_or(lines.len(), |(i, _)| i);
    let before = lines.get(..start).unwrap_or_default().join("\n");
    let after = lines.get(end..).unwrap_or_default().join("\n");
    let mut out = String::new();
    if !before.trim().is_empty() {
        out.push_str(before.trim_end());
        out.push_str("\n\n");
    }
    out.push_str(section);
    out.push('\n');
    if !after.trim().is_empty() {
        out.push('\n');
        out.push_str(after.trim_end());
        out.push('\n');
    }
    out
}

/// Records sushy-emulator's answers (ServiceRoot; Systems, Managers and Chassis with their
/// members and the members' EthernetInterfaces) into `dir/<path>/index.json`; how many.
fn record(sushy: &Path, dir: &Path) -> anyhow::Result<usize> {
    let ns = Netns::new("brec")?;
    let bmc = FakeBmc::start(&ns, sushy, "192.0.2.200", &SYSTEMS, USER, PASSWORD)?;
    let mut saved = BTreeSet::new();
    let mut fetch = |path: &str| -> anyhow::Result<Value> {
        let v = bmc.get(path).with_context(|| format!("recording {path}"))?;
        if v.get("error").is_some() || !v.is_object() {
            bail!("sushy-emulator answered {path} with {v}");
        }
        save(dir, path, &v)?;
        saved.insert(path.trim_end_matches('/').to_owned());
        Ok(v)
    };
    let root = fetch("/redfish/v1/")?;
    for coll in ["Systems", "Managers", "Chassis"] {
        let Some(coll) = link(&root, coll) else {
            continue;
        };
        for member in members(&fetch(&coll)?) {
            let res = fetch(&member)?;
            if let Some(nics) = link(&res, "EthernetInterfaces") {
                for nic in members(&fetch(&nics)?) {
                    fetch(&nic)?;
                }
            }
        }
    }
    Ok(saved.len())
}

fn link(v: &Value, key: &str) -> Option<String> {
    v.get(key)?.get("@odata.id")?.as_str().map(str::to_owned)
}

fn members(v: &Value) -> Vec<String> {
    v.get("Members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("@odata.id").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

fn save(dir: &Path, path: &str, v: &Value) -> anyhow::Result<()> {
    let rel = path.trim_matches('/');
    if !rel.starts_with("redfish/v1")
        || rel
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        bail!("refusing to record the odd path {path:?}");
    }
    let d = dir.join(rel);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join("index.json"), serde_json::to_vec_pretty(v)?)?;
    Ok(())
}

/// The fixture BMC farm in a namespace; SIGINT on drop (it prints what it served).
struct Fixture {
    child: Child,
}

impl Fixture {
    fn start(ns: &Netns, bin: &Path, tree: &Path, count: usize) -> anyhow::Result<Fixture> {
        let mut child = ns
            .cmd(bin.to_str().context("fixture path")?)
            .arg("--tree")
            .arg(tree)
            .args(["--first", &FIRST.to_string()])
            .args(["--count", &count.to_string()])
            .args(["--port", &PORT.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .context("bmc_fixture")?;
        let stdout = child.stdout.take().context("bmc_fixture stdout")?;
        let fixture = Fixture { child };
        for line in BufReader::new(stdout).lines() {
            if line?.trim() == "ready" {
                return Ok(fixture);
            }
        }
        bail!("bmc_fixture exited before it was ready")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // `ip netns exec` execs the fixture, so this is the fixture's own pid.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh rackboot in `ns` with default BMC credentials and a token for long requests.
fn rackboot(ns: &Netns, bin: &Path) -> anyhow::Result<(Rackboot, String)> {
    let rb = Rackboot::start_with(ns, bin)?;
    let (code, body) = rb.http(
        "PUT",
        "/rackboot/v1/bmc/credentials/default",
        Some(&serde_json::json!({"username": USER, "password": PASSWORD}).to_string()),
    )?;
    if code != 204 {
        bail!("setting the default BMC credentials → {code}: {body}");
    }
    let token = rb.mint_token(bin, "30m")?;
    Ok((rb, token))
}

/// `POST /rackboot/v1/discovery` from inside the namespace: (seconds, results).
fn discover(
    ns: &Netns,
    rb: &Rackboot,
    token: &str,
    targets: &[String],
) -> anyhow::Result<(f64, Vec<Value>)> {
    let body = serde_json::json!({ "targets": targets }).to_string();
    let answer = rb.data_dir.path().join("discovery-answer.json");
    let out = ns
        .cmd("curl")
        .args(["-s", "-m", "600", "-X", "POST"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", "Content-Type: application/json"])
        .args(["--data-binary", &body, "-o"])
        .arg(&answer)
        .args(["-w", "%{http_code} %{time_total}"])
        .arg(format!("http://{}/rackboot/v1/discovery", ns.addr))
        .output()?;
    let w = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts = w.split_whitespace();
    let code: u16 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let secs: f64 = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0.0);
    let text = std::fs::read_to_string(&answer).unwrap_or_default();
    if code != 200 {
        bail!(
            "POST /rackboot/v1/discovery → {code} after {secs:.2} s (curl exit {}): {}",
            out.status,
            text.chars().take(500).collect::<String>()
        );
    }
    let v: Value = serde_json::from_str(&text).context("discovery answer is not JSON")?;
    let results = v
        .get("results")
        .and_then(Value::as_array)
        .cloned()
        .context("discovery answer has no results")?;
    Ok((secs, results))
}

/// Seconds to discover a silent /20, and how its SYNs were made to vanish.
fn silent_scan(bin: &Path) -> anyhow::Result<(f64, &'static str)> {
    let ns = Netns::new("bscan")?;
    // The sink's own address stays outside the range: rackboot listens on 0.0.0.0:80 and
    // would otherwise find itself there.
    let (_sink, how) = match ns.ip(&["link", "add", "dummy0", "type", "dummy"]) {
        Ok(()) => {
            ns.ip(&["link", "set", "dummy0", "up"])?;
            ns.ip(&["addr", "add", "10.65.0.1/32", "dev", "dummy0"])?;
            ns.ip(&["route", "add", SILENT, "dev", "dummy0"])?;
            (None, "routed into a dummy interface")
        }
        Err(e) => {
            // No dummy driver (a container without the module): route the range to a
            // second namespace that does not forward, so it drops every SYN without a word.
            let e = format!("{e:#}");
            eprintln!(
                "no dummy interface ({}); routing {SILENT} to a non-forwarding namespace",
                e.trim()
            );
            let sink = ns.add_client_ns()?;
            sink.ip(&["addr", "add", "192.0.2.254/24", "dev", "vc"])?;
            ns.ip(&["route", "add", SILENT, "via", "192.0.2.254"])?;
            (
                Some(sink),
                "routed to a second namespace that does not forward (no dummy driver here)",
            )
        }
    };
    let (rb, token) = rackboot(&ns, bin)?;
    let (secs, results) = discover(&ns, &rb, &token, &[SILENT.to_owned()])?;
    if let Some(r) = results.first() {
        bail!(
            "nothing answers in {SILENT}, yet discovery reported {} results, the first: {r}",
            results.len()
        );
    }
    // With every SYN lost each wave of probes costs the full timeout; much less means the
    // probes failed fast (EMFILE, unreachable) and nothing was measured.
    let waves = SILENT_HOSTS.div_ceil(PROBE_PARALLEL) as f64;
    if secs < waves * PROBE_TIMEOUT_S * 0.9 {
        bail!(
            "{SILENT} answered in {secs:.2} s, less than {waves} probe waves of \
             {PROBE_TIMEOUT_S} s: the probes did not wait for their timeout; see {}",
            rb.log.display()
        );
    }
    Ok((secs, how))
}

/// Seconds to crawl `n` fixture BMCs from an empty inventory, after checking the result.
fn crawl(ns: &Netns, bin: &Path, n: usize) -> anyhow::Result<f64> {
    let (rb, token) = rackboot(ns, bin)?;
    let targets: Vec<String> = (0..n)
        .map(|i| {
            let ip = Ipv4Addr::from(u32::from(FIRST).saturating_add(i as u32));
            format!("http://{ip}:{PORT}")
        })
        .collect();
    let (secs, results) = discover(ns, &rb, &token, &targets)?;
    let failed: Vec<&Value> = results
        .iter()
        .filter(|r| r.get("ok") != Some(&Value::Bool(true)))
        .collect();
    if results.len() != n || !failed.is_empty() {
        bail!(
            "{} of {n} BMCs discovered in {secs:.2} s; {} failed, e.g. {}",
            results.len() - failed.len(),
            failed.len(),
            failed.first().map(|v| v.to_string()).unwrap_or_default()
        );
    }
    let nodes: usize = results
        .iter()
        .map(|r| r.get("nodes").and_then(Value::as_array).map_or(0, Vec::len))
        .sum();
    let endpoints = list(
        &rb,
        "/hsm/v2/Inventory/RedfishEndpoints",
        "RedfishEndpoints",
    )?;
    let nics = list(&rb, "/hsm/v2/Inventory/EthernetInterfaces", "")?;
    let macs: BTreeSet<&str> = nics
        .iter()
        .filter_map(|e| e.get("MACAddress").and_then(Value::as_str))
        .collect();
    let want = n * SYSTEMS.len();
    if endpoints.len() != n || nodes != want || macs.len() != want {
        bail!(
            "after discovering {n} BMCs the inventory holds {} RedfishEndpoints, {nodes} nodes \
             and {} distinct MACs (wanted {n}, {want}, {want})",
            endpoints.len(),
            macs.len()
        );
    }
    Ok(secs)
}

/// A list from rackboot's API: the array at `key` (or the whole answer when `key` is "").
fn list(rb: &Rackboot, path: &str, key: &str) -> anyhow::Result<Vec<Value>> {
    let (code, body) = rb.http("GET", path, None)?;
    if code != 200 {
        bail!("GET {path} → {code}: {body}");
    }
    let v: Value = serde_json::from_str(&body).with_context(|| format!("GET {path}"))?;
    let v = if key.is_empty() {
        v
    } else {
        v.get(key).cloned().unwrap_or(Value::Null)
    };
    match v {
        Value::Array(a) => Ok(a),
        other => bail!("GET {path}: expected a list, got {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_is_replaced_or_appended() {
        let doc = "# B\n\n## A\n\na\n\n## Redfish discovery\n\nold\n\n## C\n\nc\n";
        let new = replace_section(doc, HEADING, "## Redfish discovery\n\nnew\n");
        assert_eq!(
            new,
            "# B\n\n## A\n\na\n\n## Redfish discovery\n\nnew\n\n## C\n\nc\n"
        );
        let appended = replace_section("# B\n\n## A\n\na\n", HEADING, "## Redfish discovery\n\nx");
        assert_eq!(appended, "# B\n\n## A\n\na\n\n## Redfish discovery\n\nx\n");
    }
}
