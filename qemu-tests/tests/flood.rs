//! A DHCP flood of 100,000 DISCOVERs from random MACs on a federated rack (issue 14): the
//! upstream sees at most `lookup_rate` × elapsed + `lookup_burst` lookups, the downstream's
//! tasks and memory stay bounded, the refused lookups are counted, and a known node still gets
//! its lease during the flood. The scenario is `qemu_tests::flood` (also `cargo xtask bench
//! flood`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use qemu_tests::flood::{FloodConfig, KNOWN, run};
use qemu_tests::{have, preflight, rackboot_bin};

#[test]
fn a_dhcp_flood_from_random_macs_is_bounded_and_the_known_node_still_boots() {
    if !preflight(false) {
        return;
    }
    for tool in ["perfdhcp", "udhcpc"] {
        if !have(tool) {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{tool} missing (cargo xtask deps installs it)"
            );
            eprintln!("SKIPPED (not in CI): {tool} missing");
            return;
        }
    }
    let cfg = FloodConfig {
        discovers: 100_000,
        rate: 4_000,
        lookup_rate: 20.0,
        lookup_burst: 20,
    };
    let r = run(&rackboot_bin().unwrap(), &cfg).unwrap();
    let summary = format!("{r:#?}");
    let summary = summary.split("perfdhcp_output").next().unwrap_or("");
    eprintln!("{summary}");
    assert!(
        r.perf.discovers >= 100_000,
        "perfdhcp sent {} DISCOVERs:\n{}",
        r.perf.discovers,
        r.perfdhcp_output
    );
    // The upstream saw at most rate × elapsed + burst lookups (one SMD request each).
    let bound = cfg.lookup_rate * r.seconds + f64::from(cfg.lookup_burst);
    assert!(
        (r.upstream_lookups as f64) <= bound,
        "{} lookups reached the upstream in {:.1}s (limit {bound:.0})\n{summary}",
        r.upstream_lookups,
        r.seconds
    );
    assert!(r.upstream_lookups > 0, "no lookup at all\n{summary}");
    // Bounded: no task per DISCOVER (the old code spawned one per new MAC), no memory growth
    // with the flood (generous bounds for a debug build).
    assert!(r.max_tasks < 500, "{} tasks\n{summary}", r.max_tasks);
    assert!(
        r.max_rss_kb < 256 * 1024,
        "{} KiB RSS\n{summary}",
        r.max_rss_kb
    );
    // Refusals are counted.
    let refused: u64 = [
        "dropped_rate",
        "dropped_busy",
        "cached_negative",
        "in_flight",
    ]
    .iter()
    .filter_map(|o| r.outcomes.get(*o))
    .sum();
    assert!(
        r.outcomes.get("dropped_rate").copied().unwrap_or(0) > 0,
        "{summary}"
    );
    assert!(refused > 1000, "{summary}");
    // A DISCOVER whose lookup was refused is dropped for the client to retransmit (it may be a
    // node the upstream knows), not given a pool address: every refusal but the cached
    // negatives is a counted DHCP drop.
    let deferred = r.drops.get("lookup_deferred").copied().unwrap_or(0);
    let not_asked: u64 = ["dropped_rate", "dropped_busy", "in_flight"]
        .iter()
        .filter_map(|o| r.outcomes.get(*o))
        .sum();
    assert_eq!(deferred, not_asked, "{summary}");
    // The known node got its static lease during the flood.
    assert_eq!(r.known_lease.as_deref(), Some(KNOWN.2), "{summary}");
}
