//! `cargo xtask bench tiny`: the embedded profile (`rackboot-tiny`): its static RAM, its
//! executor's stack high-water mark, and its boot time next to `rackboot serve`'s for the same
//! node.
//!
//! - Static RAM: `.data` and `.bss` of the release binary (`size -A`), the std runtime's own
//!   included; `.data.rel.ro` is listed apart (read-only after relocation: flash on a board).
//!   Configured for 64 reservations, 4 concurrent TFTP transfers, 2 HTTP connections; the boot
//!   files' bytes are not in RAM (read from flash straight into the TCP send buffer).
//! - Stack: the executor thread's stack is painted before the executor starts; after the boots
//!   the profile scans for the deepest overwritten byte (`/tiny/stats`).
//! - Boot time: QEMU (TCG) SeaBIOS + iPXE, from QEMU's start to the node's userspace marker,
//!   each server with the same kernel, initrd and reservation. Both servers run at once in
//!   namespaces of their own and the boots alternate between them, so that both see the same
//!   load from the rest of the machine (it is shared); median of [`BOOTS`] each. The load
//!   average at the start and the end goes into the report.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use qemu_tests::{Firmware, Netns, Qemu, Rackboot, TINY_BRIDGE, Tiny};

use crate::run::{output, run};

/// The section's heading in docs/benchmarks.md.
pub const HEADING: &str = "## Embedded profile (rackboot-tiny)";

const MAC: &str = "52:54:00:dd:00:02";
const IP: &str = "192.0.2.50";
const XNAME: &str = "x1000c0s0b0n0";
/// Boots per server: TCG boot times on a shared machine vary by tens of percent.
const BOOTS: usize = 5;

pub fn section(root: &Path, bin: &Path) -> anyhow::Result<String> {
    crate::stage("build rackboot-tiny (release)");
    run(Command::new(env!("CARGO")).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "rackboot-tiny",
    ]))?;
    let tiny = crate::release::target_dir().join("release/rackboot-tiny");
    let sections = static_ram(&tiny)?;
    let get = |name: &str| {
        sections
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    };
    let (data, bss, tdata, tbss, relro) = (
        get(".data"),
        get(".bss"),
        get(".tdata"),
        get(".tbss"),
        get(".data.rel.ro"),
    );
    let ram = data + bss + tdata + tbss;

    crate::stage("start rackboot-tiny and rackboot serve, each in a namespace of its own");
    let load_before = loadavg();
    let mut tns = Netns::with_address("btiny", TINY_BRIDGE)?;
    let (dir, flash) = Tiny::provision()?;
    Tiny::reserve(&flash, MAC, IP, XNAME, 1)?;
    let t = Tiny::start_bin(&mut tns, &tiny, dir, flash)?;
    let mut rns = Netns::new("btinyrb")?;
    let rb = Rackboot::start_with(&rns, bin)?;
    rb.import_node_images()?;
    rb.register_node(XNAME, 1, MAC, IP)?;

    let (mut tiny_boots, mut rb_boots) = (Vec::new(), Vec::new());
    for i in 1..=BOOTS {
        crate::stage(&format!(
            "boot {i}/{BOOTS}: rackboot-tiny, then rackboot serve"
        ));
        tiny_boots.push(boot_secs(&mut tns)?);
        rb_boots.push(boot_secs(&mut rns)?);
        eprintln!("tiny {tiny_boots:.1?}\nserve {rb_boots:.1?}");
    }
    let stats = t.stats_in(&tns)?;
    let load_after = loadavg();
    drop((t, rb));
    drop((tns, rns));
    let (tiny_secs, rb_secs) = (median(&tiny_boots), median(&rb_boots));
    let list = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };

    let kib = |b: u64| b as f64 / 1024.0;
    let mut s = String::new();
    let _ = writeln!(s, "{HEADING}\n");
    let _ = writeln!(
        s,
        "pxe-core's DHCP and TFTP engines and the HTTP responder on embassy-net (smoltcp) over a TAP, \
         configured for 64 reservations, a 64-address pool, 128 stored leases, 4 concurrent TFTP \
         transfers and 2 HTTP connections (`tiny/src/serve.rs`). Release build.\n"
    );
    let _ = writeln!(
        s,
        "| measure | value | target |\n|---|---|---|\n\
         | static RAM: `.data` + `.bss` (+ `.tdata` + `.tbss`), from `size -A` | {:.1} KiB ({data} + {bss} + {tdata} + {tbss} bytes) | ≤ 256 KiB |\n\
         | `.data.rel.ro` (read-only after relocation; flash on a board) | {:.1} KiB | — |\n\
         | executor stack high-water mark (painted stack, after {BOOTS} boots) | {:.1} KiB | — |\n\
         | allocations in the boot path (profile, pxe-core, embassy-net, smoltcp) | {} | 0 |\n\
         | allocations in the hosted stand-ins (TAP driver; reactor and timer threads) | {} ; {} | — (a board has none) |\n\
         | boot to userspace, rackboot-tiny (median of {BOOTS}; boots: {}) | {tiny_secs:.1} s | |\n\
         | boot to userspace, `rackboot serve` (median of {BOOTS}; boots: {}) | {rb_secs:.1} s | |\n\
         | ratio tiny / serve | **{:.2}** | ≤ 1.1 |\n",
        kib(ram),
        kib(relro),
        kib(stats.stack_high_water),
        stats.own,
        stats.tap,
        stats.other_threads,
        list(&tiny_boots),
        list(&rb_boots),
        tiny_secs / rb_secs.max(0.001)
    );
    let _ = writeln!(
        s,
        "Method: static RAM is what the binary reserves before it runs (every buffer is sized at \
         compile time; the boot files' bytes are read from flash straight into the TCP send \
         buffer and never held). The stack is painted with 0xA5 below the point where the \
         executor starts and scanned for the deepest overwritten byte. Boot time runs from QEMU's \
         start to the node's `RACKBOOT-NODE-UP` line (QEMU TCG, SeaBIOS + iPXE ROM). Both servers \
         run at once, each in a namespace of its own, and the boots alternate between them \
         (tiny, serve, tiny, …) so that both see the same load from the rest of the machine; \
         {BOOTS} boots per server, the median reported. Load average (1, 5, 15 min) at the start: \
         {load_before}; at the end: {load_after} (on {} CPUs, shared with other work). Under \
         TCG a boot's time follows the machine's load by tens of percent; compare the two \
         columns of one run, never figures from different runs.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(s, "\n{WHERE_THE_TIME_GOES}");
    Ok(s)
}

/// What a packet capture on the bridge showed (a one-off measurement, kept with the figures).
const WHERE_THE_TIME_GOES: &str = "Where the time goes (tcpdump on the bridge, one boot per \
server, 2026-12-02): QEMU's iPXE ROM runs DHCP 2–5 s after QEMU's start (iPXE's own retry \
schedule), then sends nothing but two IPv6 router solicitations for ~13 s before its first \
HTTP request (the same for both servers: a cost of the node, not of the server); this path has \
no TFTP. The phases differ only in HTTP (boot script, 8.2 MB kernel, 1.1 MB initrd): 0.17 s \
from rackboot-tiny and 0.26 s from `rackboot serve` (a debug build in this probe) at load 5. \
At load ~14, with the 16 KiB TCP send buffer rackboot-tiny had then, the kernel alone took \
11.9 s (0.7 MB/s) against 3.1 s for kernel and initrd from `rackboot serve` (Linux TCP, up to \
256 KiB in flight): the window was full 93 % of the time, waiting for ACKs from a QEMU short \
of CPU (8 ms median, 48 ms p90 each), so every 16 KiB cost a round trip. rackboot-tiny's own \
turnaround from an ACK to its next segment stayed under 0.1 ms (p99), which rules out the TAP \
driver's wakeups and embassy-time's granularity. Since then each HTTP connection has a 48 KiB \
send buffer, filled from flash in place: three times the data per round trip. It is no proven \
cure: in 5 boots each at load ~12, alternating the 16 KiB and 48 KiB builds, the kernel's \
transfer took 0.15–2.4 s and 0.5–4.7 s, with no retransmission: on a loaded machine the node's \
share of CPU decides, whatever the buffer.";

/// Seconds from QEMU's start to the node's userspace marker, for one boot in `ns`.
fn boot_secs(ns: &mut Netns) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut vm = Qemu::start(ns, Firmware::SeaBiosIpxe, MAC)?;
    vm.wait_for("RACKBOOT-NODE-UP", Duration::from_secs(400))?;
    Ok(started.elapsed().as_secs_f64())
}

fn median(v: &[f64]) -> f64 {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|_| "unknown".into())
}

/// (section, bytes) of `bin` from `size -A`.
fn static_ram(bin: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    let text = output(Command::new("size").arg("-A").arg(bin)).context("size (binutils)")?;
    let rows: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let name = w.next()?;
            let size = w.next()?.parse().ok()?;
            name.starts_with('.').then(|| (name.to_owned(), size))
        })
        .collect();
    if rows.is_empty() {
        bail!("size -A printed no sections:\n{text}");
    }
    Ok(rows)
}
