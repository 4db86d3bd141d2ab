//! The appliance VM as the appliance tests boot it: a private copy of the disk image with the
//! test's rackboot.toml, OVMF with Secure Boot and the build's keys enrolled, a rack bridge and
//! a management bridge in a namespace, and the console and HTTP helpers the tests read it with.
//! Shared by `appliance.rs` and `appliance_update.rs` (`#[path]` module).
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use qemu_tests::{Firmware, Netns, Qemu, agent_initrd, field, have, root};

/// The appliance's addresses: rack (rackboot.toml default) and management (set by the tests).
pub const RACK_ADDR: &str = "192.0.2.1";
pub const MGMT_ADDR: &str = "198.51.100.2";
/// The host side of each bridge in the test namespace.
pub const RACK_HOST: &str = "192.0.2.254/24";
pub const MGMT_HOST: &str = "198.51.100.1/24";

/// Generous: a TCG boot takes about 40 s alone, longer when the suite runs VMs in parallel.
/// It bounds a failure, it is not what the tests measure.
pub const BOOT_DEADLINE: Duration = Duration::from_secs(900);

/// The rackboot.toml the tests write onto the ESP: the defaults, with a static management
/// address (no DHCP server on the test's management bridge).
pub fn test_config() -> String {
    format!(
        "[appliance]\nrack_interface = \"eth0\"\nrack_address = \"{RACK_ADDR}/24\"\n\
         management_interface = \"eth1\"\nmanagement_address = \"{MGMT_ADDR}/24\"\n"
    )
}

pub fn image_dir() -> PathBuf {
    root().join("build/appliance")
}

/// Like `qemu_tests::preflight`, for the appliance: skips loudly outside CI, fails under CI=true.
pub fn preflight() -> bool {
    let mut missing = Vec::new();
    for prog in [
        "ip",
        "curl",
        "qemu-system-x86_64",
        "mcopy",
        "sbsign",
        "openssl",
        "nmap",
    ] {
        if !have(prog) {
            missing.push(prog.to_owned());
        }
    }
    if !virt_fw_vars().exists() {
        missing.push("build/venv/bin/virt-fw-vars (cargo xtask deps)".to_owned());
    }
    if !Path::new("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd").exists() {
        missing.push("ovmf (OVMF_CODE_4M.secboot.fd)".to_owned());
    }
    if !root().join("build/node/vmlinuz").exists() {
        missing.push("build/node (cargo xtask image node)".to_owned());
    }
    if !image_dir().join("rackboot-appliance.img").exists() {
        missing.push("build/appliance (cargo xtask image appliance)".to_owned());
    }
    if missing.is_empty() {
        return true;
    }
    qemu_tests::prerequisites("appliance test", &missing)
}

pub fn virt_fw_vars() -> PathBuf {
    root().join("build/venv/bin/virt-fw-vars")
}

pub fn sh(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `key=value` lines of build/appliance/appliance.env.
pub fn image_env(key: &str) -> anyhow::Result<String> {
    let text = fs::read_to_string(image_dir().join("appliance.env"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .with_context(|| format!("appliance.env has no {key}"))
}

/// A private copy of the disk image, with the test's rackboot.toml on its ESP.
pub struct Disk {
    pub dir: tempfile::TempDir,
}

impl Disk {
    pub fn new() -> anyhow::Result<Disk> {
        let dir = tempfile::tempdir()?;
        let disk = dir.path().join("disk.img");
        sh(Command::new("cp")
            .arg("--sparse=always")
            .arg(image_dir().join("rackboot-appliance.img"))
            .arg(&disk))?;
        let d = Disk { dir };
        let conf = d.dir.path().join("rackboot.toml");
        fs::write(&conf, test_config())?;
        d.put_on_esp(&conf, "::/rackboot.toml")?;
        Ok(d)
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("disk.img")
    }

    /// mtools' `IMAGE@@OFFSET`: the ESP is partition 1, at sector 2048.
    pub fn esp(&self) -> String {
        format!("{}@@{}", self.path().display(), 2048 * 512)
    }

    pub fn put_on_esp(&self, file: &Path, dest: &str) -> anyhow::Result<()> {
        sh(Command::new("mcopy")
            .args(["-o", "-i", &self.esp()])
            .arg(file)
            .arg(dest))?;
        Ok(())
    }

    /// Makes the disk `extra_mib` larger, as if the image had been written to a larger drive:
    /// the appliance stretches its data partition over the rest on first boot.
    pub fn grow(&self, extra_mib: u64) -> anyhow::Result<()> {
        sh(Command::new("truncate")
            .arg("-s")
            .arg(format!("+{extra_mib}M"))
            .arg(self.path()))?;
        Ok(())
    }

    /// Flips one byte at `offset` of the disk.
    pub fn flip_byte(&self, offset: u64) -> anyhow::Result<()> {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path())?;
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(&mut b)?;
        b[0] ^= 0xff;
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(&b)?;
        f.sync_all()?;
        Ok(())
    }
}

/// An OVMF variable store with Secure Boot on and the build's PK, KEK and db enrolled.
pub fn enrolled_vars(dir: &Path) -> anyhow::Result<PathBuf> {
    let sb = image_dir().join("secureboot");
    let guid = fs::read_to_string(sb.join("owner.guid"))?.trim().to_owned();
    let vars = dir.join("vars.fd");
    sh(Command::new(virt_fw_vars())
        .arg("-i")
        .arg("/usr/share/OVMF/OVMF_VARS_4M.fd")
        .arg("-o")
        .arg(&vars)
        .arg("--set-pk")
        .arg(&guid)
        .arg(sb.join("PK.crt"))
        .arg("--add-kek")
        .arg(&guid)
        .arg(sb.join("KEK.crt"))
        .arg("--add-db")
        .arg(&guid)
        .arg(sb.join("db.crt"))
        .arg("--secure-boot"))?;
    Ok(vars)
}

/// The test network: one namespace, `br0` = rack (host side 192.0.2.254), `brm` = management
/// (host side 198.51.100.1). The appliance's NIC 1 is on br0, NIC 2 on brm.
pub fn network(tag: &str) -> anyhow::Result<Netns> {
    let ns = Netns::with_address(tag, RACK_HOST)?;
    ns.ip(&["link", "add", "brm", "type", "bridge"])?;
    ns.ip(&["addr", "add", MGMT_HOST, "dev", "brm"])?;
    ns.ip(&["link", "set", "brm", "up"])?;
    for (tap, bridge) in [("tapr", "br0"), ("tapm", "brm")] {
        ns.ip(&["tuntap", "add", tap, "mode", "tap"])?;
        ns.ip(&["link", "set", tap, "master", bridge])?;
        ns.ip(&["link", "set", tap, "up"])?;
    }
    Ok(ns)
}

/// The appliance VM. Killed (by its own PID) on drop.
pub struct Appliance {
    pub child: Child,
    console: PathBuf,
    _dir: tempfile::TempDir,
}

impl Appliance {
    pub fn boot(ns: &Netns, disk: &Disk) -> anyhow::Result<Appliance> {
        let dir = tempfile::tempdir()?;
        let vars = enrolled_vars(dir.path())?;
        Self::boot_with_vars(ns, disk, &vars, dir)
    }

    /// Boots with the firmware variable store `vars` (kept by the caller across boots, as a
    /// real machine's NVRAM is). The VM exits when the guest reboots (`-no-reboot`).
    pub fn boot_with_vars(
        ns: &Netns,
        disk: &Disk,
        vars: &Path,
        dir: tempfile::TempDir,
    ) -> anyhow::Result<Appliance> {
        Self::boot_with_devices(ns, disk, vars, dir, &[])
    }

    /// [`Appliance::boot_with_vars`] with more QEMU arguments (e.g. a TPM: `VmTpm::qemu_args`).
    pub fn boot_with_devices(
        ns: &Netns,
        disk: &Disk,
        vars: &Path,
        dir: tempfile::TempDir,
        extra: &[String],
    ) -> anyhow::Result<Appliance> {
        let console = dir.path().join("console.log");
        let mut c = ns.cmd("qemu-system-x86_64");
        c.args([
            "-accel",
            "tcg",
            "-m",
            "256",
            "-machine",
            "q35,smm=on",
            "-global",
            "driver=cfi.pflash01,property=secure,value=on",
            "-drive",
            "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
        ]);
        c.arg("-drive").arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ));
        c.arg("-drive").arg(format!(
            "if=virtio,format=raw,file={}",
            disk.path().display()
        ));
        c.arg("-serial").arg(format!("file:{}", console.display()));
        // The PCI slots fix the NIC order: eth0 (rack) before eth1 (management).
        c.args([
            "-netdev",
            "tap,id=rack,ifname=tapr,script=no,downscript=no",
            "-device",
            "virtio-net-pci,netdev=rack,mac=52:54:00:ab:00:01,addr=0x10,romfile=",
            "-netdev",
            "tap,id=mgmt,ifname=tapm,script=no,downscript=no",
            "-device",
            "virtio-net-pci,netdev=mgmt,mac=52:54:00:ab:00:02,addr=0x11,romfile=",
        ]);
        c.args(extra);
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Appliance {
            child,
            console,
            _dir: dir,
        })
    }

    pub fn console_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// Waits until the console shows one of `patterns` (returns the first line matching any),
    /// or the VM exits, or the deadline passes (both errors, with the console's tail).
    pub fn wait_for_any(
        &mut self,
        patterns: &[&str],
        deadline: Duration,
    ) -> anyhow::Result<String> {
        let until = Instant::now() + deadline;
        loop {
            let text = self.console_text();
            if let Some(line) = text
                .lines()
                .find(|l| patterns.iter().any(|p| l.contains(p)))
            {
                return Ok(line.to_owned());
            }
            let exited = self.child.try_wait()?.is_some();
            if exited || Instant::now() > until {
                let tail: String = text
                    .chars()
                    .rev()
                    .take(4000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                bail!(
                    "console never showed {patterns:?} ({}); last output:\n{tail}",
                    if exited { "VM exited" } else { "deadline" }
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The value of `rackboot-appliance: report KEY=VALUE`.
    pub fn report(&self, key: &str) -> Option<String> {
        let prefix = format!("rackboot-appliance: report {key}=");
        self.console_text().lines().find_map(|l| {
            l.find(&prefix)
                .map(|i| l[i + prefix.len()..].trim().to_owned())
        })
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// curl from the test namespace: (status, body).
pub fn http(
    ns: &Netns,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> anyhow::Result<(u16, String)> {
    let mut c = ns.cmd("curl");
    c.args(["-s", "-m", "60", "-X", method, "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let tmp = tempfile::NamedTempFile::new()?;
    if let Some(b) = body {
        fs::write(tmp.path(), b)?;
        c.arg("--data-binary")
            .arg(format!("@{}", tmp.path().display()));
        if b.first() == Some(&b'{') {
            c.args(["-H", "Content-Type: application/json"]);
        }
    }
    c.arg(url);
    let out = c.output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
}

/// Readiness as the issue defines it: rackboot answering /boot/v1/service/status on the
/// management NIC, from the host side. Polls until it answers or the VM stops.
pub fn wait_ready(ns: &Netns, vm: &mut Appliance) -> anyhow::Result<()> {
    // The console line comes first (the appliance checks itself on 127.0.0.1), then the
    // management network must answer too.
    vm.wait_for_any(&["rackboot-appliance: ready"], BOOT_DEADLINE)?;
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let (code, body) = http(
            ns,
            "GET",
            &format!("http://{MGMT_ADDR}/boot/v1/service/status"),
            None,
            None,
        )?;
        if code == 200 && body.contains("running") {
            return Ok(());
        }
        if Instant::now() > until || vm.child.try_wait()?.is_some() {
            bail!("rackboot never answered on the management NIC (last: {code} {body})");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The admin token the appliance printed once on its first boot's console.
pub fn admin_token(console: &str) -> String {
    let line = console
        .lines()
        .find(|l| l.contains("rackboot-appliance: admin token"))
        .expect("no admin token on the console");
    line.rsplit(' ')
        .next()
        .map(|t| t.trim().to_owned())
        .expect("token")
}

/// Registers two nodes over the management network, imports their kernel and initrd there, and
/// boots them on the rack bridge at the same time: one with SeaBIOS + iPXE, one with OVMF's own
/// PXE client (TFTP of snponly.efi from the appliance). Their initrd carries `rackboot agent`:
/// each enrolls for its mTLS certificate with the join token its boot script carried.
pub fn pxe_boot_nodes(ns: &mut Netns, token: &str) {
    let nodes = [
        (
            Firmware::SeaBiosIpxe,
            "x1000c0s5b0n0",
            5,
            "52:54:00:ab:10:05",
            "192.0.2.50",
        ),
        (
            Firmware::OvmfPxe,
            "x1000c0s6b0n0",
            6,
            "52:54:00:ab:10:06",
            "192.0.2.51",
        ),
    ];
    let api = |ns: &Netns, method: &str, path: &str, body: &[u8], want: &[u16]| {
        let (code, resp) = http(
            ns,
            method,
            &format!("http://{MGMT_ADDR}{path}"),
            Some(token),
            Some(body),
        )
        .expect("curl");
        assert!(want.contains(&code), "{method} {path} → {code}: {resp}");
    };
    let work = tempfile::tempdir().expect("tempdir");
    let initrd = agent_initrd(work.path()).expect("node initrd with the agent");
    for (name, file) in [
        ("vmlinuz", root().join("build/node/vmlinuz")),
        ("initrd.img", initrd),
    ] {
        let data = fs::read(&file).expect("build/node (cargo xtask image node)");
        api(
            ns,
            "PUT",
            &format!("/rackboot/v1/images/{name}"),
            &data,
            &[200, 201],
        );
    }
    for (_, xname, nid, mac, ip) in nodes {
        api(
            ns,
            "POST",
            "/hsm/v2/State/Components",
            format!(r#"{{"Components":[{{"ID":"{xname}","Type":"Node","State":"Ready","Enabled":true,"NID":{nid},"Arch":"X86","Role":"Compute"}}]}}"#).as_bytes(),
            &[204],
        );
        api(
            ns,
            "POST",
            "/hsm/v2/Inventory/EthernetInterfaces",
            format!(r#"{{"MACAddress":"{mac}","IPAddresses":[{{"IPAddress":"{ip}"}}],"ComponentID":"{xname}","Type":"Node"}}"#).as_bytes(),
            &[201],
        );
        api(
            ns,
            "PUT",
            "/boot/v1/bootparameters",
            format!(r#"{{"macs":["{mac}"],"kernel":"http://{RACK_ADDR}/images/vmlinuz","initrd":"http://{RACK_ADDR}/images/initrd.img","params":"console=ttyS0 quiet"}}"#).as_bytes(),
            &[200],
        );
    }
    // Qemu::start puts each node's TAP on br0: the appliance's rack bridge.
    let mut vms: Vec<_> = nodes
        .iter()
        .map(|(fw, _, _, mac, _)| Qemu::start(ns, *fw, mac).expect("node VM"))
        .collect();
    for (vm, (fw, xname, _, _, ip)) in vms.iter_mut().zip(nodes) {
        let line = vm
            .wait_for("RACKBOOT-NODE-UP", BOOT_DEADLINE)
            .unwrap_or_else(|e| panic!("{fw:?}: the node did not boot from the appliance: {e:#}"));
        assert_eq!(field(&line, "ip"), Some(ip), "{fw:?}: {line}");
        assert_eq!(field(&line, "xname"), Some(xname), "{fw:?}: {line}");
        vm.wait_for("RACKBOOT-PHONED-HOME", BOOT_DEADLINE)
            .unwrap_or_else(|e| panic!("{fw:?}: the node did not finish cloud-init: {e:#}"));
        assert!(
            vm.console().contains("RACKBOOT-CI-BEGIN meta-data"),
            "{fw:?}"
        );
        // "RACKBOOT-ENROLL" matches both the success and the failure line of the node's init.
        let enrolled = vm
            .wait_for("RACKBOOT-ENROLL", BOOT_DEADLINE)
            .unwrap_or_else(|e| panic!("{fw:?}: the agent said nothing: {e:#}"));
        assert!(
            enrolled.contains("RACKBOOT-ENROLLED"),
            "{fw:?}: {}",
            vm.console()
        );
    }
}
