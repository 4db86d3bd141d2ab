//! Measurement: `openssl speed`, the TCP and input-queue counters, the optional profiler
//! and the timed enrollment run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use qemu_tests::{Netns, Rackboot};
use serde_json::Value;

use crate::run::{output, run};

use super::setup::{api, mint, nodes, register, server_pid};
use super::{CLIENT, CONCURRENCY, NODE_NET, NODES, SERVER_CIDR};

/// What `openssl speed` measured: (sign/s, verify/s).
#[derive(Clone, Copy)]
pub(super) struct Speed {
    pub(super) sign: f64,
    pub(super) verify: f64,
}

/// `openssl speed -seconds 3 [-multi N] ecdsap256`.
fn openssl_speed(multi: Option<usize>) -> anyhow::Result<Speed> {
    let mut cmd = Command::new("openssl");
    cmd.args(["speed", "-seconds", "3"]);
    if let Some(n) = multi {
        cmd.args(["-multi", &n.to_string()]);
    }
    let text = output(cmd.arg("ecdsap256").stderr(Stdio::null()))?;
    parse_speed(&text).with_context(|| format!("no `256 bits ecdsa (nistp256)` line in:\n{text}"))
}

/// The last `256 bits ecdsa (nistp256) <s> <s> <sign/s> <verify/s>` line.
fn parse_speed(text: &str) -> Option<Speed> {
    let line = text.lines().rfind(|l| l.contains("ecdsa (nistp256)"))?;
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse::<f64>().ok())
        .collect();
    match nums.as_slice() {
        [.., sign, verify] if *sign > 0.0 && *verify > 0.0 => Some(Speed {
            sign: *sign,
            verify: *verify,
        }),
        _ => None,
    }
}

/// TCP counters that show lost connection attempts and resent data: the server's listen
/// queue overflowing, SYNs sent again, and segments sent again (tail loss probes and
/// retransmission timeouts among them).
const TCP_COUNTERS: [&str; 6] = [
    "TcpExtListenOverflows",
    "TcpExtListenDrops",
    "TcpExtTCPSynRetrans",
    "TcpRetransSegs",
    "TcpExtTCPLossProbes",
    "TcpExtTCPTimeouts",
];

/// `TCP_COUNTERS` of namespace `ns` (absolute values).
fn tcp_counters(ns: &Netns) -> anyhow::Result<Vec<u64>> {
    let text = output(ns.cmd("nstat").args(["-asz"]))?;
    Ok(TCP_COUNTERS
        .iter()
        .map(|name| {
            text.lines()
                .find_map(|l| {
                    let mut w = l.split_whitespace();
                    (w.next() == Some(name))
                        .then(|| w.next().and_then(|v| v.parse().ok()))
                        .flatten()
                })
                .unwrap_or(0)
        })
        .collect())
}

/// Packets the kernel dropped because a CPU's input queue was full (every namespace; the
/// second column of /proc/net/softnet_stat, summed over CPUs).
fn backlog_drops() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|h| u64::from_str_radix(h, 16).ok())
        .sum()
}

/// `after - before`, counter by counter.
fn delta(before: &[u64], after: &[u64]) -> Vec<u64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| a.saturating_sub(*b))
        .collect()
}

/// Optional profiler attached to rackboot; SIGINT on drop so it writes its data.
struct Perf(Option<std::process::Child>);

impl Perf {
    fn attach(pid: u32) -> anyhow::Result<Perf> {
        let Ok(file) = std::env::var("RACKBOOT_BENCH_PERF") else {
            return Ok(Perf(None));
        };
        let child = Command::new("perf")
            .args([
                "record",
                "-F",
                "999",
                "--call-graph",
                "dwarf,16384",
                "-p",
                &pid.to_string(),
                "-o",
                &file,
            ])
            .stdout(Stdio::null())
            .spawn()
            .context("perf record")?;
        std::thread::sleep(Duration::from_secs(1));
        eprintln!("perf record on rackboot ({pid}) into {file}");
        Ok(Perf(Some(child)))
    }

    fn on(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// What the timed part measured.
pub(super) struct Measured {
    pub(super) load: Value,
    pub(super) single: Speed,
    pub(super) multi: Speed,
    pub(super) setup_s: f64,
    pub(super) profiled: bool,
    /// The 1-minute load average just before the timed part.
    pub(super) load_avg: String,
    /// `TCP_COUNTERS` during the timed part: server namespace, client namespace.
    pub(super) tcp: [Vec<u64>; 2],
    /// Input-queue drops during the timed part (whole machine).
    pub(super) backlog_drops: u64,
}

pub(super) fn measure(rackboot: &Path, gen_bin: &Path) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let nodes = nodes();
    let ns = Netns::with_address("bid", SERVER_CIDR)?;
    let rb = Rackboot::start_with(&ns, rackboot)?;
    let token = rb.mint_token(rackboot, "60m")?;

    crate::stage(&format!(
        "identity: register {NODES} nodes, mint their join tokens"
    ));
    let setup = Instant::now();
    register(&ns, &token, d, &nodes)?;
    let list = d.join("nodes.txt");
    let (url, ca) = mint(&ns, &token, d, &nodes, &list)?;
    let setup_s = setup.elapsed().as_secs_f64();
    eprintln!("registered and minted {NODES} tokens in {setup_s:.1} s ({url}, {ca})");

    let client = ns.add_client_ns()?;
    client.ip(&["addr", "add", &format!("{CLIENT}/16"), "dev", "vc"])?;
    let batch: String = nodes
        .iter()
        .map(|n| format!("addr add {}/32 dev vc\n", n.ip))
        .collect();
    let batch_file = d.join("addrs.ip");
    std::fs::write(&batch_file, batch)?;
    run(Command::new("ip")
        .args(["-n", &client.name, "-batch"])
        .arg(&batch_file))?;
    ns.ip(&["route", "add", NODE_NET, "via", CLIENT, "dev", "br0"])?;

    crate::stage("identity: openssl speed -seconds 3 ecdsap256 (one process, then -multi 2)");
    let single = openssl_speed(None)?;
    let multi = openssl_speed(Some(2))?;
    eprintln!(
        "openssl ECDSA P-256: {:.0} sign/s, {:.0} verify/s (one process); {:.0} sign/s, {:.0} verify/s (-multi 2)",
        single.sign, single.verify, multi.sign, multi.verify
    );

    crate::stage(&format!(
        "identity: {NODES} enrollments, {CONCURRENCY} in flight"
    ));
    let pid = server_pid(&ns)?;
    let load_avg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    let (server_before, client_before) = (tcp_counters(&ns)?, tcp_counters(&client)?);
    let drops_before = backlog_drops();
    let perf = Perf::attach(pid)?;
    let out = client
        .cmd(gen_bin.to_str().context("enroll_bench path")?)
        .arg("--nodes")
        .arg(&list)
        .args(["--url", &url, "--ca-fingerprint", &ca])
        .args(["--concurrency", &CONCURRENCY.to_string()])
        .args(["--server-pid", &pid.to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    let profiled = perf.on();
    drop(perf);
    let tcp = [
        delta(&server_before, &tcp_counters(&ns)?),
        delta(&client_before, &tcp_counters(&client)?),
    ];
    let backlog_drops = backlog_drops().saturating_sub(drops_before);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        // The log goes with the data dir when `rb` drops: show its end here.
        let log = rb.log_text();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines
            .get(lines.len().saturating_sub(30)..)
            .unwrap_or_default();
        bail!(
            "enroll_bench failed ({}): {}\nthe end of rackboot's log:\n{}",
            out.status,
            stdout.trim(),
            tail.join("\n")
        );
    }
    let load: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("enroll_bench printed no JSON: {stdout}"))?;
    eprintln!("{load}");

    // Every enrollment must have left its certificate behind.
    let (code, certs) = api(&ns, &token, d, "GET", "/identity/v1/certs", None)?;
    let stored = serde_json::from_str::<Value>(&certs)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len));
    if code != 200 || stored != Some(NODES) {
        bail!(
            "after {NODES} enrollments GET /identity/v1/certs → {code} with {stored:?} certificates"
        );
    }
    Ok(Measured {
        load,
        single,
        multi,
        setup_s,
        profiled,
        load_avg,
        tcp,
        backlog_drops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_speed_lines() {
        let text = "                              sign    verify    sign/s verify/s\n \
                    256 bits ecdsa (nistp256)   0.0000s   0.0001s  42904.4  14545.7\n";
        let s = parse_speed(text).unwrap();
        assert!((s.sign - 42904.4).abs() < 0.01 && (s.verify - 14545.7).abs() < 0.01);
        assert!(parse_speed("nothing").is_none());
    }
}
