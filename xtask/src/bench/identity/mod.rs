//! `cargo xtask bench identity`: node enrollments per second against the raw ECDSA P-256
//! signing rate measured in the same run, and the enroll latency with 200 nodes at once.
//!
//! - A fresh release rackboot on `198.18.0.1/16` (its DHCP pool is the upper half; the nodes
//!   sit at `198.18.64.10` and up, below it) with `NODES` nodes registered through the API:
//!   one SMD Components POST, one EthernetInterface POST each (curl `--parallel`), one BSS
//!   boot-parameters row for every MAC.
//! - Every node's join token is minted once (untimed) through the admin API
//!   (`POST /identity/v1/join-tokens`), bound to its inventory address: the boot path hands a
//!   token only to the node itself after its DHCP ACK.
//! - A client namespace holds every node address; the server namespace routes the node range
//!   via the client's own address, so replies need one neighbour entry instead of `NODES`
//!   (the kernel's neighbour table is shared by all namespaces and holds 1,024 by default).
//! - `appliance/examples/enroll_bench.rs` runs there: keys, CSRs and clients are made first,
//!   then `CONCURRENCY` workers enroll every node over HTTPS, each from its own address on a
//!   new connection. Afterwards the admin API must list `NODES` certificates.
//! - `openssl speed -seconds 3 ecdsap256`, one process and `-multi 2`, right before.
//!
//! With `RACKBOOT_BENCH_PERF=<file>` set, rackboot runs under `perf record` during the timed
//! part (numbers then include the profiler's overhead; the section says so).

mod measure;
mod report;
mod setup;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use crate::run::run;

use measure::measure;
use report::markdown;

/// The section's heading in docs/benchmarks.md.
pub const HEADING: &str = "## Identity: enrollment";

/// Nodes enrolled in the timed part (each once, with its own token and key).
const NODES: usize = 4000;
/// Enrollments in flight at once.
const CONCURRENCY: usize = 200;
const SERVER_CIDR: &str = "198.18.0.1/16";
const SERVER: &str = "198.18.0.1";
/// The client namespace's own address: the server's route to the node range.
const CLIENT: &str = "198.18.0.2";
/// The nodes' inventory addresses: `FIRST_NODE`, `FIRST_NODE + 1`, … inside `NODE_NET`.
const NODE_NET: &str = "198.18.64.0/18";
const FIRST_NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 64, 10);

/// Builds the load generator, runs everything; the markdown section.
pub fn section(root: &Path, rackboot: &Path) -> anyhow::Result<String> {
    run(Command::new(env!("CARGO")).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "appliance",
        "--example",
        "enroll_bench",
    ]))?;
    let gen_bin = root.join("target/release/examples/enroll_bench");
    let m = measure(rackboot, &gen_bin)?;
    Ok(markdown(&m))
}
