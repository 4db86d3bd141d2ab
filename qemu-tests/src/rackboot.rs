//! The rackboot process under test: `rackboot serve` in a namespace (start, kill -9, restart),
//! its HTTP API and CLI from inside the namespace, node registration and image imports.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Netns, SERVER, rackboot_bin, root, run_in};

fn sh_status(cmd: &mut Command) -> anyhow::Result<()> {
    if !cmd.status()?.success() {
        bail!("{cmd:?} failed");
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
    /// The server's `RACKBOOT_TPM*` settings: the CLI minting tokens from its data dir needs
    /// the same TPM (inside the namespace, for a swtpm there).
    tpm_env: Vec<(String, String)>,
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

    /// [`Rackboot::start_with_env_at`] with a given binary (benchmarks use the release build).
    pub fn start_bin_env_at(
        ns: &Netns,
        bin: &Path,
        env: &[(&str, &str)],
        addr: &str,
    ) -> anyhow::Result<Rackboot> {
        Self::start_in(ns, bin, tempfile::tempdir()?, env, addr.to_owned())
    }

    /// The server's process id (`ip netns exec` execs it, so this is rackboot itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

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

    /// Starts `bin` under `wrapper` (e.g. `setpriv --reuid … --`, the unit's user and
    /// capabilities) on a data dir the test prepared.
    pub fn start_wrapped(
        ns: &Netns,
        wrapper: &[&str],
        bin: &Path,
        data_dir: tempfile::TempDir,
        log: PathBuf,
    ) -> anyhow::Result<Rackboot> {
        Self::start_full(ns, wrapper, bin, data_dir, log, &[], ns.addr.clone())
    }

    /// SIGTERMs the server (a clean shutdown, as systemd stops it) and waits for it to exit.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        sh_status(Command::new("kill").args(["-TERM", &self.child.id().to_string()]))?;
        Ok(self.child.wait()?)
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
        Self::start_full(ns, &[], bin, data_dir, log, env, addr)
    }

    fn start_full(
        ns: &Netns,
        wrapper: &[&str],
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
        let bin_str = bin.to_str().context("binary path")?;
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = ns.cmd(first);
                c.args(rest).arg(bin_str);
                c
            }
            None => ns.cmd(bin_str),
        };
        let child = cmd
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
            tpm_env: env
                .iter()
                .filter(|(k, _)| k.starts_with("RACKBOOT_TPM"))
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
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
        rb.token = rb.mint_token(bin, "30m")?;
        Ok(rb)
    }

    /// A fresh admin token for this server, valid for `ttl` ("30m"), minted with `bin`'s
    /// `rackboot token create` from the data dir (as an operator on the appliance would).
    pub fn mint_token(&self, bin: &Path, ttl: &str) -> anyhow::Result<String> {
        let bin = bin.to_str().context("binary path")?;
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, bin])
            .envs(self.tpm_env.iter().map(|(k, v)| (k, v)))
            .args([
                "token",
                "create",
                "--scope",
                "admin",
                "--ttl",
                ttl,
                "--data-dir",
            ])
            .arg(self.data_dir.path())
            .output()?;
        if !out.status.success() {
            bail!(
                "token create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
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

    /// The identity audit rows about `node` (`GET /identity/v1/audit?node=`), oldest first.
    pub fn identity_audit(&self, node: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let (code, body) = self.http("GET", &format!("/identity/v1/audit?node={node}"), None)?;
        if code != 200 {
            bail!("GET /identity/v1/audit?node={node}: {code} {body}");
        }
        match serde_json::from_str(&body)? {
            serde_json::Value::Array(rows) => Ok(rows),
            other => bail!("the audit is not a list: {other}"),
        }
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

impl Drop for Rackboot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- rackboot log ----\n{}", self.log_text());
        }
    }
}
