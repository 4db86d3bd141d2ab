//! A DHCP flood from random MACs against a federated rack, shared by the e2e test
//! (`tests/flood.rs`) and `cargo xtask bench flood`.
//!
//! Two rackboots in one namespace: the upstream (a standalone rackboot: SMD/BSS on
//! 192.0.2.1:8080, no DHCP) knows one node of rack `x1000c0`; the downstream is federated to it
//! (one pull at start, then only on-demand lookups). perfdhcp (relay mode from 192.0.2.10, `-R`
//! distinct random MACs, DISCOVER-OFFER only) floods the downstream while udhcpc, with the known
//! node's MAC on a second veth, asks for its lease. Measured: the SMD requests the upstream
//! served during the flood (its own `/metrics`; an unknown MAC's lookup is exactly one SMD
//! request), the downstream's RSS and threads (`/proc/<pid>/status`), its runtime's task count
//! (`rackboot_tasks`), its lookup outcomes and DHCP drops (`/metrics`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Netns, PerfdhcpStats, Rackboot};

const UP: &str = "192.0.2.1:8080";
/// The node the upstream knows (pulled by the downstream at start).
pub const KNOWN: (&str, &str, &str) = ("x1000c0s0b0n0", "52:54:00:fd:00:01", "192.0.2.60");

/// What to send and the downstream's lookup limits.
#[derive(Debug, Clone)]
pub struct FloodConfig {
    /// DISCOVERs, each from its own random MAC (`perfdhcp -R`/`-n`).
    pub discovers: u64,
    /// DISCOVERs per second perfdhcp aims at (`-r`).
    pub rate: u64,
    /// `upstream.lookup_rate` and `upstream.lookup_burst` of the downstream.
    pub lookup_rate: f64,
    pub lookup_burst: u32,
}

/// What one flood did.
#[derive(Debug, Clone, Default)]
pub struct FloodReport {
    pub perf: PerfdhcpStats,
    /// From perfdhcp's start until the downstream had no lookup in flight.
    pub seconds: f64,
    /// SMD requests the upstream served in that time.
    pub upstream_lookups: u64,
    pub baseline_rss_kb: u64,
    pub max_rss_kb: u64,
    pub baseline_threads: u64,
    pub max_threads: u64,
    pub baseline_tasks: u64,
    pub max_tasks: u64,
    /// `rackboot_upstream_lookups_total` by outcome, at the end.
    pub outcomes: BTreeMap<String, u64>,
    /// `rackboot_dhcp_drops_total` by reason, at the end.
    pub drops: BTreeMap<String, u64>,
    /// The address udhcpc got for the known node during the flood.
    pub known_lease: Option<String>,
    pub perfdhcp_output: String,
}

/// Sum of the samples of `metric` whose labels contain every `want` (`route="smd"`), by the
/// value of `by` (a label name; "" = one total under "").
pub fn metric_values(text: &str, metric: &str, want: &[&str], by: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        if !want.iter().all(|w| labels.contains(w)) {
            continue;
        }
        let key = if by.is_empty() {
            String::new()
        } else {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{by}=")))
                .unwrap_or("")
                .trim_matches('"')
                .to_owned()
        };
        let v: f64 = value
            .split_whitespace()
            .next()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0.0);
        *out.entry(key).or_insert(0) += v as u64;
    }
    out
}

fn metrics(rb: &Rackboot) -> anyhow::Result<String> {
    let (code, text) = rb.http("GET", "/metrics", None)?;
    if code != 200 {
        bail!("GET /metrics: {code}");
    }
    Ok(text)
}

fn proc_status(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

fn smd_requests(up: &Rackboot) -> anyhow::Result<u64> {
    Ok(metric_values(
        &metrics(up)?,
        "rackboot_http_requests_total",
        &["route=\"smd\""],
        "",
    )
    .values()
    .sum())
}

/// Runs the flood with `bin` as both rackboots.
pub fn run(bin: &Path, cfg: &FloodConfig) -> anyhow::Result<FloodReport> {
    let ns = Netns::new("flood")?;
    let up_env = [
        ("RACKBOOT_HTTP_LISTEN", UP),
        ("RACKBOOT_LISTEN__DHCP_PORT", "0"),
        ("RACKBOOT_LISTEN__TFTP_PORT", "0"),
        ("RACKBOOT_IDENTITY__ENABLED", "false"),
        // The downstream serves the rack's DNS on 192.0.2.1:53; the upstream must not.
        ("RACKBOOT_DNS__ENABLED", "false"),
    ];
    let up = Rackboot::start_bin_env_at(&ns, bin, &up_env, UP)?;
    up.register_node(KNOWN.0, 1, KNOWN.1, KNOWN.2)?;
    let work = tempfile::tempdir()?;
    let token_file = work.path().join("upstream.token");
    std::fs::write(&token_file, up.mint_token(bin, "30m")?)?;
    let token_path = token_file.to_string_lossy().into_owned();
    let (rate, burst) = (
        format!("{:.3}", cfg.lookup_rate),
        cfg.lookup_burst.to_string(),
    );
    let down_env = [
        ("RACKBOOT_UPSTREAM__SMD", "http://192.0.2.1:8080"),
        ("RACKBOOT_UPSTREAM__XNAME_PREFIX", "x1000c0"),
        ("RACKBOOT_UPSTREAM__TOKEN_FILE", token_path.as_str()),
        ("RACKBOOT_UPSTREAM__INTERVAL", "1h"),
        ("RACKBOOT_UPSTREAM__LOOKUP_RATE", rate.as_str()),
        ("RACKBOOT_UPSTREAM__LOOKUP_BURST", burst.as_str()),
        ("RACKBOOT_LOG", "info"),
    ];
    let down = Rackboot::start_bin_env_at(&ns, bin, &down_env, &ns.addr)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, s) = down.http("GET", "/rackboot/v1/upstream", None)?;
        let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
        if v["last_pull"].is_string() {
            break;
        }
        if Instant::now() > deadline {
            bail!("no first pull: {s}\n{}", down.log_text());
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let client = ns.add_client_ns()?;
    client.ip(&["addr", "add", "192.0.2.10/24", "dev", "vc"])?;
    // A second veth for the known node's udhcpc.
    ns.ip(&[
        "link",
        "add",
        "vk0",
        "type",
        "veth",
        "peer",
        "name",
        "vk",
        "netns",
        &client.name,
    ])?;
    ns.ip(&["link", "set", "vk0", "master", "br0"])?;
    ns.ip(&["link", "set", "vk0", "up"])?;
    client.ip(&["link", "set", "vk", "address", KNOWN.1])?;
    client.ip(&["link", "set", "vk", "up"])?;
    let script = work.path().join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] && echo \"LEASE $ip\"\nexit 0\n",
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;

    let pid = down.pid();
    let mut report = FloodReport::default();
    (report.baseline_rss_kb, report.baseline_threads) = proc_status(pid);
    report.baseline_tasks = metric_values(&metrics(&down)?, "rackboot_tasks", &[], "")
        .values()
        .sum();
    let smd_before = smd_requests(&up)?;

    let started = Instant::now();
    let max_secs = (cfg.discovers / cfg.rate.max(1)) * 3 + 30;
    let mut perf = client
        .cmd("perfdhcp")
        .args([
            "-4",
            "-l",
            "192.0.2.10",
            "-i",
            "-r",
            &cfg.rate.to_string(),
            "-R",
            &cfg.discovers.to_string(),
            "-n",
            &cfg.discovers.to_string(),
            "-p",
            &max_secs.to_string(),
            "192.0.2.1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("perfdhcp")?;
    // The known node, while the flood runs (started once perfdhcp is sending).
    std::thread::sleep(Duration::from_secs(2));
    let mut udhcpc = client
        .cmd("udhcpc")
        .args(["-i", "vk", "-n", "-q", "-t", "10", "-T", "3", "-s"])
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("udhcpc")?;
    // Samples once a second while perfdhcp runs (a measurement, not a synchronisation).
    let mut udhcpc_out = None;
    loop {
        let (rss, threads) = proc_status(pid);
        report.max_rss_kb = report.max_rss_kb.max(rss);
        report.max_threads = report.max_threads.max(threads);
        if let Ok(text) = metrics(&down) {
            let tasks: u64 = metric_values(&text, "rackboot_tasks", &[], "")
                .values()
                .sum();
            report.max_tasks = report.max_tasks.max(tasks);
        }
        if udhcpc_out.is_none() && udhcpc.try_wait()?.is_some() {
            udhcpc_out = Some(udhcpc.wait_with_output_taken());
        }
        if perf.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let out = perf.wait_with_output()?;
    report.perfdhcp_output =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    report.perf = PerfdhcpStats::parse_discover_only(&report.perfdhcp_output).unwrap_or_default();
    let udhcpc_text = match udhcpc_out {
        Some(t) => t,
        None => {
            let o = udhcpc.wait_with_output()?;
            String::from_utf8_lossy(&o.stdout).into_owned()
        }
    };
    report.known_lease = udhcpc_text
        .lines()
        .find_map(|l| l.strip_prefix("LEASE "))
        .map(str::to_owned);

    // Lookups admitted during the flood finish within the lookup deadline: wait for none in
    // flight, then count what reached the upstream.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics(&down)?;
        let running: u64 = metric_values(&text, "rackboot_upstream_lookups_in_flight", &[], "")
            .values()
            .sum();
        if running == 0 || Instant::now() > deadline {
            report.outcomes =
                metric_values(&text, "rackboot_upstream_lookups_total", &[], "outcome");
            report.drops = metric_values(&text, "rackboot_dhcp_drops_total", &[], "reason");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    report.upstream_lookups = smd_requests(&up)?.saturating_sub(smd_before);
    report.seconds = started.elapsed().as_secs_f64();
    let (rss, threads) = proc_status(pid);
    report.max_rss_kb = report.max_rss_kb.max(rss);
    report.max_threads = report.max_threads.max(threads);
    drop(client);
    drop(down);
    drop(up);
    Ok(report)
}

trait TakeOutput {
    fn wait_with_output_taken(&mut self) -> String;
}

impl TakeOutput for std::process::Child {
    /// The stdout of a child that has exited.
    fn wait_with_output_taken(&mut self) -> String {
        use std::io::Read;
        let mut s = String::new();
        if let Some(mut o) = self.stdout.take() {
            let _ = o.read_to_string(&mut s);
        }
        s
    }
}
