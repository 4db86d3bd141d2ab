//! `cargo xtask bench tftp`: 200 concurrent TFTP downloads of `ipxe.efi` and of
//! `undionly.kpxe`, each with its firmware's options, against rackboot and tftpd-hpa.
//!
//! Both servers run at once, each in its own namespace with a client namespace on a veth,
//! serving copies of the same two files. The client is `rackboot storm --tftp-only FILE
//! --window 0` (appliance/src/storm: every node's RRQ at once, the firmware's retransmissions,
//! each file's sha256 checked). Paired, interleaved rounds (rackboot, then tftpd-hpa, per file,
//! `ROUNDS` times); the headline is the median of the per-round throughput ratios.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use qemu_tests::{Netns, Rackboot};
use serde_json::Value;

use super::storm::run_storm;
use super::{Daemon, loadavg, median};
use crate::run::output;

/// The section's heading in docs/benchmarks.md.
pub const HEADING: &str = "## TFTP";

const CLIENT: &str = "192.0.2.10";
const TRANSFERS: usize = 200;
const ROUNDS: usize = 5;

/// A file and the options its loader asks for: (file, blksize, windowsize).
/// `ipxe.efi` is fetched by UEFI firmware: EDK2's PXE client asks for blksize 1468 (the MTU's
/// worth; PcdTftpBlockSize 0) and windowsize 4 (PcdPxeTftpWindowSize). `undionly.kpxe` is
/// fetched by a BIOS PXE ROM; QEMU's is iPXE, which asks for blksize 1432
/// (TFTP_MAX_BLKSIZE in iPXE's include/ipxe/tftp.h) and no windowsize.
const FILES: [(&str, u16, Option<u16>); 2] =
    [("ipxe.efi", 1468, Some(4)), ("undionly.kpxe", 1432, None)];

/// One run: 200 downloads of one file from one server.
struct Run {
    /// Payload bytes over the run, first RRQ to last byte.
    bytes_per_s: f64,
    failed: u64,
    p50: f64,
    p99: f64,
    retransmits: u64,
    /// The server's CPU seconds (all threads, and reaped children) per MB served.
    cpu_s_per_mb: f64,
}

impl Run {
    fn of(report: &Value, cpu_s: f64) -> Run {
        let s = &report["summary"];
        let spans: Vec<(f64, f64)> = report["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|n| n["stages"].as_array().into_iter().flatten())
            .filter_map(|st| Some((st[1].as_f64()?, st[2].as_f64()?)))
            .collect();
        let first = spans.iter().map(|s| s.0).reduce(f64::min).unwrap_or(0.0);
        let last = spans.iter().map(|s| s.1).reduce(f64::max).unwrap_or(0.0);
        let bytes = s["tftp_bytes"].as_f64().unwrap_or(0.0);
        let verified = s["sha256_verified"].as_u64().unwrap_or(0);
        let nodes = s["nodes"].as_u64().unwrap_or(0);
        Run {
            bytes_per_s: bytes / (last - first).max(1e-6),
            // A transfer counts as good only when its file's sha256 matched.
            failed: nodes.saturating_sub(verified),
            p50: s["latency"]["tftp"]["p50"].as_f64().unwrap_or(f64::NAN),
            p99: s["latency"]["tftp"]["p99"].as_f64().unwrap_or(f64::NAN),
            retransmits: s["tftp_retransmits"].as_u64().unwrap_or(0),
            cpu_s_per_mb: cpu_s / (bytes / 1e6).max(1e-9),
        }
    }
}

/// A server under test: its namespace, the client's, the process.
struct Side {
    client: Netns,
    pid: u32,
    _server: Box<dyn std::any::Any>,
    _ns: Netns,
}

fn client_of(ns: &Netns) -> anyhow::Result<Netns> {
    let client = ns.add_client_ns()?;
    client.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "vc"])?;
    Ok(client)
}

fn rackboot(bin: &Path, dir: &Path) -> anyhow::Result<Side> {
    let ns = Netns::new("tftp-rb")?;
    let dir = dir.to_str().context("path")?;
    let rb = Rackboot::start_bin_env_at(
        &ns,
        bin,
        &[("RACKBOOT_IPXE_DIR", dir), ("RACKBOOT_LOG", "info")],
        &ns.addr,
    )?;
    Ok(Side {
        client: client_of(&ns)?,
        pid: rb.pid(),
        _server: Box::new(rb),
        _ns: ns,
    })
}

fn tftpd_hpa(dir: &Path) -> anyhow::Result<Side> {
    let ns = Netns::new("tftp-hpa")?;
    let child = ns
        .cmd("in.tftpd")
        .args(["-L", "-a", &format!("{}:69", ns.addr), "-s"])
        .arg(dir)
        .spawn()
        .context("in.tftpd (tftpd-hpa)")?;
    std::thread::sleep(std::time::Duration::from_secs(1));
    Ok(Side {
        client: client_of(&ns)?,
        pid: child.id(),
        _server: Box::new(Daemon(child)),
        _ns: ns,
    })
}

fn download(
    side: &Side,
    bin: &Path,
    file: &str,
    blk: u16,
    win: Option<u16>,
    sha: &str,
) -> anyhow::Result<Run> {
    let mut args: Vec<String> = vec![
        "--server".into(),
        qemu_tests::SERVER.into(),
        "--tftp-only".into(),
        file.into(),
        "--nodes".into(),
        TRANSFERS.to_string(),
        "--window".into(),
        "0".into(),
        "--tftp-blksize".into(),
        blk.to_string(),
        "--expect-sha256".into(),
        format!("{file}={sha}"),
    ];
    if let Some(w) = win {
        args.extend(["--tftp-windowsize".into(), w.to_string()]);
    }
    let (report, cpu_s) = cpu_of(side.pid, || run_storm(&side.client, bin, &args))?;
    Ok(Run::of(&report, cpu_s))
}

/// Runs `f` while `perf stat` counts the CPU time of process `pid`, its threads and the
/// children it forks meanwhile (tftpd-hpa's transfers; it ignores SIGCHLD, so their time never
/// reaches its cutime): (what `f` returned, CPU seconds).
fn cpu_of<T>(pid: u32, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, f64)> {
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("perf.csv");
    let mut perf = std::process::Command::new("perf")
        .args([
            "stat",
            "-x",
            ",",
            "-e",
            "task-clock",
            "-p",
            &pid.to_string(),
            "-o",
        ])
        .arg(&csv)
        .spawn()
        .context("perf (linux-perf)")?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = f();
    // perf stat writes its counts when interrupted.
    let _ = output(std::process::Command::new("kill").args(["-INT", &perf.id().to_string()]));
    perf.wait()?;
    let text = std::fs::read_to_string(&csv)?;
    let msec: f64 = text
        .lines()
        .find(|l| l.contains("task-clock"))
        .and_then(|l| l.split(',').next()?.parse().ok())
        .with_context(|| format!("perf stat printed no task-clock: {text}"))?;
    Ok((out?, msec / 1e3))
}

pub fn section(_root: &Path, bin: &Path) -> anyhow::Result<String> {
    let files = tempfile::tempdir()?;
    // tftpd-hpa drops to `nobody` after its chroot into this directory.
    std::fs::set_permissions(
        files.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let mut sums = Vec::new();
    for (file, _, _) in FILES {
        // ipxe.efi is a symlink into /boot: both servers get a plain copy.
        std::fs::copy(
            Path::new("/usr/lib/ipxe").join(file),
            files.path().join(file),
        )?;
        sums.push(crate::release::sha256(&files.path().join(file))?);
    }
    let load_before = loadavg();
    let rb = rackboot(bin, files.path())?;
    let hpa = tftpd_hpa(files.path())?;
    eprintln!("rackboot pid {}, in.tftpd pid {}", rb.pid, hpa.pid);
    // rounds[file] = [(rackboot, tftpd-hpa)]
    let mut rounds: Vec<Vec<(Run, Run)>> = FILES.iter().map(|_| Vec::new()).collect();
    for round in 1..=ROUNDS {
        for (i, (file, blk, win)) in FILES.into_iter().enumerate() {
            crate::stage(&format!("TFTP round {round}: {TRANSFERS} × {file}"));
            let sha = sums.get(i).context("sum")?;
            let a = download(&rb, bin, file, blk, win, sha)?;
            let b = download(&hpa, bin, file, blk, win, sha)?;
            eprintln!(
                "{file}: rackboot {:.1} MB/s, tftpd-hpa {:.1} MB/s",
                a.bytes_per_s / 1e6,
                b.bytes_per_s / 1e6
            );
            if let Some(r) = rounds.get_mut(i) {
                r.push((a, b));
            }
        }
    }
    Ok(render(&rounds, &load_before, &loadavg()))
}

fn render(rounds: &[Vec<(Run, Run)>], load_before: &str, load_after: &str) -> String {
    let mut s = format!(
        "{HEADING}\n\n\
         `cargo xtask bench tftp` (`xtask/src/bench/tftp.rs`): {TRANSFERS} concurrent downloads \
         of one file, rackboot (`rackboot serve`, release build, `--ipxe-dir` a copy of the \
         files) against tftpd-hpa (`in.tftpd -L -s DIR` run in a namespace, its defaults: a \
         process forked per transfer). Each server in its own namespace, the client in a second \
         one on a veth: `rackboot storm --tftp-only FILE --nodes {TRANSFERS} --window 0` (all \
         RRQs at once, from one address, {TRANSFERS} ports; the firmware's 4 s retransmission of \
         the last ACK; each file's sha256 checked). Options as the loaders ask: `ipxe.efi` as \
         EDK2 does (blksize 1468, windowsize 4, PcdPxeTftpWindowSize; tftpd-hpa does not know \
         windowsize and answers lock-step), `undionly.kpxe` as iPXE does (blksize 1432, no \
         windowsize). Throughput: payload bytes of all transfers over first RRQ → last byte; \
         per-transfer time: RRQ → last DATA, p50 / p99 over the {TRANSFERS}; failed: transfers \
         that did not end with the file's sha256. {ROUNDS} paired rounds, per file rackboot then \
         tftpd-hpa, back to back; the ratio is the median of the per-round ratios. Server CPU: \
         `perf stat -e task-clock -p PID` over the run (all the server's threads, and the \
         processes tftpd-hpa forks for its transfers), per MB served. The client (the storm, tokio) runs on the same 2 cores as the server.\n\n\
         Machine: {}; 1-minute load average {load_before} before the runs, {load_after} after \
         (shared with another engineer's builds and QEMU tests).\n\n\
         | file | round | server | MB/s | failed | p50 (s) | p99 (s) | retransmissions | server CPU ms/MB |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        super::machine()
    );
    let mut heads = Vec::new();
    for ((file, _, _), runs) in FILES.iter().zip(rounds) {
        for (i, (a, b)) in runs.iter().enumerate() {
            for (name, r) in [("rackboot", a), ("tftpd-hpa", b)] {
                let _ = writeln!(
                    s,
                    "| {file} | {} | {name} | {:.1} | {} | {:.3} | {:.3} | {} | {:.1} |",
                    i + 1,
                    r.bytes_per_s / 1e6,
                    r.failed,
                    r.p50,
                    r.p99,
                    r.retransmits,
                    r.cpu_s_per_mb * 1e3
                );
            }
        }
        let ratios: Vec<f64> = runs
            .iter()
            .map(|(a, b)| a.bytes_per_s / b.bytes_per_s.max(1.0))
            .collect();
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}×")).collect();
        let cpu = median(
            runs.iter()
                .map(|(a, b)| b.cpu_s_per_mb / a.cpu_s_per_mb.max(1e-9))
                .collect(),
        );
        heads.push(format!(
            "`{file}`: **{}** (per round: {}; server CPU per MB, tftpd-hpa / rackboot: {})",
            median(ratios).map_or("n/a".into(), |m| format!("{m:.2}×")),
            shown.join(", "),
            cpu.map_or("n/a".into(), |m| format!("{m:.2}×"))
        ));
    }
    let _ = writeln!(
        s,
        "\nThroughput ratio rackboot / tftpd-hpa (median of the rounds' ratios; target ≥ 2×): {}.",
        heads.join("; ")
    );
    s
}
