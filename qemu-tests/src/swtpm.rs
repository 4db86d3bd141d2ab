#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Software TPMs for the TPM tests: a manufacturer (swtpm_localca's CAs) that makes TPM states
//! with EK certificates, swtpm on TCP inside a namespace (for tpm2-tools and the host agent),
//! and swtpm on a UNIX socket for a QEMU node's `tpm-tis` device.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Netns;

/// Runs `cmd`, panicking with its output when it fails; its stdout.
pub fn sh(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TPM manufacturer: swtpm_localca's root and issuing CA in a directory of the test's.
pub struct Manufacturer {
    dir: tempfile::TempDir,
}

impl Manufacturer {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Manufacturer {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("ca")).unwrap();
        std::fs::write(
            d.join("localca.conf"),
            format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
                ca = d.join("ca").display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("setup.conf"),
            format!(
                "create_certs_tool = swtpm_localca\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = /etc/swtpm-localca.options\nactive_pcr_banks = sha256\n",
                d.join("localca.conf").display()
            ),
        )
        .unwrap();
        Manufacturer { dir }
    }

    /// A new TPM's state, with an RSA EK and its certificate from this manufacturer.
    pub fn tpm(&self, name: &str) -> PathBuf {
        let state = self.dir.path().join(name);
        std::fs::create_dir_all(&state).unwrap();
        sh(Command::new("swtpm_setup")
            .args([
                "--tpm2",
                "--create-ek-cert",
                "--pcr-banks",
                "sha256",
                "--tpmstate",
            ])
            .arg(&state)
            .arg("--config")
            .arg(self.dir.path().join("setup.conf")));
        state
    }

    /// The EK CA bundle an operator would configure: issuing CA and root.
    pub fn bundle(&self) -> PathBuf {
        let ca = self.dir.path().join("ca");
        let mut pem = std::fs::read_to_string(ca.join("issuercert.pem")).unwrap();
        pem.push_str(&std::fs::read_to_string(ca.join("swtpm-localca-rootca-cert.pem")).unwrap());
        let out = self.dir.path().join("ek-ca.pem");
        std::fs::write(&out, pem).unwrap();
        out
    }
}

/// swtpm serving `state` on 127.0.0.1:`port` inside a namespace.
pub struct Swtpm {
    child: Child,
    pub tcti: String,
}

impl Swtpm {
    pub fn start(ns: &Netns, state: &Path, port: u16) -> Swtpm {
        let child = ns
            .cmd("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .args(["--server", &format!("type=tcp,port={port}")])
            .args(["--ctrl", &format!("type=tcp,port={}", port + 1)])
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Swtpm {
            child,
            tcti: format!("swtpm:host=127.0.0.1,port={port}"),
        };
        // Ready when it answers a command.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = ns
                .cmd("tpm2_getrandom")
                .args(["-T", &s.tcti, "4"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|st| st.success());
            if ok {
                return s;
            }
            assert!(Instant::now() < deadline, "swtpm did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a tpm2-tools command against this TPM in `dir`, then flushes the transient
    /// objects it left loaded (no resource manager here, and swtpm has three object slots).
    pub fn tools(&self, ns: &Netns, dir: &Path, prog: &str, args: &[&str]) -> String {
        let out = sh(ns
            .cmd(prog)
            .current_dir(dir)
            .env("TPM2TOOLS_TCTI", &self.tcti)
            .args(args));
        self.flush(ns);
        out
    }

    pub fn flush(&self, ns: &Netns) {
        sh(ns
            .cmd("tpm2_flushcontext")
            .env("TPM2TOOLS_TCTI", &self.tcti)
            .arg("-t"));
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// swtpm for a QEMU node: its control channel on a UNIX socket (QEMU's `-tpmdev emulator`).
pub struct VmTpm {
    child: Child,
    sock: PathBuf,
}

impl VmTpm {
    pub fn start(state: &Path) -> VmTpm {
        let sock = state.join("swtpm.sock");
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .args(["--ctrl", &format!("type=unixio,path={}", sock.display())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "swtpm made no socket");
            std::thread::sleep(Duration::from_millis(50));
        }
        VmTpm { child, sock }
    }

    pub fn qemu_args(&self) -> Vec<String> {
        [
            "-chardev",
            &format!("socket,id=chrtpm,path={}", self.sock.display()),
            "-tpmdev",
            "emulator,id=tpm0,chardev=chrtpm",
            "-device",
            "tpm-tis,tpmdev=tpm0",
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

impl Drop for VmTpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
