//! Enrollment load for the identity benchmark (`cargo xtask bench identity`).
//!
//! ```text
//! enroll_bench --nodes FILE --url https://198.18.0.1 [--concurrency 200]
//!              [--ca-fingerprint sha256:HEX] [--server-pid PID]
//! ```
//!
//! `FILE` holds one node per line: `<inventory ip> <join token> <xname>` (tokens from the
//! nodes' boot scripts). Run it where every inventory address is local (the bench's client
//! namespace): each enrollment is sent from its node's own address, as the token demands.
//!
//! Before the clock starts, for every node: a P-256 key and a CSR for its xname (as
//! `rackboot agent enroll` makes them), the JSON body, and an HTTPS client bound to the node's
//! address that trusts only the rack CA (fetched from `/identity/v1/ca.pem`, its chain checked
//! and, with `--ca-fingerprint`, its root pinned). The timed part is `--concurrency` workers,
//! each taking the next node and doing one `POST /identity/v1/enroll` on a new connection
//! (TLS handshake included), reading the answer, and closing the connection; a node's latency
//! is from the start of its request to its whole answer.
//!
//! Prints one JSON object on stdout: total, ok, failed, first_error, concurrency, wall_s,
//! enroll_per_s, latency_ms {p50, p90, p99, max, mean}, over_1s (latencies of a second or
//! more), client_cpu_s, (with `--server-pid`) server_cpu_s, the server's user + system CPU
//! time during the timed part, and machine_cpu_s, the busy CPU time of the whole machine
//! (every process) in that time, with cpus, the number of CPUs. After the clock
//! stops every certificate is checked to be for the key its node sent. Exits non-zero if any
//! enrollment failed.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rackboot::identity::ca::{cert_key_and_serial, fingerprint, pem_certs, verify_ca_chain};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

#[derive(Parser, Debug)]
#[command(about = "Enroll many nodes at once against rackboot (benchmark load generator)")]
struct Args {
    /// Lines of `<ip> <token> <xname>`.
    #[arg(long)]
    nodes: PathBuf,
    /// rackboot's HTTPS URL (rackboot.url= of the boot scripts).
    #[arg(long)]
    url: String,
    /// Enrollments in flight at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// The root's fingerprint (rackboot.ca= of the boot scripts), checked like the agent does.
    #[arg(long)]
    ca_fingerprint: Option<String>,
    /// rackboot's pid, to report its CPU time during the timed part.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// One node, ready to enroll.
struct Job {
    xname: String,
    /// The raw public key the certificate must carry.
    public_key: Vec<u8>,
    body: String,
    http: reqwest::Client,
}

/// What one enrollment gave.
struct Outcome {
    latency: Duration,
    result: anyhow::Result<()>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

fn read_nodes(args: &Args) -> anyhow::Result<Vec<(Ipv4Addr, String, String)>> {
    let text = std::fs::read_to_string(&args.nodes)
        .with_context(|| format!("cannot read {}", args.nodes.display()))?;
    let mut nodes = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next(), w.next(), w.next()) {
            (None, ..) => continue,
            (Some(ip), Some(token), Some(xname), None) => {
                let ip: Ipv4Addr = ip
                    .parse()
                    .with_context(|| format!("line {}: bad address {ip:?}", n + 1))?;
                nodes.push((ip, token.to_owned(), xname.to_owned()));
            }
            _ => bail!(
                "{} line {}: expected `<ip> <token> <xname>`",
                args.nodes.display(),
                n + 1
            ),
        }
    }
    if nodes.is_empty() {
        bail!("{} lists no nodes", args.nodes.display());
    }
    Ok(nodes)
}

/// The CA chain, checked link by link and (when given) against the root's fingerprint.
async fn fetch_ca(url: &str, fp: Option<&str>) -> anyhow::Result<reqwest::Certificate> {
    // Not verified yet on purpose: what is fetched is checked below, as the agent does.
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let pem = http
        .get(format!("{url}/identity/v1/ca.pem"))
        .send()
        .await
        .with_context(|| format!("cannot reach rackboot at {url}"))?
        .error_for_status()?
        .text()
        .await?;
    let chain = pem_certs(&pem)?;
    verify_ca_chain(&chain).context("the CA chain rackboot served")?;
    if let Some(fp) = fp {
        let root = chain.last().context("empty CA chain")?;
        let got = fingerprint(root);
        if !got.eq_ignore_ascii_case(fp.trim()) {
            bail!("the CA rackboot served has fingerprint {got}, not {fp}");
        }
    }
    let first = chain.first().context("empty CA chain")?;
    Ok(reqwest::Certificate::from_der(first)?)
}

/// A key and a CSR for `xname`, as `rackboot agent enroll` makes them.
fn new_csr(xname: &str) -> anyhow::Result<(KeyPair, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![xname.to_owned()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, xname);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((key, csr))
}

/// User + system CPU seconds of process `pid` so far (all its threads, live and exited).
fn process_cpu_s(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("no process {pid}"))?;
    // The fields after the command name (which may hold spaces) start at state (field 3);
    // utime and stime are fields 14 and 15, in USER_HZ (100 per second on Linux).
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("odd /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<u64>()? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// Busy CPU seconds of the whole machine so far (every process; `/proc/stat` less idle and
/// iowait), and the number of CPUs.
fn machine_cpu_s() -> anyhow::Result<(f64, usize)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let mut lines = stat.lines();
    let first = lines.next().context("empty /proc/stat")?;
    let ticks: Vec<u64> = first
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap_or(0))
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    let cpus = lines
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    Ok((total.saturating_sub(idle) as f64 / 100.0, cpus))
}

fn own_cpu_s() -> anyhow::Result<f64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_SELF)?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(u.user_time()) + secs(u.system_time()))
}

/// One enrollment: status 200, state `issued`, a chain whose leaf carries `public_key`.
async fn enroll(job: Job, url: &str) -> anyhow::Result<()> {
    let resp = job
        .http
        .post(format!("{url}/identity/v1/enroll"))
        .header("content-type", "application/json")
        .body(job.body)
        .send()
        .await
        .with_context(|| format!("{}: request failed", job.xname))?;
    let status = resp.status();
    let body = resp.bytes().await?;
    drop(job.http);
    if status != reqwest::StatusCode::OK {
        bail!(
            "{}: {status}: {}",
            job.xname,
            String::from_utf8_lossy(&body)
        );
    }
    let e: rackboot::identity::Enrolled =
        serde_json::from_slice(&body).with_context(|| format!("{}: odd answer", job.xname))?;
    if e.state != "issued" {
        bail!("{}: state {:?}, not issued", job.xname, e.state);
    }
    let chain = e.chain.context("issued without a chain")?;
    let leaf = pem_certs(&chain)?
        .into_iter()
        .next()
        .context("empty chain")?;
    let (key, _) = cert_key_and_serial(&leaf).context("the certificate does not parse")?;
    if key != job.public_key {
        bail!("{}: the certificate is not for the key sent", job.xname);
    }
    Ok(())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied().unwrap_or(0.0)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let url = args.url.trim_end_matches('/').to_owned();
    let nodes = read_nodes(&args)?;
    let ca = fetch_ca(&url, args.ca_fingerprint.as_deref()).await?;

    let prep = Instant::now();
    let mut jobs = Vec::with_capacity(nodes.len());
    for (ip, token, xname) in nodes {
        let (key, csr) = new_csr(&xname)?;
        let http = reqwest::Client::builder()
            .tls_certs_only([ca.clone()])
            .local_address(IpAddr::V4(ip))
            .no_proxy()
            // One connection per node, closed after its answer (as the agent's process exits).
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(120))
            .build()?;
        jobs.push(Job {
            body: serde_json::json!({"token": token, "csr": csr}).to_string(),
            public_key: key.public_key_raw().to_vec(),
            xname,
            http,
        });
    }
    eprintln!(
        "prepared {} keys, CSRs and clients in {:.2} s; enrolling with {} in flight",
        jobs.len(),
        prep.elapsed().as_secs_f64(),
        args.concurrency
    );
    // Workers pop from the end; reverse so nodes go in file order.
    jobs.reverse();
    let total = jobs.len();
    let queue = Arc::new(Mutex::new(jobs));
    let url = Arc::new(url);

    let server_before = args.server_pid.map(process_cpu_s).transpose()?;
    let client_before = own_cpu_s()?;
    let (machine_before, cpus) = machine_cpu_s()?;
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.min(total) {
        let (queue, url) = (queue.clone(), url.clone());
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some(job) = next else { break };
                let t0 = Instant::now();
                let result = enroll(job, &url).await;
                done.push(Outcome {
                    latency: t0.elapsed(),
                    result,
                });
            }
            done
        });
    }
    let mut outcomes = Vec::with_capacity(total);
    while let Some(w) = workers.join_next().await {
        outcomes.extend(w?);
    }
    let wall = started.elapsed().as_secs_f64();
    let client_cpu = own_cpu_s()? - client_before;
    let machine_cpu = machine_cpu_s()?.0 - machine_before;
    let server_cpu = match (args.server_pid, server_before) {
        (Some(pid), Some(before)) => Some(process_cpu_s(pid)? - before),
        _ => None,
    };

    let mut lat: Vec<f64> = outcomes
        .iter()
        .map(|o| o.latency.as_secs_f64() * 1000.0)
        .collect();
    lat.sort_by(f64::total_cmp);
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err().map(|e| format!("{e:#}")))
        .collect();
    let ok = outcomes.len() - failed.len();
    let mean = lat.iter().sum::<f64>() / lat.len().max(1) as f64;
    let report = serde_json::json!({
        "total": total,
        "ok": ok,
        "failed": failed.len(),
        "first_error": failed.first(),
        "concurrency": args.concurrency,
        "wall_s": wall,
        "enroll_per_s": ok as f64 / wall.max(1e-9),
        "latency_ms": {
            "p50": percentile(&lat, 0.50),
            "p90": percentile(&lat, 0.90),
            "p99": percentile(&lat, 0.99),
            "max": lat.last().copied().unwrap_or(0.0),
            "mean": mean,
        },
        "over_1s": lat.iter().filter(|l| **l >= 1000.0).count(),
        "client_cpu_s": client_cpu,
        "server_cpu_s": server_cpu,
        "machine_cpu_s": machine_cpu,
        "cpus": cpus,
    });
    println!("{report}");
    if let Some(e) = failed.first() {
        bail!(
            "{} of {total} enrollments failed; the first: {e}",
            failed.len()
        );
    }
    if outcomes.len() != total {
        bail!("only {} of {total} enrollments ran", outcomes.len());
    }
    Ok(())
}
