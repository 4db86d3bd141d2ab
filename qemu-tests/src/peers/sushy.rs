//! sushy-tools BMCs: the emulator's fake driver ([`FakeBmc`]) and `sushy-static` serving a
//! vendor's mockup ([`StaticBmc`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;

use super::{htpasswd, self_signed_cert};
use crate::{Netns, sh};

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
        htpasswd(&py, &d.join("htpasswd"), user, password)?;
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
        self_signed_cert(self.dir.path(), &self.ip)
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
