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

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use qemu_tests::Netns;
use serde_json::Value;

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

struct Node {
    xname: String,
    nid: usize,
    mac: String,
    ip: String,
}

fn nodes() -> Vec<Node> {
    (0..TOTAL)
        .map(|i| {
            let xname = if i < RACK {
                format!("{PREFIX}s{i}b0n0")
            } else {
                let j = i - RACK;
                format!("x{}c0s{}b0n0", 1001 + j / 64, j % 64)
            };
            let n = i as u32 + 1;
            Node {
                xname,
                nid: i + 1,
                mac: format!(
                    "02:fe:00:{:02x}:{:02x}:{:02x}",
                    (n >> 16) & 0xff,
                    (n >> 8) & 0xff,
                    n & 0xff
                ),
                ip: format!("198.18.{}.{}", (n >> 8) & 0xff, n & 0xff),
            }
        })
        .collect()
}

/// Whether `id` is inside the xname `prefix` (as the federation client decides it).
fn in_prefix(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// The RedfishEndpoint IDs of the backlog (BMC xnames in cabinets 3000…).
fn endpoint_ids() -> Vec<String> {
    (0..BACKLOG)
        .map(|i| format!("x{}c{}s{}b0", 3000 + i / 512, (i / 64) % 8, i % 64))
        .collect()
}

/// A curl config-file string (`"…"` with `\` and `"` escaped).
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A rackboot process in a namespace that this benchmark starts, kills and restarts itself
/// (release binary, its own env, timed from the spawn).
struct Server {
    ns: String,
    bin: PathBuf,
    data_dir: tempfile::TempDir,
    log: PathBuf,
    /// host:port of its HTTP API.
    addr: String,
    env: Vec<(String, String)>,
    token: String,
    child: Option<Child>,
    /// Scratch files for request bodies and answers.
    scratch: tempfile::TempDir,
}

impl Server {
    /// A server (not started yet) with an admin token minted from its fresh data dir.
    fn new(ns: &Netns, bin: &Path, addr: &str, env: &[(&str, &str)]) -> anyhow::Result<Server> {
        let data_dir = tempfile::tempdir()?;
        let token = mint(bin, data_dir.path(), "1h")?;
        Ok(Server {
            ns: ns.name.clone(),
            bin: bin.to_owned(),
            log: data_dir.path().join("rackboot.log"),
            data_dir,
            addr: addr.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            token,
            child: None,
            scratch: tempfile::tempdir()?,
        })
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, prog]);
        c
    }

    /// Spawns `rackboot serve` (as the e2e harness does); returns the spawn instant and the
    /// log's length before it (this run's lines follow).
    fn spawn(&mut self) -> anyhow::Result<(Instant, u64)> {
        self.kill();
        let logf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let offset = logf.metadata()?.len();
        let bin = self.bin.to_str().context("binary path")?.to_owned();
        let mut c = self.cmd(&bin);
        c.args(["serve", "--interface", "br0", "--data-dir"])
            .arg(self.data_dir.path())
            .args(["--ipxe-dir", "/usr/lib/ipxe"])
            .env("RACKBOOT_LOG", "info,rackboot=debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(logf);
        let t = Instant::now();
        self.child = Some(c.spawn().context("spawning rackboot")?);
        Ok((t, offset))
    }

    /// Waits until `/boot/v1/service/status` answers 200.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.get("/boot/v1/service/status")?.0 == 200 {
                return Ok(());
            }
            let exited = match self.child.as_mut() {
                Some(c) => c.try_wait()?.is_some(),
                None => true,
            };
            if exited || Instant::now() > deadline {
                bail!(
                    "rackboot on {} did not become ready; log:\n{}",
                    self.addr,
                    self.log_tail(4000)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        self.wait_ready()
    }

    /// SIGKILL (no clean shutdown); the data dir stays.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_from(&self, offset: u64) -> String {
        let text = fs::read(&self.log).unwrap_or_default();
        let start = usize::try_from(offset).unwrap_or(0).min(text.len());
        String::from_utf8_lossy(text.get(start..).unwrap_or_default()).into_owned()
    }

    fn log_tail(&self, chars: usize) -> String {
        let text = self.log_from(0);
        let skip = text.chars().count().saturating_sub(chars);
        text.chars().skip(skip).collect()
    }

    /// A request from inside the namespace with the admin token (body through a file):
    /// (status, body).
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        timeout_s: u32,
    ) -> anyhow::Result<(u16, String)> {
        let answer = self.scratch.path().join("answer");
        let _ = fs::remove_file(&answer);
        let mut c = self.cmd("curl");
        c.args(["-s", "-m", &timeout_s.to_string(), "-X", method])
            .args(["-H", &format!("Authorization: Bearer {}", self.token)])
            .args(["-w", "%{http_code}", "-o"])
            .arg(&answer);
        if let Some(b) = body {
            let f = self.scratch.path().join("body.json");
            fs::write(&f, b)?;
            c.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(format!("@{}", f.display()));
        }
        let out = c.arg(format!("http://{}{path}", self.addr)).output()?;
        let code = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        Ok((code, fs::read_to_string(&answer).unwrap_or_default()))
    }

    fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        self.call("GET", path, None, 30)
    }

    /// A JSON GET that must answer 200.
    fn json(&self, path: &str) -> anyhow::Result<Value> {
        let (code, body) = self.get(path)?;
        if code != 200 {
            bail!(
                "GET {}{path} → {code}: {}",
                self.addr,
                body.chars().take(300).collect::<String>()
            );
        }
        serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON"))
    }

    /// The list at `key` of a GET (the whole answer when it is a bare list; 404 is empty).
    fn list(&self, path: &str, key: &str) -> anyhow::Result<Vec<Value>> {
        let (code, body) = self.get(path)?;
        if code == 404 {
            return Ok(Vec::new());
        }
        if code != 200 {
            bail!("GET {}{path} → {code}: {body}", self.addr);
        }
        let v: Value = serde_json::from_str(&body).with_context(|| format!("GET {path}"))?;
        let v = match v {
            Value::Array(_) => v,
            Value::Object(mut o) => o.remove(key).unwrap_or(Value::Null),
            other => other,
        };
        match v {
            Value::Array(a) => Ok(a),
            other => bail!("GET {path}: expected a list, got {other}"),
        }
    }

    /// Runs curl config blocks with `--parallel`, each writing its status; how many answered
    /// `want`, or the first other answer.
    fn curl_many(&self, name: &str, cfg: &[String], want: u16) -> anyhow::Result<usize> {
        let f = self.scratch.path().join(name);
        // `next` only between transfers (a trailing one is a transfer without a URL).
        fs::write(&f, cfg.join("next\n"))?;
        let out = self
            .cmd("curl")
            .args([
                "-s",
                "--no-progress-meter",
                "--parallel",
                "--parallel-max",
                "16",
                "-K",
            ])
            .arg(&f)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut ok = 0;
        for line in text.lines() {
            let code = line.split_whitespace().next().unwrap_or("");
            if code.parse::<u16>().ok() != Some(want) {
                bail!("{name}: a transfer answered {line:?} ({ok} ok before it)");
            }
            ok += 1;
        }
        Ok(ok)
    }

    /// One curl config block: `method url` with a JSON body.
    fn block(&self, method: &str, path: &str, body: &str) -> String {
        format!(
            "url = {}\nrequest = {}\nheader = {}\nheader = \"Content-Type: application/json\"\n\
             data-binary = {}\noutput = \"/dev/null\"\nwrite-out = \"%{{http_code}} %{{errormsg}}\\n\"\n",
            q(&format!("http://{}{path}", self.addr)),
            q(method),
            q(&format!("Authorization: Bearer {}", self.token)),
            q(body)
        )
    }

    fn file(&self, name: &str) -> PathBuf {
        self.data_dir.path().join(name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn mint(bin: &Path, data_dir: &Path, ttl: &str) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(["token", "create", "--scope", "admin", "--ttl", ttl])
        .arg("--data-dir")
        .arg(data_dir)
        .stderr(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("token create failed ({})", out.status);
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Fills the upstream with every node; seconds it took.
fn fill(up: &Server, nodes: &[Node]) -> anyhow::Result<f64> {
    let t = Instant::now();
    let comps: Vec<Value> = nodes
        .iter()
        .map(|n| {
            serde_json::json!({"ID": n.xname, "Type": "Node", "State": "Ready", "Enabled": true,
                "NID": n.nid, "Arch": "X86", "Role": "Compute"})
        })
        .collect();
    let body = serde_json::json!({ "Components": comps }).to_string();
    let (code, text) = up.call("POST", "/hsm/v2/State/Components", Some(&body), 300)?;
    if code != 204 {
        bail!("POST /hsm/v2/State/Components ({TOTAL} in one request) → {code}: {text}");
    }
    let cfg: Vec<String> = nodes
        .iter()
        .map(|n| {
            let ei = serde_json::json!({"MACAddress": n.mac, "ComponentID": n.xname,
                "Type": "Node", "IPAddresses": [{"IPAddress": n.ip}]})
            .to_string();
            up.block("POST", "/hsm/v2/Inventory/EthernetInterfaces", &ei)
        })
        .collect();
    let created = up.curl_many("interfaces.curl", &cfg, 201)?;
    if created != nodes.len() {
        bail!("{created} of {} EthernetInterfaces created", nodes.len());
    }
    let cfg: Vec<String> = nodes
        .iter()
        .map(|n| {
            let bp = serde_json::json!({"hosts": [n.xname], "macs": [n.mac],
                "kernel": "http://192.0.2.1/images/vmlinuz",
                "initrd": "http://192.0.2.1/images/initrd.img",
                "params": format!("console=ttyS0 quiet nid={}", n.nid)})
            .to_string();
            up.block("PUT", "/boot/v1/bootparameters", &bp)
        })
        .collect();
    let put = up.curl_many("bootparameters.curl", &cfg, 200)?;
    if put != nodes.len() {
        bail!("{put} of {} boot-parameters objects stored", nodes.len());
    }
    let comps = up.list("/hsm/v2/State/Components", "Components")?.len();
    let eis = up.list("/hsm/v2/Inventory/EthernetInterfaces", "")?.len();
    let bps = up.list("/boot/v1/bootparameters", "")?.len();
    if comps != TOTAL || eis != TOTAL || bps != TOTAL {
        bail!(
            "the upstream holds {comps} Components, {eis} EthernetInterfaces, {bps} \
             boot-parameters objects (wanted {TOTAL} each)"
        );
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Seconds since the Unix epoch of a log line's leading RFC 3339 timestamp
/// (`2026-01-02T03:04:05.123456Z`).
fn log_time(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let h: f64 = t.next()?.parse().ok()?;
    let mi: f64 = t.next()?.parse().ok()?;
    let s: f64 = t.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + mi * 60.0 + s)
}

/// A `key=value` field of a log line.
fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// One `upstream pull` debug line: (time, written, deleted, unchanged).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pull {
    at: f64,
    written: u64,
    deleted: u64,
    unchanged: u64,
}

fn pulls(log: &str) -> Vec<Pull> {
    log.lines()
        .filter(|l| l.contains("upstream pull ") || l.ends_with("upstream pull"))
        .filter(|l| !l.contains("pull failed"))
        .filter_map(|l| {
            let n = |k: &str| log_field(l, k).and_then(|v| v.parse().ok());
            Some(Pull {
                at: log_time(l)?,
                written: n("written")?,
                deleted: n("deleted")?,
                unchanged: n("unchanged")?,
            })
        })
        .collect()
}

/// The time of the first log line containing `what`.
fn first_time(log: &str, what: &str) -> Option<f64> {
    log.lines().find(|l| l.contains(what)).and_then(log_time)
}

/// The 1/5/15-minute load averages (other work on the machine shows in the times).
fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".to_owned())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// (size, mtime, sha256) of a file, or a note that it does not exist.
fn fingerprint(path: &Path) -> String {
    let Ok(meta) = fs::metadata(path) else {
        return "absent".to_owned();
    };
    let mtime = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let sum = Command::new("sha256sum")
        .arg(path)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default();
    format!("{} bytes, mtime {mtime} ns, sha256 {sum}", meta.len())
}

/// Times the four list GETs a pull makes, from the namespace: (path, bytes, seconds), the
/// median of three.
fn upstream_gets(up: &Server) -> anyhow::Result<Vec<(String, u64, f64)>> {
    let mut out = Vec::new();
    for path in [
        "/hsm/v2/State/Components",
        "/hsm/v2/Inventory/EthernetInterfaces",
        "/hsm/v2/groups",
        "/boot/v1/bootparameters",
    ] {
        let mut secs = Vec::new();
        let mut bytes = 0;
        for _ in 0..3 {
            let o = up
                .cmd("curl")
                .args(["-s", "-m", "60", "-o", "/dev/null"])
                .args(["-H", &format!("Authorization: Bearer {}", up.token)])
                .args(["-w", "%{http_code} %{size_download} %{time_total}"])
                .arg(format!("http://{}{path}", up.addr))
                .output()?;
            let w = String::from_utf8_lossy(&o.stdout).into_owned();
            let mut p = w.split_whitespace();
            let code = p.next().unwrap_or("");
            if code != "200" && code != "404" {
                bail!("GET {path} → {w}");
            }
            bytes = p.next().and_then(|b| b.parse().ok()).unwrap_or(0);
            secs.push(p.next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN));
        }
        out.push((path.to_owned(), bytes, median(&secs)));
    }
    Ok(out)
}

struct FirstSync {
    fill_s: f64,
    /// Spawn → status shows the rack.
    external_s: f64,
    /// Process's first log line → `upstream pull`.
    server_total_s: Option<f64>,
    /// `federated with an upstream` → `upstream pull`.
    server_pull_s: Option<f64>,
    pull: Option<Pull>,
    polls: usize,
    gets: Vec<(String, u64, f64)>,
    /// `upstream_owned` of the status after the first sync.
    owned: Value,
    load: String,
}

struct Steady {
    pulls: Vec<Pull>,
    /// Seconds per pull: the first from `federated with an upstream`, the rest from the gap
    /// between consecutive pulls less the interval.
    durations: Vec<f64>,
    status_stats: Value,
    files_before: Vec<(String, String)>,
    files_after: Vec<(String, String)>,
    pulls_between: usize,
    load: String,
}

struct Drain {
    create_note: String,
    depth_before: i64,
    /// Upstream spawn → first delivery seen.
    wait_s: f64,
    /// First delivery seen → outbox empty.
    drain_s: f64,
    /// Outbox depth when the first delivery was seen (delivered in `drain_s`).
    first_depth: i64,
    /// Upstream spawn → outbox empty.
    total_s: f64,
    upstream_endpoints: usize,
    pushed: Value,
    backoff_lines: Vec<String>,
    drained_lines: Vec<String>,
    load: String,
}

fn check_rack(down: &Server, rack: &[&Node]) -> anyhow::Result<String> {
    let want_ids: BTreeSet<&str> = rack.iter().map(|n| n.xname.as_str()).collect();
    let want_macs: BTreeSet<&str> = rack.iter().map(|n| n.mac.as_str()).collect();
    let comps = down.list("/hsm/v2/State/Components", "Components")?;
    let ids: BTreeSet<&str> = comps
        .iter()
        .filter_map(|c| c.get("ID").and_then(Value::as_str))
        .collect();
    if comps.len() != RACK || ids != want_ids {
        let out: Vec<&&str> = ids
            .iter()
            .filter(|i| !in_prefix(i, PREFIX))
            .take(5)
            .collect();
        bail!(
            "downstream holds {} Components ({} distinct), wanted the {RACK} of {PREFIX}; out of scope e.g. {out:?}",
            comps.len(),
            ids.len()
        );
    }
    let eis = down.list("/hsm/v2/Inventory/EthernetInterfaces", "")?;
    let macs: BTreeSet<&str> = eis
        .iter()
        .filter_map(|e| e.get("MACAddress").and_then(Value::as_str))
        .collect();
    let eis_in = eis
        .iter()
        .filter(|e| {
            e.get("ComponentID")
                .and_then(Value::as_str)
                .is_some_and(|c| in_prefix(c, PREFIX))
        })
        .count();
    if eis.len() != RACK || macs != want_macs || eis_in != RACK {
        bail!(
            "downstream holds {} EthernetInterfaces ({} in {PREFIX}), wanted the rack's {RACK}",
            eis.len(),
            eis_in
        );
    }
    let bps = down.list("/boot/v1/bootparameters", "")?;
    let bp_macs: BTreeSet<&str> = bps
        .iter()
        .filter_map(|b| b.get("macs").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if bps.len() != RACK || bp_macs != want_macs {
        bail!(
            "downstream holds {} boot-parameters objects covering {} MACs, wanted {RACK} for the rack's MACs",
            bps.len(),
            bp_macs.len()
        );
    }
    Ok(format!(
        "{} Components, {} EthernetInterfaces, {} boot-parameters objects, all in {PREFIX}",
        comps.len(),
        eis.len(),
        bps.len()
    ))
}

fn status(down: &Server) -> anyhow::Result<Value> {
    down.json("/rackboot/v1/upstream")
}

fn first_sync(
    down: &mut Server,
    up: &Server,
    rack: &[&Node],
    fill_s: f64,
) -> anyhow::Result<(FirstSync, String)> {
    let load = loadavg();
    let (t0, offset) = down.spawn()?;
    let mut polls = 0;
    let external_s = loop {
        polls += 1;
        // Before the HTTP listener is up the request fails fast; keep polling.
        if let Ok((200, body)) = down.call("GET", "/rackboot/v1/upstream", None, 5)
            && let Ok(v) = serde_json::from_str::<Value>(&body)
            && v.get("last_pull").is_some_and(Value::is_string)
            && v.pointer("/upstream_owned/components")
                .and_then(Value::as_u64)
                == Some(RACK as u64)
        {
            break t0.elapsed().as_secs_f64();
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!("no first sync within 300 s; log:\n{}", down.log_tail(4000));
        }
        if let Some(c) = down.child.as_mut()
            && c.try_wait()?.is_some()
        {
            bail!("downstream exited; log:\n{}", down.log_tail(4000));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = down.log_from(offset);
    let pull = pulls(&log).first().copied();
    let start = log.lines().next().and_then(log_time);
    let fed = first_time(&log, "federated with an upstream");
    let owned = status(down)?
        .get("upstream_owned")
        .cloned()
        .unwrap_or(Value::Null);
    let checked = check_rack(down, rack)?;
    let gets = upstream_gets(up)?;
    Ok((
        FirstSync {
            fill_s,
            external_s,
            server_total_s: start.zip(pull).map(|(s, p)| p.at - s),
            server_pull_s: fed.zip(pull).map(|(f, p)| p.at - f),
            pull,
            polls,
            gets,
            owned,
            load,
        },
        checked,
    ))
}

fn steady(down: &mut Server) -> anyhow::Result<Steady> {
    let load = loadavg();
    let (_, offset) = down.spawn()?;
    down.wait_ready()?;
    let count = |d: &Server| pulls(&d.log_from(offset)).len();
    let wait_pulls = |d: &Server, n: usize| -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while count(d) < n {
            if Instant::now() > deadline {
                bail!(
                    "only {} steady-state pulls within 120 s; log:\n{}",
                    count(d),
                    d.log_tail(4000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    };
    // Baseline after two pulls (recovery of the SIGKILLed WAL and start-up writes are over).
    wait_pulls(down, 2)?;
    // Just after a pull's log line: the next pull is about an interval away.
    let files = ["rackboot.db", "rackboot.db-wal"];
    let fp = |d: &Server| {
        files
            .iter()
            .map(|f| ((*f).to_owned(), fingerprint(&d.file(f))))
            .collect::<Vec<_>>()
    };
    let files_before = fp(down);
    let at_before = count(down);
    wait_pulls(down, at_before + STEADY_PULLS)?;
    let files_after = fp(down);
    let pulls_between = count(down) - at_before;
    let status_stats = status(down)?
        .get("last_pull_stats")
        .cloned()
        .unwrap_or(Value::Null);
    let log = down.log_from(offset);
    let all = pulls(&log);
    let mut durations = Vec::new();
    if let (Some(fed), Some(p)) = (first_time(&log, "federated with an upstream"), all.first()) {
        durations.push(p.at - fed);
    }
    for w in all.windows(2) {
        if let [a, b] = w {
            durations.push(b.at - a.at - 1.0);
        }
    }
    Ok(Steady {
        pulls: all,
        durations,
        status_stats,
        files_before,
        files_after,
        pulls_between,
        load,
    })
}

fn drain(down: &Server, up: &mut Server) -> anyhow::Result<Drain> {
    let load = loadavg();
    up.kill();
    let ids = endpoint_ids();
    let eps: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            serde_json::json!({"ID": id, "FQDN": format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256),
                "User": "root", "MACRequired": false, "MACAddr": "", "Systems": [], "Managers": [],
                "SchemaVersion": 1})
        })
        .collect();
    let down_offset = fs::metadata(&down.log).map_or(0, |m| m.len());
    let body = serde_json::json!({ "RedfishEndpoints": eps }).to_string();
    let t = Instant::now();
    let (code, text) = down.call(
        "POST",
        "/hsm/v2/Inventory/RedfishEndpoints",
        Some(&body),
        600,
    )?;
    let mut create_s = t.elapsed().as_secs_f64();
    let mut create_note = format!(
        "one `POST /hsm/v2/Inventory/RedfishEndpoints` with all {BACKLOG} → {code} in {create_s:.1} s"
    );
    if code != 201 {
        // The single request did not make it (e.g. the 30 s request timeout): post the rest
        // in chunks, and say so.
        let have: BTreeSet<String> = down
            .list("/hsm/v2/Inventory/RedfishEndpoints", "RedfishEndpoints")?
            .iter()
            .filter_map(|e| e.get("ID").and_then(Value::as_str).map(str::to_owned))
            .collect();
        eprintln!(
            "the single POST answered {code} after {create_s:.1} s with {} of {BACKLOG} stored: {}",
            have.len(),
            text.chars().take(300).collect::<String>()
        );
        let missing: Vec<&Value> = eps
            .iter()
            .filter(|e| {
                e.get("ID")
                    .and_then(Value::as_str)
                    .is_some_and(|id| !have.contains(id))
            })
            .collect();
        for chunk in missing.chunks(500) {
            let body = serde_json::json!({ "RedfishEndpoints": chunk }).to_string();
            let (code, text) = down.call(
                "POST",
                "/hsm/v2/Inventory/RedfishEndpoints",
                Some(&body),
                120,
            )?;
            if code != 201 {
                bail!("POST of 500 RedfishEndpoints → {code}: {text}");
            }
        }
        create_s = t.elapsed().as_secs_f64();
        let _ = write!(
            create_note,
            " ({} stored; {} more posted in requests of 500, {create_s:.1} s in all)",
            have.len(),
            missing.len()
        );
    }
    let s = status(down)?;
    let depth_before = s.get("outbox_depth").and_then(Value::as_i64).unwrap_or(-1);
    if depth_before != BACKLOG as i64 {
        bail!(
            "outbox_depth is {depth_before} after {BACKLOG} endpoints with the upstream down: {s}"
        );
    }
    let (t0, _) = up.spawn()?;
    up.wait_ready()?;
    let mut first = None;
    let total_s = loop {
        let s = status(down)?;
        let depth = s.get("outbox_depth").and_then(Value::as_i64).unwrap_or(-1);
        if first.is_none() && (0..BACKLOG as i64).contains(&depth) {
            first = Some((t0.elapsed().as_secs_f64(), depth));
        }
        if depth == 0 {
            break t0.elapsed().as_secs_f64();
        }
        if t0.elapsed() > Duration::from_secs(900) {
            bail!(
                "outbox still at {depth} after 900 s; downstream log:\n{}",
                down.log_tail(3000)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (wait_s, first_depth) = first.unwrap_or((total_s, 0));
    let pushed = status(down)?.get("pushed").cloned().unwrap_or(Value::Null);
    let got = up.list("/hsm/v2/Inventory/RedfishEndpoints", "RedfishEndpoints")?;
    let got_ids: Vec<&str> = got
        .iter()
        .filter_map(|e| e.get("ID").and_then(Value::as_str))
        .collect();
    let distinct: BTreeSet<&str> = got_ids.iter().copied().collect();
    let want: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    if got_ids.len() != BACKLOG || distinct != want {
        bail!(
            "the upstream holds {} RedfishEndpoints ({} distinct) after the drain, wanted exactly the {BACKLOG} queued",
            got_ids.len(),
            distinct.len()
        );
    }
    let log = down.log_from(down_offset);
    let backoff_lines: Vec<String> = log
        .lines()
        .filter(|l| l.contains("outbox delivery failed"))
        .filter_map(|l| {
            Some(format!(
                "{} retry_in={}",
                l.split_whitespace().next()?,
                log_field(l, "retry_in")?
            ))
        })
        .collect();
    let drained_lines: Vec<String> = log
        .lines()
        .filter(|l| l.contains("outbox drained"))
        .map(str::to_owned)
        .collect();
    Ok(Drain {
        create_note,
        depth_before,
        wait_s,
        drain_s: total_s - wait_s,
        first_depth,
        total_s,
        upstream_endpoints: got_ids.len(),
        pushed,
        backoff_lines,
        drained_lines,
        load,
    })
}

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

fn yes_no(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**missed**" }
}

fn markdown(first: &FirstSync, checked: &str, steady: &Steady, drain: &Drain) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_parse() {
        let l = "2026-11-24T12:13:08.165934Z DEBUG rackboot::federation: upstream pull written=192 deleted=0 unchanged=0";
        let p = pulls(l);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].written, p[0].deleted, p[0].unchanged), (192, 0, 0));
        let a = log_time("1970-01-02T00:00:01.5Z x").unwrap();
        assert!((a - 86_401.5).abs() < 1e-9);
        let b = log_time("2026-11-24T12:13:08.165934Z").unwrap();
        let c = log_time("2026-11-25T00:00:00Z").unwrap();
        assert!((c - b - (11.0 * 3600.0 + 46.0 * 60.0 + 51.834066)).abs() < 1e-6);
        assert!(pulls("2026-11-24T12:13:08Z WARN rackboot::federation: upstream pull failed; serving the local copy error=x").is_empty());
    }

    #[test]
    fn exactly_the_rack_is_in_scope_and_everything_is_distinct() {
        let n = nodes();
        assert_eq!(
            n.iter().filter(|x| in_prefix(&x.xname, PREFIX)).count(),
            RACK
        );
        let ids: BTreeSet<&str> = n.iter().map(|x| x.xname.as_str()).collect();
        let macs: BTreeSet<&str> = n.iter().map(|x| x.mac.as_str()).collect();
        let ips: BTreeSet<&str> = n.iter().map(|x| x.ip.as_str()).collect();
        assert_eq!((ids.len(), macs.len(), ips.len()), (TOTAL, TOTAL, TOTAL));
        assert_eq!(n.last().unwrap().xname, "x1156c0s15b0n0");
        assert!(n.iter().all(|x| x.mac == x.mac.to_ascii_lowercase()));
        let eps: BTreeSet<String> = endpoint_ids().into_iter().collect();
        assert_eq!(eps.len(), BACKLOG);
        assert!(eps.iter().all(|e| !in_prefix(e, PREFIX)));
    }
}
