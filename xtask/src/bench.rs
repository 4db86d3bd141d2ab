//! `cargo xtask bench`: criterion benchmarks of pxe-core, and rackboot against peers measured in
//! the same run (perfdhcp → Kea, wrk → nginx). Results go to docs/benchmarks.md.
//!
//! These are measurements, not tests: nothing here fails on a slow number.

mod dhcp;
mod dns;
mod federation;
mod flood;
mod identity;
mod redfish;
mod storm;
mod tftp;
mod tiny;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use qemu_tests::{Netns, Rackboot};

use crate::run::{output, run};

pub use dhcp::run_dhcp_only;
use dhcp::{dhcp_section, dhcp_sustained, start_kea, start_kea_with};

pub fn run_bench() -> anyhow::Result<()> {
    crate::deps::install()?;
    let root = crate::root();
    let bin = release_binary(&root)?;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "# Benchmarks\n\nProduced by `cargo xtask bench` on this machine ({}).",
        machine()
    );
    let _ = writeln!(
        report,
        "Ratios compare rackboot with a peer measured in the same run.\n"
    );

    crate::stage("criterion: pxe-core DHCP and TFTP");
    let crit = output(Command::new(env!("CARGO")).current_dir(&root).args([
        "bench",
        "-p",
        "pxe-core",
        "--bench",
        "dhcp",
        "--bench",
        "tftp",
        "--",
        "--warm-up-time",
        "1",
        "--measurement-time",
        "5",
    ]))?;
    let _ = writeln!(
        report,
        "## pxe-core (criterion, one core)\n\n`cargo bench -p pxe-core --bench dhcp --bench tftp`\n\n| benchmark | time per iteration | throughput |\n|---|---|---|"
    );
    for (name, time, thrpt) in criterion_rows(&crit) {
        let _ = writeln!(report, "| {name} | {time} | {thrpt} |");
    }
    eprintln!("{crit}");

    crate::stage(
        "DHCP: sustained DORA/s, perfdhcp (relay mode, 30,000 clients, 6 s steps) against rackboot and Kea",
    );
    let rb = dhcp_sustained("rackboot", |ns| {
        let r = Rackboot::start_with(ns, &bin)?;
        Ok(Box::new(r) as Box<dyn std::any::Any>)
    })?;
    let kea = dhcp_sustained("kea", start_kea)?;
    let _ = writeln!(report, "\n{}\n", dhcp_section(&rb, &kea));

    crate::stage("HTTP: wrk (50 connections, 64 MiB file) against rackboot /images and nginx");
    let (rb_http, nginx_http) = http_compare(&bin)?;
    let _ = writeln!(
        report,
        "\n## HTTP: a 64 MiB initrd, wrk -t2 -c50 -d10s\n\n| server | transfer/s |\n|---|---|\n| rackboot /images | {} MiB/s |\n| nginx | {} MiB/s |\n\nRatio rackboot / nginx: **{:.2}×** (target ≥ 0.9×).",
        rb_http as u64,
        nginx_http as u64,
        rb_http / nginx_http.max(1.0)
    );
    crate::stage(
        "boot: QEMU SeaBIOS+iPXE node, rackboot vs dnsmasq + nginx serving the same files",
    );
    let (rb_boot, peer_boot) = boot_compare(&bin)?;
    let _ = writeln!(
        report,
        "\n## Boot: power-on to userspace (QEMU TCG, SeaBIOS + iPXE ROM, same kernel/initrd)\n\n\
         | server | seconds to the node's userspace marker (median of 3) |\n|---|---|\n| rackboot | {:.1} |\n| dnsmasq (DHCP) + nginx (script, kernel, initrd) | {:.1} |\n\n\
         Ratio rackboot / peer: **{:.2}** (target ≤ 1.0; median of three boots each, TCG timing varies by a few percent).",
        rb_boot,
        peer_boot,
        rb_boot / peer_boot.max(0.001)
    );
    type Section = fn(&Path, &Path) -> anyhow::Result<String>;
    let sections: [(&str, &str, Section); 8] = [
        (
            "Redfish discovery: a silent /20, crawls of 64/128/256 fixture BMCs",
            redfish::HEADING,
            redfish::section,
        ),
        (
            "Identity: 4,000 node enrollments (200 in flight) against openssl's ECDSA P-256 rate",
            identity::HEADING,
            identity::section,
        ),
        (
            "Federation: first sync of a 10,000-node upstream scoped to 64 nodes, steady state, outbox drain",
            federation::HEADING,
            federation::section,
        ),
        (
            "DHCP flood: 300,000 DISCOVERs from random MACs on a federated rack",
            flood::HEADING,
            flood::section,
        ),
        (
            "Embedded profile: static RAM, stack, boot time next to rackboot serve",
            tiny::HEADING,
            tiny::section,
        ),
        (
            "DNS: dnsperf against rackboot and dnsmasq, 10,000 names",
            dns::HEADING,
            dns::section,
        ),
        (
            "TFTP: 200 concurrent downloads, rackboot vs tftpd-hpa",
            tftp::HEADING,
            tftp::section,
        ),
        (
            "Storm: 100/500/1,000 nodes against rackboot, dnsmasq + nginx, Kea + tftpd-hpa + nginx",
            storm::HEADING,
            storm::section,
        ),
    ];
    for (banner, heading, section) in sections {
        crate::stage(banner);
        let text = section(&root, &bin).unwrap_or_else(|e| {
            eprintln!("{heading} failed: {e:#}");
            format!("{heading}\n\n**failed**: {e:#}\n")
        });
        let _ = write!(report, "\n{text}");
    }
    let path = root.join("docs/benchmarks.md");
    // The fuzzing section is written by hand after long fuzz runs (not measured here): keep it.
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    if let Some(fuzz) = section_of(&old, FUZZ_HEADING) {
        report = redfish::replace_section(&report, FUZZ_HEADING, &fuzz);
    }
    std::fs::write(&path, report)?;
    eprintln!("\nwrote {}", path.display());
    Ok(())
}

/// Builds the release binary, runs one benchmark section, prints it, and replaces (or
/// appends) its `heading` section of docs/benchmarks.md, leaving the rest.
fn run_section_only(
    heading: &str,
    section: fn(&Path, &Path) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    let root = crate::root();
    let bin = release_binary(&root)?;
    let text = section(&root, &bin)?;
    println!("{text}");
    let path = root.join("docs/benchmarks.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, redfish::replace_section(&old, heading, &text))?;
    eprintln!("\nupdated the {heading} section of {}", path.display());
    Ok(())
}

/// docs/benchmarks.md's hand-written section on the fuzz runs.
const FUZZ_HEADING: &str = "## Fuzzing";

/// The `heading` section of a markdown document (up to the next `## `), if there is one.
fn section_of(doc: &str, heading: &str) -> Option<String> {
    let mut lines = doc.lines().skip_while(|l| l.trim_end() != heading);
    let first = lines.next()?;
    let rest: Vec<&str> = lines.take_while(|l| !l.starts_with("## ")).collect();
    Some(format!("{first}\n{}", rest.join("\n")))
}

/// Where cargo puts its output: `$CARGO_TARGET_DIR`, else `<root>/target`.
/// The optimised binary the benchmarks measure: `RACKBOOT_BENCH_BIN` when set (e.g. the
/// release's `dist/rackboot`, profile `dist`: the release profile, stripped and static), else
/// a fresh `cargo build --release`.
fn release_binary(root: &Path) -> anyhow::Result<std::path::PathBuf> {
    if let Some(bin) = std::env::var_os("RACKBOOT_BENCH_BIN") {
        let bin = std::path::PathBuf::from(bin);
        anyhow::ensure!(
            bin.is_file(),
            "RACKBOOT_BENCH_BIN={} is not a file",
            bin.display()
        );
        eprintln!("benchmarking {} (RACKBOOT_BENCH_BIN)", bin.display());
        return Ok(bin);
    }
    crate::stage("build (release)");
    run(Command::new(env!("CARGO")).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "appliance",
        "--bin",
        "rackboot",
    ]))?;
    Ok(crate::release::target_dir().join("release/rackboot"))
}

/// `cargo xtask bench tiny`: only the embedded profile's benchmark.
pub fn run_tiny_only() -> anyhow::Result<()> {
    run_section_only(tiny::HEADING, tiny::section)
}

/// `cargo xtask bench redfish`: only the discovery benchmark.
pub fn run_redfish_only() -> anyhow::Result<()> {
    run_section_only(redfish::HEADING, redfish::section)
}

/// `cargo xtask bench identity`: only the enrollment benchmark.
pub fn run_identity_only() -> anyhow::Result<()> {
    run_section_only(identity::HEADING, identity::section)
}

/// `cargo xtask bench flood`: only the DHCP flood on a federated rack.
pub fn run_flood_only() -> anyhow::Result<()> {
    run_section_only(flood::HEADING, flood::section)
}

/// `cargo xtask bench dns`: only the DNS comparison with dnsmasq.
pub fn run_dns_only() -> anyhow::Result<()> {
    run_section_only(dns::HEADING, dns::section)
}

/// `cargo xtask bench storm`: only the boot storm against rackboot, dnsmasq and Kea.
pub fn run_storm_only() -> anyhow::Result<()> {
    run_section_only(storm::HEADING, storm::section)
}

/// `cargo xtask bench storm rackboot [N…]`: storms against rackboot alone, printed only.
pub fn run_storm_rackboot(sizes: &[String]) -> anyhow::Result<()> {
    let sizes = if sizes.is_empty() {
        vec![1000]
    } else {
        sizes
            .iter()
            .map(|s| s.parse().with_context(|| format!("{s:?}: a node count")))
            .collect::<anyhow::Result<Vec<usize>>>()?
    };
    let bin = release_binary(&crate::root())?;
    println!("{}", storm::rackboot_only(&bin, &sizes)?);
    Ok(())
}

/// `cargo xtask bench tftp`: only the TFTP comparison with tftpd-hpa.
pub fn run_tftp_only() -> anyhow::Result<()> {
    run_section_only(tftp::HEADING, tftp::section)
}

/// The median of `v` (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => v.get(n / 2).copied(),
        _ => Some((v.get(n / 2 - 1)? + v.get(n / 2)?) / 2.0),
    }
}

/// The 1-minute load average (`/proc/loadavg`), or "?".
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// A peer process started for a benchmark, killed and reaped when dropped.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx serving directory `d` on `listen` (`addr:port`), logs and temp files in `d`.
fn nginx(ns: &Netns, d: &Path, listen: &str, workers: u32) -> anyhow::Result<Daemon> {
    let conf = d.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; worker_processes {workers}; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;\n\
               client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{ listen {listen}; root {d}; }} }}\n",
            d = d.display()
        ),
    )?;
    let child = ns
        .cmd("nginx")
        .arg("-c")
        .arg(&conf)
        .spawn()
        .context("nginx")?;
    Ok(Daemon(child))
}

/// dnsmasq on br0 as a PXE stack: DHCP whose firmware clients get `boot_file` over its TFTP
/// server and whose iPXE clients (user class `iPXE`) get `script` (a URL); leases in `d`;
/// `extra` adds the range, hosts, TFTP root.
fn dnsmasq_pxe(
    ns: &Netns,
    d: &Path,
    script: &str,
    boot_file: &str,
    extra: &[String],
) -> anyhow::Result<Daemon> {
    let child = ns
        .cmd("dnsmasq")
        .args([
            "--no-daemon",
            "--port=0",
            "--interface=br0",
            "--bind-interfaces",
            "--dhcp-userclass=set:ipxe,iPXE",
            &format!("--dhcp-boot=tag:ipxe,{script}"),
            &format!("--dhcp-boot=tag:!ipxe,{boot_file}"),
            "--enable-tftp",
        ])
        .args(extra)
        .arg(format!("--dhcp-leasefile={}", d.join("leases").display()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("dnsmasq")?;
    Ok(Daemon(child))
}

/// `cargo xtask bench federation`: only the federation benchmark.
pub fn run_federation_only() -> anyhow::Result<()> {
    run_section_only(federation::HEADING, federation::section)
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cpus} CPUs, {model}")
}

/// Rows of (benchmark, time, throughput) from criterion's text output.
fn criterion_rows(text: &str) -> Vec<(String, String, String)> {
    let mut rows = Vec::new();
    let mut name = String::new();
    let mut time = String::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.split_once("time:") {
            if !rest.0.trim().is_empty() {
                name = rest.0.trim().to_owned();
            }
            time = middle(rest.1);
        } else if let Some(rest) = t.strip_prefix("thrpt:") {
            // The "change:" block repeats time/thrpt as percentages against the last run.
            let thrpt = middle(rest);
            if !time.starts_with('[') && !thrpt.starts_with('[') {
                rows.push((name.clone(), time.clone(), thrpt));
            }
        } else if !t.is_empty() && !t.contains(':') && t.contains('/') {
            name = t.to_owned();
        }
    }
    rows
}

fn middle(s: &str) -> String {
    // "[1.0 µs 1.1 µs 1.2 µs]" → "1.1 µs"
    let parts: Vec<&str> = s
        .trim()
        .trim_matches(['[', ']'])
        .split_whitespace()
        .collect();
    match parts.as_slice() {
        [_, _, m, u, _, _] => format!("{m} {u}"),
        _ => s.trim().to_owned(),
    }
}

/// (rackboot MiB/s, nginx MiB/s) for a 64 MiB file.
/// `cargo xtask bench http`: only the wrk comparison, printed (for iterating on image serving).
pub fn run_http_only() -> anyhow::Result<()> {
    let bin = release_binary(&crate::root())?;
    let (rb, nginx) = http_compare(&bin)?;
    println!(
        "rackboot /images: {rb:.0} MiB/s, nginx: {nginx:.0} MiB/s, ratio {:.2}",
        rb / nginx.max(1.0)
    );
    Ok(())
}

/// `cargo xtask bench boot`: only the boot-time comparison, printed.
pub fn run_boot_only() -> anyhow::Result<()> {
    let bin = release_binary(&crate::root())?;
    let (rb, peer) = boot_compare(&bin)?;
    println!(
        "boot (median of 3): rackboot {rb:.1} s, dnsmasq + nginx {peer:.1} s, ratio {:.2}",
        rb / peer.max(0.001)
    );
    Ok(())
}

fn http_compare(bin: &Path) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("initrd-64m.img");
    run(Command::new("sh").arg("-c").arg(format!(
        "head -c 67108864 /dev/urandom > {}",
        file.display()
    )))?;

    let ns = Netns::new("bhttp")?;
    let rb = Rackboot::start_with(&ns, bin)?;
    run(Command::new(bin)
        .args(["image", "import", "--data-dir"])
        .arg(rb.data_dir.path())
        .arg("big")
        .arg(&file))?;
    let rb_rate = wrk(&ns, "http://192.0.2.1/images/big")?;
    drop(rb);

    let server = nginx(&ns, dir.path(), "192.0.2.1:8080", 2)?;
    std::thread::sleep(Duration::from_secs(1));
    let nginx_rate = wrk(&ns, "http://192.0.2.1:8080/initrd-64m.img");
    drop(server);
    Ok((rb_rate, nginx_rate?))
}

fn wrk(ns: &Netns, url: &str) -> anyhow::Result<f64> {
    let out = ns.cmd("wrk").args(["-t2", "-c50", "-d10s", url]).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("Transfer/sec:"))
        .context("wrk printed no Transfer/sec")?;
    let v = line.trim_start_matches("Transfer/sec:").trim();
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.trim().parse().unwrap_or(0.0);
    Ok(match unit.trim() {
        "GB" => n * 1024.0,
        "MB" => n,
        "KB" => n / 1024.0,
        _ => n / (1024.0 * 1024.0),
    })
}

/// Boots a node `BOOTS` times in turn and returns the median seconds from QEMU start to the
/// node's userspace marker (TCG timing varies by a few percent from boot to boot).
fn median_boot(ns: &mut Netns, mac: &str) -> anyhow::Result<f64> {
    const BOOTS: usize = 3;
    let mut secs = Vec::with_capacity(BOOTS);
    for _ in 0..BOOTS {
        let started = std::time::Instant::now();
        let mut vm = qemu_tests::Qemu::start(ns, qemu_tests::Firmware::SeaBiosIpxe, mac)?;
        vm.wait_for("RACKBOOT-NODE-UP", Duration::from_secs(400))?;
        secs.push(started.elapsed().as_secs_f64());
    }
    eprintln!("boots: {secs:.1?}");
    secs.sort_by(f64::total_cmp);
    Ok(secs.get(BOOTS / 2).copied().unwrap_or(0.0))
}

/// Median seconds from QEMU start to the node's marker line: (rackboot, dnsmasq + nginx).
fn boot_compare(bin: &Path) -> anyhow::Result<(f64, f64)> {
    let image = crate::image::node()?;
    let mac = "52:54:00:dd:00:01";

    let mut ns = Netns::new("bboot")?;
    let rb = Rackboot::start_with(&ns, bin)?;
    rb.import_node_images()?;
    rb.register_node("x1000c0s0b0n0", 1, mac, "192.0.2.50")?;
    let rb_secs = median_boot(&mut ns, mac)?;
    drop(rb);
    drop(ns);

    let mut ns = Netns::new("bpeer")?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::copy(&image.kernel, d.join("vmlinuz"))?;
    std::fs::copy(&image.initrd, d.join("initrd.img"))?;
    std::fs::write(
        d.join("boot.ipxe"),
        "#!ipxe\nkernel --name kernel http://192.0.2.1:8080/vmlinuz initrd=initrd console=ttyS0 quiet\n\
         initrd --name initrd http://192.0.2.1:8080/initrd.img\nboot\n",
    )?;
    let server = nginx(&ns, d, "192.0.2.1:8080", 1)?;
    let dnsmasq = dnsmasq_pxe(
        &ns,
        d,
        "http://192.0.2.1:8080/boot.ipxe",
        "undionly.kpxe",
        &[
            "--dhcp-range=192.0.2.128,192.0.2.254,1h".into(),
            format!("--dhcp-host={mac},192.0.2.50"),
            "--tftp-root=/usr/lib/ipxe".into(),
        ],
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let peer = median_boot(&mut ns, mac);
    drop(dnsmasq);
    drop(server);
    let peer_secs = peer?;
    eprintln!("boot to userspace: rackboot {rb_secs:.1} s, dnsmasq + nginx {peer_secs:.1} s");
    Ok((rb_secs, peer_secs))
}
