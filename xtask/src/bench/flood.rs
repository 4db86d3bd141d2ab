//! `cargo xtask bench flood`: a DHCP flood from random MACs on a federated rack
//! (`qemu_tests::flood`, the scenario of `qemu-tests/tests/flood.rs`, with the release binary):
//! what perfdhcp sustained, what reached the upstream, the downstream's memory, threads and
//! tasks, the lookup outcomes and drops, and whether the known node got its lease.

use std::fmt::Write as _;
use std::path::Path;

use qemu_tests::flood::{FloodConfig, run};

/// The section's heading in docs/benchmarks.md.
pub const HEADING: &str = "## DHCP flood on a federated rack";

pub fn section(_root: &Path, bin: &Path) -> anyhow::Result<String> {
    let cfg = FloodConfig {
        discovers: 300_000,
        rate: 5_000,
        lookup_rate: 20.0,
        lookup_burst: 20,
    };
    let r = run(bin, &cfg)?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{HEADING}\n\n\
         perfdhcp (relay mode, DISCOVER-OFFER only, `-R {n}` random MACs, `-r {rate}`) against a \
         release rackboot federated to a second release rackboot (`lookup_rate = {lr}`, \
         `lookup_burst = {lb}`, `lookup_concurrency = 8`), while udhcpc with an inventory MAC asks \
         for its lease. Upstream lookups are the SMD requests the upstream's own `/metrics` \
         counted from perfdhcp's start until the downstream had no lookup in flight; RSS and \
         threads from `/proc/<pid>/status`, tasks from `rackboot_tasks`, sampled every second.\n",
        n = cfg.discovers,
        rate = cfg.rate,
        lr = cfg.lookup_rate,
        lb = cfg.lookup_burst,
    );
    let secs = r.seconds.max(0.001);
    let _ = writeln!(
        s,
        "| measure | value |\n|---|---|\n\
         | DISCOVERs sent / OFFERs received | {} / {} |\n\
         | flood duration | {:.1} s ({:.0} DISCOVERs/s sustained) |\n\
         | lookups reaching the upstream | {} ({:.1}/s; limit {} + {}/s × {:.1} s = {:.0}) |\n\
         | RSS before → max during | {} → {} KiB |\n\
         | threads before → max | {} → {} |\n\
         | runtime tasks before → max | {} → {} |\n\
         | lookup outcomes | {} |\n\
         | DHCP drops | {} |\n\
         | known node's lease during the flood | {} |\n",
        r.perf.discovers,
        r.perf.offers,
        secs,
        r.perf.discovers as f64 / secs,
        r.upstream_lookups,
        r.upstream_lookups as f64 / secs,
        cfg.lookup_burst,
        cfg.lookup_rate,
        secs,
        f64::from(cfg.lookup_burst) + cfg.lookup_rate * secs,
        r.baseline_rss_kb,
        r.max_rss_kb,
        r.baseline_threads,
        r.max_threads,
        r.baseline_tasks,
        r.max_tasks,
        kv(&r.outcomes),
        kv(&r.drops),
        r.known_lease.as_deref().unwrap_or("none"),
    );
    Ok(s)
}

fn kv(m: &std::collections::BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
