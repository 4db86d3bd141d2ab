//! `cargo xtask bench federation`: the federation client against a large upstream.
//!
//! - The upstream is a second release rackboot in the same namespace on `192.0.2.1:8080`
//!   (DHCP, TFTP and identity off), filled through its API with `TOTAL` nodes: one SMD
//!   Components POST, one EthernetInterface POST and one BSS boot-parameters PUT per node
//!   (curl `--parallel`). `RACK` of them sit in `x1000c0`, the rest in `x1001c0`… `x1156c0`.
//! - The downstream is a release rackboot on `192.0.2.1:80`, federated with
//!   `RACKBOOT_UPSTREAM__SMD`, `XNAME_PREFIX=x1000c0` and a token file minted by the upstream.
//! - First sync (interval 1 h, so exactly one pull): from spawning the downstream to its
//!   `/rackboot/v1/upstream` showing `last_pull` and `RACK` upstream-owned components (polled
//!   every 50 ms), and on the server's own clock from its log (`federated with an upstream` →
//!   the debug line `upstream pull`). Afterwards the downstream must hold exactly the rack.
//! - Steady state (restart on the same data dir, interval 1 s): every pull's stats and
//!   duration from the debug log, and the SQLite files (`rackboot.db`, `rackboot.db-wal`)
//!   compared by size, mtime and SHA-256 across several pulls.
//! - Outbox: the upstream is SIGKILLed, `BACKLOG` RedfishEndpoints are created on the downstream
//!   in one request (each queues one outbox row), the upstream is restarted on its data dir,
//!   and the outbox is polled until empty; the upstream must then hold exactly those endpoints.

mod measure;
mod report;
mod setup;

use std::fs;
use std::path::Path;

use anyhow::{Context, bail};
use qemu_tests::Netns;

use measure::{check_rack, drain, first_sync, steady};
use report::markdown;
use setup::{Node, Server, fill, in_prefix, mint, nodes};

/// The section's heading in docs/benchmarks.md.
pub const HEADING: &str = "## Federation";

/// Nodes upstream (one Component, one EthernetInterface, one boot-parameters object each).
const TOTAL: usize = 10_000;
/// Nodes in the downstream's scope.
const RACK: usize = 64;
const PREFIX: &str = "x1000c0";
/// RedfishEndpoints queued while the upstream is down.
const BACKLOG: usize = 10_000;
const UP: &str = "192.0.2.1:8080";
const DOWN: &str = "192.0.2.1";
/// Steady-state pulls observed (after the first one of the restarted downstream).
const STEADY_PULLS: usize = 8;
/// Targets from the issue.
const FIRST_SYNC_TARGET_S: f64 = 10.0;
const STEADY_TARGET_S: f64 = 1.0;

/// Starts both servers, runs every measurement; the markdown section.
pub fn section(_root: &Path, rackboot: &Path) -> anyhow::Result<String> {
    let ns = Netns::new("bfed")?;
    let nodes = nodes();
    let rack: Vec<&Node> = nodes
        .iter()
        .filter(|n| in_prefix(&n.xname, PREFIX))
        .collect();
    if rack.len() != RACK {
        bail!("{} nodes in {PREFIX}, wanted {RACK}", rack.len());
    }

    crate::stage(&format!(
        "federation: upstream rackboot on {UP} with {TOTAL} nodes ({RACK} in {PREFIX})"
    ));
    let mut up = Server::new(
        &ns,
        rackboot,
        UP,
        &[
            ("RACKBOOT_HTTP_LISTEN", UP),
            ("RACKBOOT_LISTEN__DHCP_PORT", "0"),
            ("RACKBOOT_LISTEN__TFTP_PORT", "0"),
            ("RACKBOOT_DNS__ENABLED", "false"),
            ("RACKBOOT_IDENTITY__ENABLED", "false"),
        ],
    )?;
    up.start()?;
    let fill_s = fill(&up, &nodes)?;
    eprintln!("filled the upstream in {fill_s:.1} s");

    let work = tempfile::tempdir()?;
    let token_file = work.path().join("upstream.token");
    fs::write(&token_file, mint(rackboot, up.data_dir.path(), "2h")?)?;
    let token_path = token_file.to_str().context("token path")?.to_owned();
    let env = |interval: &'static str| {
        vec![
            ("RACKBOOT_UPSTREAM__SMD", "http://192.0.2.1:8080"),
            ("RACKBOOT_UPSTREAM__XNAME_PREFIX", PREFIX),
            ("RACKBOOT_UPSTREAM__TOKEN_FILE", token_path.as_str()),
            ("RACKBOOT_UPSTREAM__INTERVAL", interval),
        ]
    };

    crate::stage("federation: first sync (downstream start → the rack mirrored)");
    let mut down = Server::new(&ns, rackboot, DOWN, &env("1h"))?;
    let (first, checked) = first_sync(&mut down, &up, &rack, fill_s)?;
    eprintln!(
        "first sync: {:.2} s from spawn (server: pull {:?} s, process {:?} s); {checked}",
        first.external_s, first.server_pull_s, first.server_total_s
    );

    crate::stage("federation: steady state (interval 1 s, no upstream change)");
    down.env = env("1s")
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let steady = steady(&mut down)?;
    eprintln!(
        "steady: {} pulls, written {:?}, durations {:?}",
        steady.pulls.len(),
        steady.pulls.iter().map(|p| p.written).collect::<Vec<_>>(),
        steady.durations
    );
    check_rack(&down, &rack)?;

    crate::stage(&format!(
        "federation: outbox drain of {BACKLOG} RedfishEndpoints after an upstream outage"
    ));
    let drain = drain(&down, &mut up)?;
    eprintln!(
        "drain: {:.1} s wait, {:.1} s drain ({:.0}/s), pushed {}",
        drain.wait_s,
        drain.drain_s,
        drain.first_depth as f64 / drain.drain_s.max(0.001),
        drain.pushed
    );
    Ok(markdown(&first, &checked, &steady, &drain))
}
