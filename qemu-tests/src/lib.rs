//! End-to-end harness: network namespaces, a real `rackboot serve`, QEMU nodes with real firmware.
//!
//! Every test gets its own namespace (so tests run in parallel): a bridge `br0` holding
//! 192.0.2.1/24 for rackboot and one TAP per VM. Nothing leaves the namespace.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The server address inside every test namespace.
pub const SERVER: &str = "192.0.2.1";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The workspace root.
pub fn root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(Path::to_path_buf).unwrap_or(here)
}

/// Checks what the e2e tests need. Outside CI a missing piece skips the test loudly; in CI
/// (`CI=true`) it fails, because there `cargo xtask test` installs everything first.
pub fn preflight(need_qemu: bool) -> bool {
    let mut missing = Vec::new();
    if !nix_is_root() {
        missing.push("root (network namespaces)".to_owned());
    }
    for prog in ["ip", "curl"].iter().chain(if need_qemu {
        &["qemu-system-x86_64"][..]
    } else {
        &[][..]
    }) {
        if !have(prog) {
            missing.push((*prog).to_owned());
        }
    }
    if need_qemu && !root().join("build/node/vmlinuz").exists() {
        missing.push("build/node (run `cargo xtask image node`)".to_owned());
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "end-to-end test prerequisites missing: {}",
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED (not in CI): {msg}; `cargo xtask test` installs them");
    false
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Whether `prog` is on PATH.
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

/// The rackboot binary: `$RACKBOOT_BIN`, else target/debug/rackboot (built if missing).
pub fn rackboot_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("RACKBOOT_BIN") {
        return Ok(PathBuf::from(p));
    }
    let p = root().join("target/debug/rackboot");
    if !p.exists() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-p", "appliance", "--bin", "rackboot"])
            .current_dir(root())
            .status()?;
        if !ok.success() {
            bail!("cannot build rackboot");
        }
    }
    Ok(p)
}

/// A network namespace with a bridge at 192.0.2.1/24.
pub struct Netns {
    pub name: String,
    /// rackboot's address on the bridge.
    pub addr: String,
    taps: u32,
}

impl Netns {
    pub fn new(tag: &str) -> anyhow::Result<Netns> {
        Self::with_address(tag, &format!("{SERVER}/24"))
    }

    /// Like [`Netns::new`] with another bridge address, e.g. `198.18.0.1/16` for benchmarks
    /// that need a large pool.
    pub fn with_address(tag: &str, cidr: &str) -> anyhow::Result<Netns> {
        let name = format!(
            "rbt-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        sh(Command::new("ip").args(["netns", "add", &name]))?;
        let addr = cidr.split('/').next().unwrap_or(SERVER).to_owned();
        let ns = Netns {
            name,
            addr,
            taps: 0,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.ip(&["link", "add", "br0", "type", "bridge"])?;
        ns.ip(&["addr", "add", cidr, "dev", "br0"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        Ok(ns)
    }

    /// Runs `ip …` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        sh(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// A command that runs inside the namespace.
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c
    }

    /// Adds a TAP device on the bridge; returns its name.
    pub fn add_tap(&mut self) -> anyhow::Result<String> {
        let tap = format!("tap{}", self.taps);
        self.taps += 1;
        self.ip(&["tuntap", "add", &tap, "mode", "tap"])?;
        self.ip(&["link", "set", &tap, "master", "br0"])?;
        self.ip(&["link", "set", &tap, "up"])?;
        Ok(tap)
    }

    /// Adds a veth pair: one end on the bridge, the other (returned) left unconfigured in a
    /// second namespace `<name>-c` for client tools (udhcpc, perfdhcp).
    pub fn add_client_ns(&self) -> anyhow::Result<Netns> {
        let client = Netns {
            name: format!("{}-c", self.name),
            addr: self.addr.clone(),
            taps: 0,
        };
        let _ = Command::new("ip")
            .args(["netns", "del", &client.name])
            .stderr(Stdio::null())
            .status();
        sh(Command::new("ip").args(["netns", "add", &client.name]))?;
        self.ip(&[
            "link",
            "add",
            "vb",
            "type",
            "veth",
            "peer",
            "name",
            "vc",
            "netns",
            &client.name,
        ])?;
        self.ip(&["link", "set", "vb", "master", "br0"])?;
        self.ip(&["link", "set", "vb", "up"])?;
        client.ip(&["link", "set", "lo", "up"])?;
        client.ip(&["link", "set", "vc", "up"])?;
        Ok(client)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A running `rackboot serve` on br0 of a namespace.
pub struct Rackboot {
    pub data_dir: tempfile::TempDir,
    pub log: PathBuf,
    child: Child,
    ns: String,
    addr: String,
    token: String,
}

impl Rackboot {
    pub fn start(ns: &Netns) -> anyhow::Result<Rackboot> {
        Self::start_with(ns, &rackboot_bin()?)
    }

    /// Starts a given rackboot binary (benchmarks use the release build).
    pub fn start_with(ns: &Netns, bin: &Path) -> anyhow::Result<Rackboot> {
        Self::start_in(ns, bin, tempfile::tempdir()?, &[], ns.addr.clone())
    }

    /// Starts rackboot with `RACKBOOT_*` settings (e.g. `("RACKBOOT_DHCP__MODE", "proxy")`).
    pub fn start_with_env(ns: &Netns, env: &[(&str, &str)]) -> anyhow::Result<Rackboot> {
        Self::start_in(
            ns,
            &rackboot_bin()?,
            tempfile::tempdir()?,
            env,
            ns.addr.clone(),
        )
    }

    /// Starts rackboot with its HTTP API on `addr` ("192.0.2.1:8080"; set the matching
    /// `RACKBOOT_HTTP_LISTEN` in `env`), e.g. a second rackboot as another's upstream.
    pub fn start_with_env_at(
        ns: &Netns,
        env: &[(&str, &str)],
        addr: &str,
    ) -> anyhow::Result<Rackboot> {
        Self::start_in(
            ns,
            &rackboot_bin()?,
            tempfile::tempdir()?,
            env,
            addr.to_owned(),
        )
    }

    /// SIGKILLs the server (no clean shutdown); the data dir stays.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILLs the server (if running) and starts a new one on the same data dir and address,
    /// with `env`.
    pub fn kill9_and_restart_env(
        mut self,
        ns: &Netns,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Rackboot> {
        self.kill();
        let data_dir = std::mem::replace(&mut self.data_dir, tempfile::tempdir()?);
        let addr = self.addr.clone();
        Self::start_in(ns, &rackboot_bin()?, data_dir, env, addr)
    }

    /// SIGKILLs the server (no clean shutdown) and starts a new one on the same data dir.
    pub fn kill9_and_restart(mut self, ns: &Netns) -> anyhow::Result<Rackboot> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let data_dir = std::mem::replace(&mut self.data_dir, tempfile::tempdir()?);
        Self::start_in(ns, &rackboot_bin()?, data_dir, &[], ns.addr.clone())
    }

    fn start_in(
        ns: &Netns,
        bin: &Path,
        data_dir: tempfile::TempDir,
        env: &[(&str, &str)],
        addr: String,
    ) -> anyhow::Result<Rackboot> {
        let log = data_dir.path().join("rackboot.log");
        Self::start_logged(ns, bin, data_dir, log, env, addr)
    }

    fn start_logged(
        ns: &Netns,
        bin: &Path,
        data_dir: tempfile::TempDir,
        log: PathBuf,
        env: &[(&str, &str)],
        addr: String,
    ) -> anyhow::Result<Rackboot> {
        let logf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        // `RACKBOOT_IPXE_DIR` in `env` replaces Debian's iPXE directory (the flag would win).
        let ipxe_dir = env
            .iter()
            .find(|(k, _)| *k == "RACKBOOT_IPXE_DIR")
            .map_or("/usr/lib/ipxe", |(_, v)| *v);
        let child = ns
            .cmd(bin.to_str().context("binary path")?)
            .args(["serve", "--interface", "br0", "--data-dir"])
            .arg(data_dir.path())
            .args(["--ipxe-dir", ipxe_dir])
            .env("RACKBOOT_LOG", "info,rackboot=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()?;
        let mut rb = Rackboot {
            data_dir,
            log,
            child,
            ns: ns.name.clone(),
            addr,
            token: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (code, _) = rb.http("GET", "/boot/v1/service/status", None)?;
            if code == 200 {
                break;
            }
            if Instant::now() > deadline || rb.child.try_wait()?.is_some() {
                bail!("rackboot did not become ready; log:\n{}", rb.log_text());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = Command::new(bin)
            .args([
                "token",
                "create",
                "--scope",
                "admin",
                "--ttl",
                "30m",
                "--data-dir",
            ])
            .arg(rb.data_dir.path())
            .output()?;
        if !out.status.success() {
            bail!(
                "token create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        rb.token = String::from_utf8(out.stdout)?.trim().to_owned();
        Ok(rb)
    }

    /// The server log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An HTTP request from inside the namespace, with the admin token: (status, body).
    pub fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<(u16, String)> {
        self.http_with(method, path, body, &[])
    }

    /// [`Rackboot::http`] with extra request headers (`"Accept: …"`).
    pub fn http_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[&str],
    ) -> anyhow::Result<(u16, String)> {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.ns,
            "curl",
            "-s",
            "-m",
            "10",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ]);
        if !self.token.is_empty() {
            c.args(["-H", &format!("Authorization: Bearer {}", self.token)]);
        }
        for h in headers {
            c.args(["-H", h]);
        }
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        c.arg(format!("http://{}{path}", self.addr));
        let out = c.output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
    }

    fn expect(&self, method: &str, path: &str, body: &str, want: u16) -> anyhow::Result<()> {
        let (code, resp) = self.http(method, path, Some(body))?;
        if code != want {
            bail!("{method} {path} → {code} (wanted {want}): {resp}");
        }
        Ok(())
    }

    /// Registers a node the way an OpenCHAMI user would: SMD Component + EthernetInterface, BSS
    /// boot parameters pointing at the imported test kernel and initrd.
    pub fn register_node(&self, xname: &str, nid: u32, mac: &str, ip: &str) -> anyhow::Result<()> {
        self.expect(
            "POST",
            "/hsm/v2/State/Components",
            &format!(r#"{{"Components":[{{"ID":"{xname}","Type":"Node","State":"Ready","Enabled":true,"NID":{nid},"Arch":"X86","Role":"Compute"}}]}}"#),
            204,
        )?;
        self.expect(
            "POST",
            "/hsm/v2/Inventory/EthernetInterfaces",
            &format!(r#"{{"MACAddress":"{mac}","IPAddresses":[{{"IPAddress":"{ip}"}}],"ComponentID":"{xname}","Type":"Node"}}"#),
            201,
        )?;
        self.expect(
            "PUT",
            "/boot/v1/bootparameters",
            &format!(
                r#"{{"macs":["{mac}"],"kernel":"http://{SERVER}/images/vmlinuz","initrd":"http://{SERVER}/images/initrd.img","params":"console=ttyS0 quiet"}}"#
            ),
            200,
        )
    }

    /// Imports build/node/{vmlinuz,initrd.img} with `rackboot image import` (beside the server).
    pub fn import_node_images(&self) -> anyhow::Result<()> {
        let bin = rackboot_bin()?;
        for (name, file) in [
            ("vmlinuz", "build/node/vmlinuz"),
            ("initrd.img", "build/node/initrd.img"),
        ] {
            let st = Command::new(&bin)
                .args(["image", "import", "--data-dir"])
                .arg(self.data_dir.path())
                .arg(name)
                .arg(root().join(file))
                .stdout(Stdio::null())
                .status()?;
            if !st.success() {
                bail!("image import {name} failed");
            }
        }
        Ok(())
    }
}

impl Drop for Rackboot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- rackboot log ----\n{}", self.log_text());
        }
    }
}

/// Which firmware path a VM exercises (each needs its own QEMU setup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS with QEMU's iPXE option ROM: the first DHCP already says user-class iPXE.
    SeaBiosIpxe,
    /// OVMF with `romfile=` on the NIC: EDK2's own PXE client, TFTP of snponly.efi.
    OvmfPxe,
    /// OVMF UEFI HTTP Boot: PXE disabled through OVMF's fw_cfg knobs, vendor class HTTPClient.
    OvmfHttp,
}

/// A QEMU VM whose serial console goes to a file.
pub struct Qemu {
    child: Child,
    pub console: PathBuf,
    _vars: Option<tempfile::NamedTempFile>,
    _dir: tempfile::TempDir,
}

impl Qemu {
    pub fn start(ns: &mut Netns, fw: Firmware, mac: &str) -> anyhow::Result<Qemu> {
        let tap = ns.add_tap()?;
        let dir = tempfile::tempdir()?;
        let console = dir.path().join("console.log");
        let mut c = ns.cmd("qemu-system-x86_64");
        c.args([
            "-accel",
            "tcg",
            "-m",
            "512",
            "-display",
            "none",
            "-no-reboot",
            "-monitor",
            "none",
        ]);
        c.arg("-serial").arg(format!("file:{}", console.display()));
        c.args([
            "-netdev",
            &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
        ]);
        let mut vars = None;
        match fw {
            Firmware::SeaBiosIpxe => {
                c.args([
                    "-boot",
                    "n",
                    "-device",
                    &format!("virtio-net-pci,netdev=n0,mac={mac}"),
                ]);
            }
            Firmware::OvmfPxe | Firmware::OvmfHttp => {
                let v = tempfile::NamedTempFile::new()?;
                fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", v.path())
                    .context("ovmf is not installed")?;
                c.args([
                    "-drive",
                    "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
                ]);
                c.arg("-drive")
                    .arg(format!("if=pflash,format=raw,file={}", v.path().display()));
                // romfile= removes QEMU's iPXE ROM so EDK2's own network stack runs.
                c.args([
                    "-device",
                    &format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
                ]);
                if fw == Firmware::OvmfHttp {
                    // OVMF reads these fw_cfg knobs: without PXE it goes to UEFI HTTP Boot.
                    c.args(["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no"]);
                    c.args(["-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no"]);
                }
                vars = Some(v);
            }
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Qemu {
            child,
            console,
            _vars: vars,
            _dir: dir,
        })
    }

    /// Waits until the console shows a line containing `pattern`; returns that line.
    /// Everything the node printed on its serial console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text =
                String::from_utf8_lossy(&fs::read(&self.console).unwrap_or_default()).into_owned();
            if let Some(line) = text.lines().find(|l| l.contains(pattern)) {
                return Ok(line.to_owned());
            }
            if Instant::now() > deadline || self.child.try_wait()?.is_some() {
                let tail: String = text
                    .chars()
                    .rev()
                    .take(3000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                bail!("console never showed {pattern:?}; last output:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `key=value` from the node's report line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
}

/// The numbers of one perfdhcp run (DORA, relay mode).
#[derive(Debug, Clone, Copy, Default)]
pub struct PerfdhcpStats {
    pub discovers: u64,
    pub offers: u64,
    pub requests: u64,
    pub acks: u64,
    pub non_unique: u64,
}

impl PerfdhcpStats {
    /// Parses perfdhcp's final report.
    pub fn parse(text: &str) -> Option<PerfdhcpStats> {
        let section = |name: &str| {
            text.split(name)
                .nth(1)
                .unwrap_or("")
                .trim_start_matches('*')
                .split("***")
                .next()
                .unwrap_or("")
                .to_owned()
        };
        let get = |sec: &str, key: &str| -> Option<u64> {
            sec.lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .and_then(|v| {
                    v.trim_start_matches(':')
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
        };
        let d = section("DISCOVER-OFFER");
        let r = section("REQUEST-ACK");
        Some(PerfdhcpStats {
            discovers: get(&d, "sent packets")?,
            offers: get(&d, "received packets")?,
            requests: get(&r, "sent packets")?,
            acks: get(&r, "received packets")?,
            non_unique: get(&r, "non unique addresses").unwrap_or(0),
        })
    }

    /// Lost exchanges as a fraction of started ones.
    pub fn drop_ratio(&self) -> f64 {
        if self.discovers == 0 {
            return 1.0;
        }
        1.0 - self.acks as f64 / self.discovers as f64
    }
}

/// The sushy-emulator from `build/venv` (installed by `cargo xtask deps`), or a skip (a panic in
/// CI) when it is missing.
pub fn preflight_sushy() -> Option<PathBuf> {
    let bin = root().join("build/venv/bin/sushy-emulator");
    if bin.exists() {
        return Some(bin);
    }
    let msg = "sushy-emulator missing (build/venv): `cargo xtask deps` installs it";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED (not in CI): {msg}");
    None
}

/// An emulated BMC: sushy-emulator's fake driver in a namespace, over TLS (a fresh
/// self-signed certificate) with basic auth.
pub struct FakeBmc {
    child: Child,
    ns: String,
    pub ip: String,
    pub dir: tempfile::TempDir,
    user: String,
    password: String,
    bin: PathBuf,
}

impl FakeBmc {
    /// Starts a BMC at `ip` (added to br0 when `ns` has one; a client namespace brings its own
    /// address) emulating `systems` = (uuid, name, NIC MAC).
    pub fn start(
        ns: &Netns,
        bin: &Path,
        ip: &str,
        systems: &[(&str, &str, &str)],
        user: &str,
        password: &str,
    ) -> anyhow::Result<FakeBmc> {
        let _ = ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "br0"]);
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let py = bin.with_file_name("python3");
        let out = Command::new(&py)
            .args([
                "-c",
                "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(4)).decode())",
                password,
            ])
            .output()?;
        if !out.status.success() {
            bail!("bcrypt: {}", String::from_utf8_lossy(&out.stderr));
        }
        fs::write(
            d.join("htpasswd"),
            format!("{user}:{}", String::from_utf8_lossy(&out.stdout).trim()),
        )?;
        let systems_py: Vec<String> = systems
            .iter()
            .map(|(uuid, name, mac)| {
                format!("{{'uuid': '{uuid}', 'name': '{name}', 'power_state': 'Off', 'nics': [{{'mac': '{mac}', 'ip': '0.0.0.0'}}]}}")
            })
            .collect();
        fs::write(
            d.join("emulator.conf"),
            format!(
                "SUSHY_EMULATOR_FAKE_DRIVER = True\n\
                 SUSHY_EMULATOR_AUTH_FILE = '{auth}'\n\
                 SUSHY_EMULATOR_STATE_DIR = '{state}'\n\
                 SUSHY_EMULATOR_FAKE_SYSTEMS = [{systems}]\n",
                auth = d.join("htpasswd").display(),
                state = d.join("state").display(),
                systems = systems_py.join(", "),
            ),
        )?;
        let mut bmc = FakeBmc {
            child: Command::new("true").spawn()?,
            ns: ns.name.clone(),
            ip: ip.to_owned(),
            dir,
            user: user.to_owned(),
            password: password.to_owned(),
            bin: bin.to_owned(),
        };
        bmc.new_cert()?;
        bmc.spawn()?;
        Ok(bmc)
    }

    /// A fresh self-signed certificate (the next start presents it).
    pub fn new_cert(&self) -> anyhow::Result<()> {
        let d = self.dir.path();
        sh(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=bmc",
            ])
            .arg("-addext")
            .arg(format!("subjectAltName=IP:{}", self.ip))
            .arg("-keyout")
            .arg(d.join("key.pem"))
            .arg("-out")
            .arg(d.join("cert.pem"))
            .stderr(Stdio::null()))
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let d = self.dir.path();
        let log = fs::File::create(d.join("emulator.log"))?;
        self.child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(&self.bin)
            .arg("--config")
            .arg(d.join("emulator.conf"))
            .args(["-i", &self.ip, "-p", "443"])
            .arg("--ssl-certificate")
            .arg(d.join("cert.pem"))
            .arg("--ssl-key")
            .arg(d.join("key.pem"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.ns,
                    "curl",
                    "-sk",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                ])
                .arg(format!("https://{}/redfish/v1/", self.ip))
                .output()?;
            if String::from_utf8_lossy(&out.stdout) == "200" {
                return Ok(());
            }
            if Instant::now() > deadline || self.child.try_wait()?.is_some() {
                bail!(
                    "sushy-emulator did not come up: {}",
                    fs::read_to_string(d.join("emulator.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Stops and starts the emulator (state is kept in its state dir).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.spawn()
    }

    /// A Redfish resource from the emulator, with its credentials.
    pub fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "curl", "-sk", "-u"])
            .arg(format!("{}:{}", self.user, self.password))
            .arg(format!("https://{}{path}", self.ip))
            .output()?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

impl Drop for FakeBmc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redfish mockup served by sushy-tools' `sushy-static`: a vendor's tree, read-only, no
/// auth, POSTs answer 204. Plain HTTP on port 8000 (rackboot holds :80 in its namespace), or
/// HTTPS with its own self-signed certificate ([`StaticBmc::start_tls`]), where it answers like
/// many real BMCs: `HTTP/1.0`, no Content-Length, and a TCP close without TLS close_notify.
pub struct StaticBmc {
    child: Child,
    pub ip: String,
    /// `http://<ip>:8000` or `https://<ip>:<port>`.
    pub url: String,
    log: tempfile::NamedTempFile,
    /// The certificate and key (HTTPS only).
    tls: Option<tempfile::TempDir>,
}

impl StaticBmc {
    /// Serves the mockup `dir` (`<dir>/index.json` is `/redfish/v1/`) over plain HTTP at
    /// `ip`:8000 (added to br0 when `ns` has one; a client namespace brings its own address).
    pub fn start(
        ns: &Netns,
        sushy_emulator: &Path,
        ip: &str,
        dir: &Path,
    ) -> anyhow::Result<StaticBmc> {
        Self::spawn(ns, sushy_emulator, ip, dir, 8000, None)
    }

    /// The same over HTTPS on `port`, with a fresh self-signed certificate for `ip`.
    pub fn start_tls(
        ns: &Netns,
        sushy_emulator: &Path,
        ip: &str,
        dir: &Path,
        port: u16,
    ) -> anyhow::Result<StaticBmc> {
        let certs = tempfile::tempdir()?;
        sh(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=static-bmc", "-addext"])
            .arg(format!("subjectAltName=IP:{ip}"))
            .arg("-keyout")
            .arg(certs.path().join("key.pem"))
            .arg("-out")
            .arg(certs.path().join("cert.pem"))
            .stderr(Stdio::null()))?;
        Self::spawn(ns, sushy_emulator, ip, dir, port, Some(certs))
    }

    /// SHA-256 (lowercase hex) of the certificate's DER, as a pin records it (HTTPS only).
    pub fn cert_sha256(&self) -> anyhow::Result<String> {
        let Some(certs) = &self.tls else {
            bail!("{} serves plain HTTP", self.url);
        };
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(certs.path().join("cert.pem"))
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let Some((_, hex)) = text.trim().split_once('=') else {
            bail!("openssl x509 -fingerprint: {text}");
        };
        Ok(hex.replace(':', "").to_ascii_lowercase())
    }

    fn spawn(
        ns: &Netns,
        sushy_emulator: &Path,
        ip: &str,
        dir: &Path,
        port: u16,
        tls: Option<tempfile::TempDir>,
    ) -> anyhow::Result<StaticBmc> {
        let _ = ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "br0"]);
        let log = tempfile::NamedTempFile::new()?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name])
            .arg(sushy_emulator.with_file_name("sushy-static"))
            .args(["-i", ip, "-p", &port.to_string(), "-m"])
            .arg(dir);
        if let Some(certs) = &tls {
            cmd.arg("--ssl-certificate")
                .arg(certs.path().join("cert.pem"))
                .arg("--ssl-key")
                .arg(certs.path().join("key.pem"));
        }
        let child = cmd.stdout(Stdio::null()).stderr(log.reopen()?).spawn()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut bmc = StaticBmc {
            child,
            ip: ip.to_owned(),
            url: format!("{scheme}://{ip}:{port}"),
            log,
            tls,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns.name, "curl", "-sk", "-o", "/dev/null"])
                .args(["-w", "%{http_code}"])
                .arg(format!("{}/redfish/v1/", bmc.url))
                .output()?;
            if String::from_utf8_lossy(&out.stdout) == "200" {
                return Ok(bmc);
            }
            if Instant::now() > deadline || bmc.child.try_wait()?.is_some() {
                bail!(
                    "sushy-static did not come up: {}",
                    fs::read_to_string(bmc.log.path()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for StaticBmc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether libvirt is there for [`LibvirtBmc`]: `libvirtd`, `unshare`, QEMU (the qemu driver
/// checks the emulator when a domain is defined) and the libvirt binding in `build/venv` (all
/// installed by `cargo xtask deps`). A skip outside CI, a panic in CI.
pub fn preflight_libvirt() -> bool {
    let mut missing = Vec::new();
    if !Path::new(LIBVIRTD).exists() {
        missing.push("libvirtd (libvirt-daemon)");
    }
    for prog in ["unshare", "qemu-system-x86_64"] {
        if !have(prog) {
            missing.push(prog);
        }
    }
    let imports = Command::new(root().join("build/venv/bin/python3"))
        .args(["-c", "import libvirt"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !imports {
        missing.push("the libvirt binding in build/venv (python3-libvirt)");
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "libvirt prerequisites missing: {}; `cargo xtask deps` installs them",
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED (not in CI): {msg}");
    false
}

const LIBVIRTD: &str = "/usr/sbin/libvirtd";

/// Runs `libvirtd` as root in a private mount namespace: libvirt's fixed system directories
/// (`/etc/libvirt`, `/run/libvirt`, `/var/lib/libvirt`, `/var/cache/libvirt`,
/// `/var/log/libvirt`) are bind mounts of directories under `$1`, so daemons of parallel tests
/// never share state. Debian's build names `libvirt-qemu` as the qemu driver's user; the package
/// that creates that user (libvirt-daemon-system) is not installed, so the namespace sees a copy
/// of /etc/passwd and /etc/group that has it (qemu.conf then says root; no domain ever runs).
const LIBVIRTD_SCRIPT: &str = r#"set -e
d="$1"
cp /etc/passwd "$d/passwd"
cp /etc/group "$d/group"
grep -q '^libvirt-qemu:' "$d/passwd" || echo 'libvirt-qemu:x:0:0::/var/lib/libvirt:/usr/sbin/nologin' >>"$d/passwd"
grep -q '^libvirt-qemu:' "$d/group" || echo 'libvirt-qemu:x:0:' >>"$d/group"
mount --bind "$d/passwd" /etc/passwd
mount --bind "$d/group" /etc/group
for m in etc:/etc/libvirt run:/run/libvirt lib:/var/lib/libvirt cache:/var/cache/libvirt log:/var/log/libvirt; do
  mkdir -p "$d/${m%%:*}" "${m#*:}"
  mount --bind "$d/${m%%:*}" "${m#*:}"
done
exec /usr/sbin/libvirtd -f "$d/etc/libvirtd.conf" -p "$d/libvirtd.pid"
"#;

/// Defines domains (XML documents in argv) through a libvirt URI; prints each UUID.
const DEFINE_PY: &str = "import sys, libvirt
c = libvirt.open(sys.argv[1])
for xml in sys.argv[2:]:
    print(c.defineXML(xml).UUIDString())
c.close()
";

/// Prints the inactive XML of the domain named (or with the UUID) `argv[2]`.
const DOMAIN_XML_PY: &str = "import sys, uuid, libvirt
c = libvirt.openReadOnly(sys.argv[1])
try:
    d = c.lookupByUUID(uuid.UUID(sys.argv[2]).bytes)
except ValueError:
    d = c.lookupByName(sys.argv[2])
print(d.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
c.close()
";

/// An emulated BMC backed by libvirt: a private `libvirtd` (qemu driver, root, its own
/// directories and socket under [`LibvirtBmc::dir`], no systemd) holding one defined, never
/// started domain per system, and sushy-emulator's libvirt driver in front of it, in a namespace,
/// over TLS (a fresh self-signed certificate) or plain HTTP, with basic auth. Unlike the fake
/// driver, the libvirt driver keeps firmware versions (in each domain's `<metadata>`), so
/// `UpdateService.SimpleUpdate` changes a system's `BiosVersion`.
pub struct LibvirtBmc {
    sushy: Child,
    libvirtd: Child,
    ns: String,
    pub ip: String,
    /// The libvirt URI of the private daemon (its socket under `dir`).
    pub uri: String,
    pub dir: tempfile::TempDir,
    tls: bool,
    user: String,
    password: String,
    python: PathBuf,
}

impl LibvirtBmc {
    /// Starts a BMC at `ip` (added to br0 when `ns` has one; a client namespace brings its own
    /// address) emulating `systems` = (uuid, name, NIC MAC): HTTPS on 443 when `tls`, else HTTP
    /// on 80. `sushy` is `build/venv/bin/sushy-emulator` ([`preflight_sushy`]).
    pub fn start(
        ns: &Netns,
        sushy: &Path,
        ip: &str,
        systems: &[(&str, &str, &str)],
        user: &str,
        password: &str,
        tls: bool,
    ) -> anyhow::Result<LibvirtBmc> {
        let _ = ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "br0"]);
        let dir = tempfile::tempdir()?;
        let d = dir.path().to_owned();
        let python = sushy.with_file_name("python3");
        for sub in ["etc", "run", "lib", "cache", "log", "sock", "state"] {
            fs::create_dir_all(d.join(sub))?;
        }
        let sock = d.join("sock");
        fs::write(
            d.join("etc/libvirtd.conf"),
            format!(
                "unix_sock_dir = \"{}\"\n\
                 unix_sock_rw_perms = \"0700\"\n\
                 auth_unix_rw = \"none\"\n\
                 auth_unix_ro = \"none\"\n\
                 log_outputs = \"3:stderr\"\n",
                sock.display()
            ),
        )?;
        fs::write(
            d.join("etc/qemu.conf"),
            "user = \"root\"\ngroup = \"root\"\n",
        )?;
        let uri = format!(
            "qemu:///system?socket={}",
            sock.join("libvirt-sock").display()
        );
        let libvirtd = ns
            .cmd("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                LIBVIRTD_SCRIPT,
                "sh",
            ])
            .arg(&d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(d.join("libvirtd.log"))?)
            .spawn()?;
        let mut bmc = LibvirtBmc {
            sushy: Command::new("true").spawn()?,
            libvirtd,
            ns: ns.name.clone(),
            ip: ip.to_owned(),
            uri,
            dir,
            tls,
            user: user.to_owned(),
            password: password.to_owned(),
            python,
        };
        bmc.define(systems)?;
        htpasswd(&bmc.python, &d.join("htpasswd"), user, password)?;
        fs::write(
            d.join("emulator.conf"),
            format!(
                "SUSHY_EMULATOR_AUTH_FILE = '{auth}'\n\
                 SUSHY_EMULATOR_STATE_DIR = '{state}'\n\
                 SUSHY_EMULATOR_LIBVIRT_URI = '{uri}'\n",
                auth = d.join("htpasswd").display(),
                state = d.join("state").display(),
                uri = bmc.uri,
            ),
        )?;
        let mut c = ns.cmd(sushy.to_str().context("sushy-emulator path")?);
        c.arg("--config")
            .arg(d.join("emulator.conf"))
            .args(["-i", ip, "-p", if tls { "443" } else { "80" }])
            // The environment wins over the config file and --libvirt-uri in sushy-emulator:
            // set it, so nothing inherited points the driver elsewhere.
            .env("SUSHY_EMULATOR_LIBVIRT_URI", &bmc.uri)
            .env_remove("SUSHY_EMULATOR_LIBVIRT_URL");
        if tls {
            self_signed_cert(&d, ip)?;
            c.arg("--ssl-certificate")
                .arg(d.join("cert.pem"))
                .arg("--ssl-key")
                .arg(d.join("key.pem"));
        }
        bmc.sushy = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(d.join("emulator.log"))?)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("ip")
                .args(["netns", "exec", &bmc.ns, "curl", "-sk", "-o", "/dev/null"])
                .args(["-w", "%{http_code}"])
                .arg(format!("{}/redfish/v1/", bmc.base()))
                .output()?;
            if String::from_utf8_lossy(&out.stdout) == "200" {
                return Ok(bmc);
            }
            if Instant::now() > deadline || bmc.sushy.try_wait()?.is_some() {
                bail!("sushy-emulator (libvirt) did not come up:\n{}", bmc.logs());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Defines the systems' domains once the daemon answers (its socket appears within a second
    /// or two; the first definition also probes QEMU's capabilities).
    fn define(&mut self, systems: &[(&str, &str, &str)]) -> anyhow::Result<()> {
        let qemu = String::from_utf8_lossy(
            &Command::new("sh")
                .args(["-c", "command -v qemu-system-x86_64"])
                .output()?
                .stdout,
        )
        .trim()
        .to_owned();
        let xmls: Vec<String> = systems
            .iter()
            .map(|(uuid, name, mac)| {
                format!(
                    "<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid>\
                     <memory unit='MiB'>64</memory><vcpu>1</vcpu>\
                     <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>\
                     <devices><emulator>{qemu}</emulator>\
                     <interface type='user'><mac address='{mac}'/><model type='virtio'/></interface>\
                     </devices></domain>"
                )
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = Command::new(&self.python)
                .args(["-c", DEFINE_PY, &self.uri])
                .args(&xmls)
                .output()?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline || self.libvirtd.try_wait()?.is_some() {
                bail!(
                    "cannot define the domains: {}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// `https://IP` or `http://IP`.
    pub fn base(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.ip)
    }

    /// A Redfish resource from the emulator, with its credentials.
    pub fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "curl", "-sk", "-u"])
            .arg(format!("{}:{}", self.user, self.password))
            .arg(format!("{}{path}", self.base()))
            .output()?;
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "GET {path}: not JSON: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// A domain's definition as libvirt holds it (by name or UUID), read straight from the
    /// daemon: the firmware versions the libvirt driver keeps are in its `<metadata>`.
    pub fn domain_xml(&self, domain: &str) -> anyhow::Result<String> {
        let out = Command::new(&self.python)
            .args(["-c", DOMAIN_XML_PY, &self.uri, domain])
            .output()?;
        if !out.status.success() {
            bail!(
                "cannot read domain {domain}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// The emulator's and the daemon's logs so far.
    pub fn logs(&self) -> String {
        let d = self.dir.path();
        format!(
            "---- sushy-emulator ----\n{}\n---- libvirtd ----\n{}",
            fs::read_to_string(d.join("emulator.log")).unwrap_or_default(),
            fs::read_to_string(d.join("libvirtd.log")).unwrap_or_default()
        )
    }
}

impl Drop for LibvirtBmc {
    fn drop(&mut self) {
        let _ = self.sushy.kill();
        let _ = self.sushy.wait();
        // libvirtd is the child itself (ip, unshare and sh exec it); its mount namespace, and so
        // its bind mounts, go with it.
        let _ = self.libvirtd.kill();
        let _ = self.libvirtd.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// An htpasswd file (bcrypt, as sushy-emulator's auth reads it) for one user.
fn htpasswd(python: &Path, file: &Path, user: &str, password: &str) -> anyhow::Result<()> {
    let out = Command::new(python)
        .args([
            "-c",
            "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(4)).decode())",
            password,
        ])
        .output()?;
    if !out.status.success() {
        bail!("bcrypt: {}", String::from_utf8_lossy(&out.stderr));
    }
    fs::write(
        file,
        format!("{user}:{}", String::from_utf8_lossy(&out.stdout).trim()),
    )?;
    Ok(())
}

/// A fresh self-signed certificate for `ip`: `dir/cert.pem`, `dir/key.pem`.
fn self_signed_cert(dir: &Path, ip: &str) -> anyhow::Result<()> {
    sh(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=bmc",
        ])
        .arg("-addext")
        .arg(format!("subjectAltName=IP:{ip}"))
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(Stdio::null()))
}

/// The test node's initrd with the `rackboot` binary (stripped) and the C libraries it links
/// appended as a second cpio archive (the kernel unpacks both), so the node's init can run
/// `rackboot agent`. Written into `dir`.
pub fn agent_initrd(dir: &Path) -> anyhow::Result<PathBuf> {
    let stage = dir.join("agent-root");
    fs::create_dir_all(stage.join("bin"))?;
    let bin = rackboot_bin()?;
    let target = stage.join("bin/rackboot");
    fs::copy(&bin, &target)?;
    sh(Command::new("strip").arg(&target))?;
    let ldd = Command::new("ldd").arg(&bin).output()?;
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        let Some(path) = path else { continue };
        let rel = path.strip_prefix("/").unwrap_or(&path);
        let dest = stage.join(rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(&path, &dest).with_context(|| format!("copy {}", path.display()))?;
    }
    // The uncompressed archive goes first (as early-microcode archives do): the kernel then
    // goes on to the gzip'd node initramfs.
    let out = dir.join("initrd-agent.img");
    sh(Command::new("sh").arg("-c").arg(format!(
        "cd '{}' && find . | LC_ALL=C sort | cpio -o -H newc --quiet > '{}' && cat '{}' >> '{}'",
        stage.display(),
        out.display(),
        root().join("build/node/initrd.img").display(),
        out.display()
    )))?;
    Ok(out)
}

impl Rackboot {
    /// `rackboot image import NAME FILE` beside the server.
    pub fn import_image(&self, name: &str, file: &Path) -> anyhow::Result<()> {
        let st = Command::new(rackboot_bin()?)
            .args(["image", "import", "--data-dir"])
            .arg(self.data_dir.path())
            .arg(name)
            .arg(file)
            .stdout(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("image import {name} failed");
        }
        Ok(())
    }
}

/// Runs `prog args` in `ns` with `env`, feeding `stdin`: (success, stdout then stderr).
pub fn run_in(
    ns: &Netns,
    prog: &str,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> anyhow::Result<(bool, String)> {
    use std::io::Write;
    let mut child = ns
        .cmd(prog)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(s), Some(mut i)) = (stdin, child.stdin.take()) {
        i.write_all(s.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    ))
}

impl Rackboot {
    /// The `rackboot` CLI against this server, from inside `ns` (its API on port 80 of the
    /// namespace address, a token minted from its data dir): (success, stdout then stderr).
    pub fn cli(&self, ns: &Netns, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        let bin = rackboot_bin().expect("rackboot binary");
        let dd = self.data_dir.path().to_string_lossy().into_owned();
        let env = [
            ("RACKBOOT_URL", "http://192.0.2.1"),
            ("RACKBOOT_DATA_DIR", dd.as_str()),
        ];
        run_in(ns, &bin.to_string_lossy(), args, &env, stdin).expect("run the rackboot CLI")
    }
}

impl Rackboot {
    /// Starts rackboot on a data dir the test made (e.g. on a small filesystem), logging to
    /// `log` (which may live elsewhere), with `env`.
    pub fn start_in_dir(
        ns: &Netns,
        data_dir: tempfile::TempDir,
        log: PathBuf,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Rackboot> {
        Self::start_logged(ns, &rackboot_bin()?, data_dir, log, env, ns.addr.clone())
    }
}
