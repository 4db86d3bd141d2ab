//! `rackboot-tiny` under test: its flash image provisioned with `rackboot-tiny store`, then
//! `rackboot-tiny serve` on a TAP of the namespace's bridge (the TAP is its NIC: the profile
//! runs its own smoltcp stack, so it owns 192.0.2.1 and the bridge takes another address).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Netns, SERVER, rackboot_bin, root, run_in, sh};

/// The bridge's own address in a namespace that runs the tiny profile.
pub const TINY_BRIDGE: &str = "192.0.2.254/24";

/// A running `rackboot-tiny serve`.
pub struct Tiny {
    pub dir: tempfile::TempDir,
    pub flash: PathBuf,
    pub log: PathBuf,
    child: Child,
    ns: String,
}

/// Allocation counts and the stack gauge the profile reports (`/tiny/stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TinyStats {
    /// Allocations by the profile's code, pxe-core and embassy-net/smoltcp (must be 0).
    pub own: u64,
    /// Allocations inside embassy-net-tuntap (the TAP stand-in for an Ethernet driver).
    pub tap: u64,
    /// Allocations on other threads (async-io's reactor, embassy-time's std alarm thread).
    pub other_threads: u64,
    /// Deepest use of the executor thread's stack, bytes.
    pub stack_high_water: u64,
}

impl Tiny {
    /// The binary: `$RACKBOOT_TINY_BIN`, else `rackboot-tiny` beside the rackboot binary,
    /// else target/debug/rackboot-tiny (built if missing).
    pub fn bin() -> anyhow::Result<PathBuf> {
        if let Ok(p) = std::env::var("RACKBOOT_TINY_BIN") {
            return Ok(PathBuf::from(p));
        }
        let beside = rackboot_bin()?.with_file_name("rackboot-tiny");
        if beside.exists() {
            return Ok(beside);
        }
        let p = root().join("target/debug/rackboot-tiny");
        if !p.exists() {
            let ok = Command::new(env!("CARGO"))
                .args(["build", "-p", "rackboot-tiny"])
                .current_dir(root())
                .status()?;
            if !ok.success() {
                bail!("cannot build rackboot-tiny");
            }
        }
        Ok(p)
    }

    /// A flash image with the test network (192.0.2.1/24, pool .100–.199), the node image's
    /// kernel and initrd, and Debian's iPXE binaries.
    pub fn provision() -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
        let dir = tempfile::tempdir()?;
        let flash = dir.path().join("flash.img");
        let node = root().join("build/node");
        store(
            &flash,
            &[
                "net",
                "--server",
                &format!("{SERVER}/24"),
                "--pool",
                "192.0.2.100-192.0.2.199",
            ],
        )?;
        for (name, source) in [
            ("vmlinuz", node.join("vmlinuz")),
            ("initrd.img", node.join("initrd.img")),
            ("snponly.efi", PathBuf::from("/usr/lib/ipxe/snponly.efi")),
            (
                "undionly.kpxe",
                PathBuf::from("/usr/lib/ipxe/undionly.kpxe"),
            ),
        ] {
            store(&flash, &["boot-file", name, &source.to_string_lossy()])?;
        }
        Ok((dir, flash))
    }

    /// Reserves `ip` for `mac` as node `xname`/`nid` booting the node image.
    pub fn reserve(flash: &Path, mac: &str, ip: &str, xname: &str, nid: u32) -> anyhow::Result<()> {
        store(
            flash,
            &[
                "reserve",
                "--mac",
                mac,
                "--ip",
                ip,
                "--xname",
                xname,
                "--nid",
                &nid.to_string(),
                "--kernel",
                "vmlinuz",
                "--initrd",
                "initrd.img",
                "--params",
                "console=ttyS0 quiet",
            ],
        )
    }

    /// Starts the profile on a new TAP of `ns`'s bridge with the flash image in `dir`.
    pub fn start(ns: &mut Netns, dir: tempfile::TempDir, flash: PathBuf) -> anyhow::Result<Tiny> {
        Self::start_bin(ns, &Self::bin()?, dir, flash)
    }

    /// [`Tiny::start`] with a given binary (the bench uses the release build).
    pub fn start_bin(
        ns: &mut Netns,
        bin: &Path,
        dir: tempfile::TempDir,
        flash: PathBuf,
    ) -> anyhow::Result<Tiny> {
        let tap = ns.add_tap()?;
        let log = dir.path().join("tiny.log");
        let logf = fs::File::create(&log)?;
        let child = ns
            .cmd(&bin.to_string_lossy())
            .args(["serve", "--flash"])
            .arg(&flash)
            .args(["--tap", &tap])
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .context("start rackboot-tiny")?;
        let mut tiny = Tiny {
            dir,
            flash,
            log,
            child,
            ns: ns.name.clone(),
        };
        // Up once its HTTP answers (ARP and TCP through the bridge: the whole stack runs).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if tiny.stats_in(ns).is_ok() {
                return Ok(tiny);
            }
            if Instant::now() > deadline || tiny.child.try_wait()?.is_some() {
                bail!("rackboot-tiny did not come up:\n{}", tiny.log_text());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What it logged.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its allocation counts and stack gauge.
    pub fn stats_in(&self, ns: &Netns) -> anyhow::Result<TinyStats> {
        let (ok, out) = run_in(
            ns,
            "curl",
            &["-sS", "-m", "10", &format!("http://{SERVER}/tiny/stats")],
            &[],
            None,
        )?;
        if !ok {
            bail!("stats: {out}");
        }
        let get = |k: &str| -> anyhow::Result<u64> {
            out.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))
                .with_context(|| format!("no {k} in {out:?}"))?
                .parse()
                .with_context(|| format!("{k} in {out:?}"))
        };
        Ok(TinyStats {
            own: get("alloc_own")?,
            tap: get("alloc_tap")?,
            other_threads: get("alloc_other_threads")?,
            stack_high_water: get("stack_high_water")?,
        })
    }

    /// The flash store's contents as `rackboot-tiny store show` prints them.
    pub fn show(&self) -> anyhow::Result<String> {
        let out = Command::new(Self::bin()?)
            .args(["store", "--flash"])
            .arg(&self.flash)
            .arg("show")
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The namespace it runs in.
    pub fn ns(&self) -> &str {
        &self.ns
    }
}

impl Drop for Tiny {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn store(flash: &Path, args: &[&str]) -> anyhow::Result<()> {
    sh(Command::new(Tiny::bin()?)
        .args(["store", "--flash"])
        .arg(flash)
        .args(args))
}
