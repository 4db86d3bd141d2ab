//! A libvirt-backed BMC: a private `libvirtd` and sushy-emulator's libvirt driver.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{htpasswd, self_signed_cert};
use crate::{Netns, have, root};

/// Whether libvirt is there for [`LibvirtBmc`]: `libvirtd`, `unshare`, QEMU (the qemu driver
/// checks the emulator when a domain is defined) and the libvirt binding in `build/venv` (all
/// installed by `cargo xtask deps`). A skip outside CI, a panic in CI.
pub fn preflight_libvirt() -> bool {
    let mut missing = Vec::new();
    if !Path::new(LIBVIRTD).exists() {
        missing.push("libvirtd (libvirt-daemon)".to_owned());
    }
    for prog in ["unshare", "qemu-system-x86_64"] {
        if !have(prog) {
            missing.push(prog.to_owned());
        }
    }
    let imports = Command::new(root().join("build/venv/bin/python3"))
        .args(["-c", "import libvirt"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !imports {
        missing.push("the libvirt binding in build/venv (python3-libvirt)".to_owned());
    }
    crate::prerequisites("libvirt", &missing)
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
    /// on 80. `sushy` is `build/venv/bin/sushy-emulator`
    /// ([`preflight_sushy`](crate::preflight_sushy)).
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
