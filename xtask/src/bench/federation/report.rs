//! Report: the markdown section for docs/benchmarks.md.

use std::fmt::Write as _;

use super::measure::{Drain, FirstSync, Steady, median};
use super::{BACKLOG, FIRST_SYNC_TARGET_S, HEADING, PREFIX, RACK, STEADY_TARGET_S, TOTAL};

fn yes_no(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**missed**" }
}

pub(super) fn markdown(first: &FirstSync, checked: &str, steady: &Steady, drain: &Drain) -> String {
    let steady_written: u64 = steady.pulls.iter().map(|p| p.written + p.deleted).sum();
    let steady_max = steady.durations.iter().copied().fold(f64::NAN, f64::max);
    let steady_med = median(&steady.durations);
    let files_same = steady.files_before == steady.files_after;
    let rate = drain.first_depth as f64 / drain.drain_s.max(0.001);
    let opt = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2} s"));
    let mut s = format!(
        "{HEADING}\n\n\
         `cargo xtask bench federation`: two release rackboots in one namespace. The **upstream** \
         (`192.0.2.1:8080`, DHCP/TFTP/identity off) is filled through its API with **{TOTAL} nodes**: \
         {TOTAL} Components (one SMD POST), {TOTAL} EthernetInterfaces (one POST each) and {TOTAL} \
         BSS boot-parameters objects (one PUT per node, `hosts` + `macs`); {RACK} nodes are in \
         `{PREFIX}`, the rest spread over `x1001c0`…`x1156c0` (fill: {:.1} s). The **downstream** \
         (`192.0.2.1:80`) is federated with `RACKBOOT_UPSTREAM__SMD=http://192.0.2.1:8080`, \
         `XNAME_PREFIX={PREFIX}` and a token file; `RACKBOOT_LOG=info,rackboot=debug`.\n\n\
         | measurement | result | target |\n|---|---|---|\n",
        first.fill_s
    );
    let _ = writeln!(
        s,
        "| first sync, interval 1 h: spawn → `/rackboot/v1/upstream` shows `last_pull` and {RACK} \
         upstream-owned components (polled every 50 ms, {} polls) | **{:.2} s** (server log: pull {}, \
         process start → pull done {}) | ≤ {FIRST_SYNC_TARGET_S:.0} s: {} |",
        first.polls,
        first.external_s,
        opt(first.server_pull_s),
        opt(first.server_total_s),
        yes_no(first.external_s <= FIRST_SYNC_TARGET_S)
    );
    let _ = writeln!(
        s,
        "| steady state, interval 1 s, no upstream change: rows written + deleted over {} pulls | \
         **{steady_written}** (`last_pull_stats` {}) | 0: {} |",
        steady.pulls.len(),
        steady.status_stats,
        yes_no(steady_written == 0)
    );
    let _ = writeln!(
        s,
        "| steady state: time per pull (first: `federated` → `upstream pull`; then the gap between \
         consecutive `upstream pull` lines less the 1 s interval) | **median {:.0} ms, max {:.0} ms** \
         | < {STEADY_TARGET_S:.0} s: {} |",
        steady_med * 1000.0,
        steady_max * 1000.0,
        yes_no(steady_max < STEADY_TARGET_S)
    );
    let _ = writeln!(
        s,
        "| steady state: `rackboot.db` and `rackboot.db-wal` (size, mtime, SHA-256) across {} pulls | \
         **{}** | unchanged |",
        steady.pulls_between,
        if files_same { "unchanged" } else { "changed" }
    );
    let _ = writeln!(
        s,
        "| outbox: {BACKLOG} RedfishEndpoints queued during an upstream outage, upstream restarted: \
         from the first batch seen delivered (depth {}) to empty | **{:.1} s, {rate:.0} events/s** \
         | reported |",
        drain.first_depth, drain.drain_s
    );
    let _ = writeln!(
        s,
        "| outbox: upstream spawn → first delivery seen (restart + the deliverer's back-off) | \
         {:.1} s ({:.1} s spawn → empty) | reported |",
        drain.wait_s, drain.total_s
    );
    let _ = writeln!(
        s,
        "\nChecked in the run: after the first sync the downstream holds {checked}, nothing out of \
         scope (and again after the steady-state pulls). The backlog: {}; `outbox_depth` was \
         {} before the upstream came back, and afterwards the upstream held exactly {} \
         RedfishEndpoints, one per queued ID.",
        drain.create_note, drain.depth_before, drain.upstream_endpoints
    );
    if let Some(p) = first.pull {
        let _ = writeln!(
            s,
            "\nFirst pull's stats: written {}, deleted {}, unchanged {}; `upstream_owned` \
             afterwards: {}.",
            p.written, p.deleted, p.unchanged, first.owned
        );
    }
    let _ = writeln!(
        s,
        "\nLoad average (1/5/15 min, {} CPUs) when each part started: first sync {}, steady \
         state {}, outbox {}. The two rackboots, curl and anything else running share the CPUs, \
         so a busy machine lengthens the times.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        first.load,
        steady.load,
        drain.load
    );
    let _ = writeln!(
        s,
        "\nWhat one pull fetches (curl from the namespace, median of 3):\n\n| upstream GET | bytes | seconds |\n|---|---|---|"
    );
    for (path, bytes, secs) in &first.gets {
        let _ = writeln!(s, "| `{path}` | {bytes} | {secs:.3} |");
    }
    let _ = writeln!(
        s,
        "\nSteady-state pulls (written/deleted/unchanged): {}. Per-pull seconds: {}.",
        steady
            .pulls
            .iter()
            .map(|p| format!("{}/{}/{}", p.written, p.deleted, p.unchanged))
            .collect::<Vec<_>>()
            .join(", "),
        steady
            .durations
            .iter()
            .map(|d| format!("{d:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !files_same {
        let _ = writeln!(
            s,
            "\nStore files before: {:?}; after: {:?}.",
            steady.files_before, steady.files_after
        );
    }
    let _ = writeln!(
        s,
        "\nDeliverer during the outage (`outbox delivery failed`, retry_in): {}. After the drain \
         `/rackboot/v1/upstream` reported `pushed` = {} (for {BACKLOG} delivered).",
        if drain.backoff_lines.is_empty() {
            "none logged".to_owned()
        } else {
            drain.backoff_lines.join(", ")
        },
        drain.pushed
    );
    if !drain.drained_lines.is_empty() {
        let _ = writeln!(
            s,
            "\n`outbox drained to the upstream` lines: {}.",
            drain.drained_lines.len()
        );
    }
    s
}
