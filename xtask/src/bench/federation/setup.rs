//! Setup: the nodes and endpoints of the fixtures, the rackboot processes (start, kill -9,
//! restart, requests from the namespace) and the 10k-node fill of the upstream.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use qemu_tests::Netns;
use serde_json::Value;

use super::{BACKLOG, PREFIX, RACK, TOTAL};

pub(super) struct Node {
    pub(super) xname: String,
    pub(super) nid: usize,
    pub(super) mac: String,
    pub(super) ip: String,
}

pub(super) fn nodes() -> Vec<Node> {
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
pub(super) fn in_prefix(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// The RedfishEndpoint IDs of the backlog (BMC xnames in cabinets 3000…).
pub(super) fn endpoint_ids() -> Vec<String> {
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
pub(super) struct Server {
    ns: String,
    bin: PathBuf,
    pub(super) data_dir: tempfile::TempDir,
    pub(super) log: PathBuf,
    /// host:port of its HTTP API.
    pub(super) addr: String,
    pub(super) env: Vec<(String, String)>,
    pub(super) token: String,
    pub(super) child: Option<Child>,
    /// Scratch files for request bodies and answers.
    scratch: tempfile::TempDir,
}

impl Server {
    /// A server (not started yet) with an admin token minted from its fresh data dir.
    pub(super) fn new(
        ns: &Netns,
        bin: &Path,
        addr: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
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

    pub(super) fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, prog]);
        c
    }

    /// Spawns `rackboot serve` (as the e2e harness does); returns the spawn instant and the
    /// log's length before it (this run's lines follow).
    pub(super) fn spawn(&mut self) -> anyhow::Result<(Instant, u64)> {
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
    pub(super) fn wait_ready(&mut self) -> anyhow::Result<()> {
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

    pub(super) fn start(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        self.wait_ready()
    }

    /// SIGKILL (no clean shutdown); the data dir stays.
    pub(super) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(super) fn log_from(&self, offset: u64) -> String {
        let text = fs::read(&self.log).unwrap_or_default();
        let start = usize::try_from(offset).unwrap_or(0).min(text.len());
        String::from_utf8_lossy(text.get(start..).unwrap_or_default()).into_owned()
    }

    pub(super) fn log_tail(&self, chars: usize) -> String {
        let text = self.log_from(0);
        let skip = text.chars().count().saturating_sub(chars);
        text.chars().skip(skip).collect()
    }

    /// A request from inside the namespace with the admin token (body through a file):
    /// (status, body).
    pub(super) fn call(
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
    pub(super) fn json(&self, path: &str) -> anyhow::Result<Value> {
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
    pub(super) fn list(&self, path: &str, key: &str) -> anyhow::Result<Vec<Value>> {
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

    pub(super) fn file(&self, name: &str) -> PathBuf {
        self.data_dir.path().join(name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(super) fn mint(bin: &Path, data_dir: &Path, ttl: &str) -> anyhow::Result<String> {
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
pub(super) fn fill(up: &Server, nodes: &[Node]) -> anyhow::Result<f64> {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

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
