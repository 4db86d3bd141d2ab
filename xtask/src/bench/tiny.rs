//! `cargo xtask bench tiny`: the embedded profile (`rackboot-tiny`): its static RAM, its
//! executor's stack high-water mark, and its boot time next to `rackboot serve`'s for the same
//! node.
//!
//! - Static RAM: `.data` and `.bss` of the release binary (`size -A`), the std runtime's own
//!   included; `.data.rel.ro` is listed apart (read-only after relocation: flash on a board).
//!   Configured for 64 reservations, 4 concurrent TFTP transfers, 2 HTTP connections; the boot
//!   files' bytes are not in RAM (read from flash in 4 KiB chunks).
//! - Stack: the executor thread's stack is painted before the executor starts; after the boots
//!   the profile scans for the deepest overwritten byte (`/tiny/stats`).
//! - Boot time: QEMU (TCG) SeaBIOS + iPXE, from QEMU's start to the node's userspace marker,
//!   median of three boots, each server with the same kernel, initrd and reservation.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use qemu_tests::{Netns, Rackboot, TINY_BRIDGE, Tiny};

use crate::run::{output, run};

/// The section's heading in docs/benchmarks.md.
pub const HEADING: &str = "## Embedded profile (rackboot-tiny)";

const MAC: &str = "52:54:00:dd:00:02";
const IP: &str = "192.0.2.50";
const XNAME: &str = "x1000c0s0b0n0";

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

    crate::stage("boot: SeaBIOS+iPXE node from rackboot-tiny");
    let mut ns = Netns::with_address("btiny", TINY_BRIDGE)?;
    let (dir, flash) = Tiny::provision()?;
    Tiny::reserve(&flash, MAC, IP, XNAME, 1)?;
    let t = Tiny::start_bin(&mut ns, &tiny, dir, flash)?;
    let tiny_secs = super::median_boot(&mut ns, MAC)?;
    let stats = t.stats_in(&ns)?;
    drop(t);
    drop(ns);

    crate::stage("boot: the same node from rackboot serve");
    let mut ns = Netns::new("btinyrb")?;
    let rb = Rackboot::start_with(&ns, bin)?;
    rb.import_node_images()?;
    rb.register_node(XNAME, 1, MAC, IP)?;
    let rb_secs = super::median_boot(&mut ns, MAC)?;
    drop(rb);
    drop(ns);

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
         | executor stack high-water mark (painted stack, after three boots) | {:.1} KiB | — |\n\
         | allocations in the boot path (profile, pxe-core, embassy-net, smoltcp) | {} | 0 |\n\
         | allocations in the hosted stand-ins (TAP driver; reactor and timer threads) | {} ; {} | — (a board has none) |\n\
         | boot to userspace, rackboot-tiny (median of 3) | {tiny_secs:.1} s | |\n\
         | boot to userspace, `rackboot serve` (median of 3) | {rb_secs:.1} s | |\n\
         | ratio tiny / serve | **{:.2}** | ≤ 1.1 |\n",
        kib(ram),
        kib(relro),
        kib(stats.stack_high_water),
        stats.own,
        stats.tap,
        stats.other_threads,
        tiny_secs / rb_secs.max(0.001)
    );
    let _ = writeln!(
        s,
        "Method: static RAM is what the binary reserves before it runs (every buffer is sized at \
         compile time; the boot files' bytes are read from flash in 4 KiB chunks and never held). \
         The stack is painted with 0xA5 below the point where the executor starts and scanned for \
         the deepest overwritten byte. Boot time runs from QEMU's start to the node's \
         `RACKBOOT-NODE-UP` line (QEMU TCG, SeaBIOS + iPXE ROM), three boots per server, the \
         median reported; TCG timing varies by a few percent between runs."
    );
    Ok(s)
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
