//! QEMU nodes: a VM with real firmware (SeaBIOS + iPXE, OVMF PXE, OVMF HTTP Boot) on a TAP of
//! the namespace, its serial console in a file.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::Netns;

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
        Self::start_with(ns, fw, mac, &[])
    }

    /// [`Qemu::start`] with extra QEMU arguments (e.g. a TPM: `-chardev`, `-tpmdev`, `-device`).
    pub fn start_with(
        ns: &mut Netns,
        fw: Firmware,
        mac: &str,
        extra: &[String],
    ) -> anyhow::Result<Qemu> {
        let tap = ns.add_tap()?;
        let dir = tempfile::tempdir()?;
        let console = dir.path().join("console.log");
        let mut c = ns.cmd("qemu-system-x86_64");
        c.args([
            "-accel",
            "tcg",
            // `max` gives the guest RDRAND, which its kernel trusts to seed the CRNG at boot:
            // without it, on a loaded host, the node agent's first getrandom() can block for
            // minutes waiting for entropy.
            "-cpu",
            "max",
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
        c.args(extra);
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

    /// Everything the node printed on its serial console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// Waits until the console shows a whole line (one the guest has finished writing)
    /// containing `pattern`; returns that line.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text =
                String::from_utf8_lossy(&fs::read(&self.console).unwrap_or_default()).into_owned();
            if let Some(line) = whole_lines(&text).find(|l| l.contains(pattern)) {
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

    /// Waits until the VM has powered off (QEMU runs with `-no-reboot`, so it exits).
    pub fn wait_powered_off(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("the VM did not power off within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of `text` that end in a newline: a line still being written is not one yet.
pub fn whole_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
}

/// Reads `key=value` from the node's report line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
}
