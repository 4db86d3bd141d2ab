//! Report: the markdown section for docs/benchmarks.md.

use std::fmt::Write as _;

use serde_json::Value;

use super::measure::Measured;
use super::{CONCURRENCY, HEADING, NODES};

fn num(v: &Value, path: &[&str]) -> f64 {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

pub(super) fn markdown(m: &Measured) -> String {
    let l = &m.load;
    let ok = num(l, &["ok"]);
    let rate = num(l, &["enroll_per_s"]);
    let wall = num(l, &["wall_s"]);
    let server_cpu = num(l, &["server_cpu_s"]);
    let client_cpu = num(l, &["client_cpu_s"]);
    let machine_cpu = num(l, &["machine_cpu_s"]);
    let cpus = num(l, &["cpus"]).max(1.0);
    let others = (machine_cpu - server_cpu - client_cpu).max(0.0);
    let per_server_cpu = ok / server_cpu.max(1e-9);
    let us = |cpu: f64| 1e6 * cpu / ok.max(1.0);
    // The floor of the server's own public-key work per enrollment at openssl's one-core
    // rates: two signatures (TLS CertificateVerify, the certificate) and one verification (CSR).
    let crypto_us = 2e6 / m.single.sign + 1e6 / m.single.verify;
    let ceiling = (1e6 / crypto_us) / m.single.sign;
    let lat = |k: &str| num(l, &["latency_ms", k]);
    let tcp = |side: usize| {
        let c = |i: usize| m.tcp.get(side).and_then(|v| v.get(i)).copied().unwrap_or(0);
        format!(
            "{} / {} / {} / {} / {} / {}",
            c(0),
            c(1),
            c(2),
            c(3),
            c(4),
            c(5)
        )
    };
    let mut s = format!(
        "{HEADING}\n\n\
         `cargo xtask bench identity`: {NODES} registered nodes, each with a join token from its \
         own boot script (fetched before the clock starts), enroll once each with \
         `POST /identity/v1/enroll`, **{CONCURRENCY} in flight**, against a fresh release \
         rackboot (default identity settings: policy `token`). The load generator, \
         `appliance/examples/enroll_bench.rs`, makes every node's P-256 key, CSR and HTTPS client \
         first (trusting only the rack CA, bound to the node's inventory address, which the token \
         demands); then each enrollment is a new TCP connection from that address, a full TLS \
         1.3 handshake, the request and the whole answer. One enrollment on the server: the TLS \
         handshake (key exchange, an ECDSA P-256 CertificateVerify signature with the server \
         key), the token lookup, the CSR's signature verification and name checks, the node \
         lookup, signing the certificate, and one durable SQLite write (WAL, synchronous=FULL, \
         group-committed) that uses up the token, records the certificate and appends the audit \
         entry in one transaction; then the timeline event. A run counts only if every \
         enrollment answered 200 `issued` with a certificate for the key sent, and the admin API \
         then lists {NODES} certificates.{}\n\n\
         | measure | value |\n|---|---|\n",
        if m.profiled {
            " **This run was profiled (`RACKBOOT_BENCH_PERF`): perf's overhead is in the numbers.**"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "| enrollments | {ok:.0} of {NODES} in {wall:.2} s |\n\
         | **enrollments/s** (wall clock) | **{rate:.0}** |\n\
         | enroll latency at {CONCURRENCY} in flight: p50 / p90 / **p99** / max | {:.1} / {:.1} / **{:.1}** / {:.1} ms |\n\
         | enrollments that took ≥ 1 s | {:.0} |\n\
         | rackboot CPU per enrollment (user + system, all threads) | {:.0} µs |\n\
         | load generator CPU per enrollment (TLS client, same machine) | {:.0} µs |\n\
         | enrollments per rackboot CPU-second | {per_server_cpu:.0} |\n\
         | openssl ECDSA P-256, one process (one core) | {:.0} sign/s, {:.0} verify/s |\n\
         | openssl ECDSA P-256, `-multi 2` (both cores) | {:.0} sign/s, {:.0} verify/s |\n\
         | CPU busy during the timed part, of {:.1} CPU-s available | {machine_cpu:.1} s: rackboot {server_cpu:.1}, load generator {client_cpu:.1}, other processes {others:.1} (load average {} before) |\n\
         | TCP during the timed part, rackboot's namespace: listen overflows / listen drops / SYN retransmits / retransmitted segments / tail loss probes / retransmission timeouts | {} |\n\
         | the same, load generator's namespace | {} |\n\
         | packets dropped at a full CPU input queue (whole machine) | {} |",
        lat("p50"),
        lat("p90"),
        lat("p99"),
        lat("max"),
        num(l, &["over_1s"]),
        us(server_cpu),
        us(client_cpu),
        m.single.sign,
        m.single.verify,
        m.multi.sign,
        m.multi.verify,
        wall * cpus,
        m.load_avg,
        tcp(0),
        tcp(1),
        m.backlog_drops,
    );
    let _ = write!(
        s,
        "\nRatios (target ≥ 0.5 of raw signing):\n\n\
         - **Wall clock, both cores: {:.3}** = enrollments/s ÷ `-multi 2` sign/s. rackboot's tokio \
         runtime has a worker per core, so it is compared with openssl on both cores; but the \
         load generator's {CONCURRENCY} TLS clients run on the same cores ({:.0}% of the CPU \
         the two used), and so does anything else running on the machine, so this understates \
         the server.\n\
         - **Per core, server only: {:.3}** = enrollments per rackboot CPU-second ÷ one-process \
         sign/s. This is the like-for-like figure: the server's CPU cost of an enrollment against \
         the cost of one signature on one core, independent of where the clients run and of \
         other load on the machine.\n\n\
         Ceiling: the server's public-key work alone (two P-256 signatures and one verification \
         at openssl's one-core rates: {crypto_us:.0} µs) caps the per-core ratio at **{ceiling:.2}** \
         before any key exchange, X.509, HTTP or SQLite work, as long as each enrollment is a new \
         TLS handshake: the 0.5 target cannot be met by any server doing these three operations \
         per enrollment. To see where rackboot's time goes, \
         `RACKBOOT_BENCH_PERF=/tmp/enroll.perf cargo xtask bench identity`, then \
         `perf report -i /tmp/enroll.perf`. Setup (registering {NODES} nodes and fetching their \
         boot scripts) took {:.1} s and is not timed.\n",
        rate / m.multi.sign.max(1.0),
        100.0 * client_cpu / (client_cpu + server_cpu).max(1e-9),
        per_server_cpu / m.single.sign.max(1.0),
        m.setup_s,
    );
    s
}
