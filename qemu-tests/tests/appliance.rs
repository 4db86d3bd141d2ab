//! The appliance image (`cargo xtask image appliance`, build/appliance/) booted the way a rack
//! would run it: OVMF with Secure Boot and the build's keys enrolled, the disk image as its
//! only disk, one NIC on a rack bridge and one on a management bridge, in a namespace.
//!
//! What each test proves is in docs/appliance.md (the hardening table names these tests).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use qemu_tests::{Firmware, Netns, Qemu, agent_initrd, field, have, root};

/// The appliance's addresses: rack (rackboot.toml default) and management (set by the tests).
const RACK_ADDR: &str = "192.0.2.1";
const MGMT_ADDR: &str = "198.51.100.2";
/// The host side of each bridge in the test namespace.
const RACK_HOST: &str = "192.0.2.254/24";
const MGMT_HOST: &str = "198.51.100.1/24";

/// Generous: a TCG boot takes about 40 s alone, longer when the suite runs VMs in parallel.
/// It bounds a failure, it is not what the tests measure.
const BOOT_DEADLINE: Duration = Duration::from_secs(900);

/// The rackboot.toml the tests write onto the ESP: the defaults, with a static management
/// address (no DHCP server on the test's management bridge).
fn test_config() -> String {
    format!(
        "[appliance]\nrack_interface = \"eth0\"\nrack_address = \"{RACK_ADDR}/24\"\n\
         management_interface = \"eth1\"\nmanagement_address = \"{MGMT_ADDR}/24\"\n"
    )
}

fn image_dir() -> PathBuf {
    root().join("build/appliance")
}

/// Like `qemu_tests::preflight`, for the appliance: skips loudly outside CI, fails under CI=true.
fn preflight() -> bool {
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

fn virt_fw_vars() -> PathBuf {
    root().join("build/venv/bin/virt-fw-vars")
}

fn sh(cmd: &mut Command) -> anyhow::Result<String> {
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
fn image_env(key: &str) -> anyhow::Result<String> {
    let text = fs::read_to_string(image_dir().join("appliance.env"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .with_context(|| format!("appliance.env has no {key}"))
}

/// A private copy of the disk image, with the test's rackboot.toml on its ESP.
struct Disk {
    dir: tempfile::TempDir,
}

impl Disk {
    fn new() -> anyhow::Result<Disk> {
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

    fn path(&self) -> PathBuf {
        self.dir.path().join("disk.img")
    }

    /// mtools' `IMAGE@@OFFSET`: the ESP is partition 1, at sector 2048.
    fn esp(&self) -> String {
        format!("{}@@{}", self.path().display(), 2048 * 512)
    }

    fn put_on_esp(&self, file: &Path, dest: &str) -> anyhow::Result<()> {
        sh(Command::new("mcopy")
            .args(["-o", "-i", &self.esp()])
            .arg(file)
            .arg(dest))?;
        Ok(())
    }

    /// Makes the disk `extra_mib` larger, as if the image had been written to a larger drive:
    /// the appliance stretches its data partition over the rest on first boot.
    fn grow(&self, extra_mib: u64) -> anyhow::Result<()> {
        sh(Command::new("truncate")
            .arg("-s")
            .arg(format!("+{extra_mib}M"))
            .arg(self.path()))?;
        Ok(())
    }

    /// Flips one byte at `offset` of the disk.
    fn flip_byte(&self, offset: u64) -> anyhow::Result<()> {
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
fn enrolled_vars(dir: &Path) -> anyhow::Result<PathBuf> {
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
fn network(tag: &str) -> anyhow::Result<Netns> {
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
struct Appliance {
    child: Child,
    console: PathBuf,
    _dir: tempfile::TempDir,
}

impl Appliance {
    fn boot(ns: &Netns, disk: &Disk) -> anyhow::Result<Appliance> {
        let dir = tempfile::tempdir()?;
        let vars = enrolled_vars(dir.path())?;
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

    fn console_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// Waits until the console shows one of `patterns` (returns the first line matching any),
    /// or the VM exits, or the deadline passes (both errors, with the console's tail).
    fn wait_for_any(&mut self, patterns: &[&str], deadline: Duration) -> anyhow::Result<String> {
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
    fn report(&self, key: &str) -> Option<String> {
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
fn http(
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
fn wait_ready(ns: &Netns, vm: &mut Appliance) -> anyhow::Result<()> {
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

/// Open ports nmap finds on `addr` from the test namespace: TCP over all ports, UDP over the
/// usual service ports (a full UDP scan takes hours against ICMP rate limits).
fn open_ports(ns: &Netns, addr: &str) -> anyhow::Result<Vec<String>> {
    let tcp = sh(ns.cmd("nmap").args([
        "-Pn",
        "-n",
        "-sS",
        "-p-",
        "-T4",
        "--max-retries",
        "2",
        "-oG",
        "-",
        addr,
    ]))?;
    // One probe a second: Linux answers a closed UDP port with ICMP port-unreachable at most
    // once a second per peer (icmp_ratelimit), and a probe left unanswered reads as
    // "open|filtered". Paced like this, open|filtered means a socket is there.
    let udp = sh(ns.cmd("nmap").args([
        "-Pn",
        "-n",
        "-sU",
        "-p",
        "53,67,68,69,123,161,514,547,623,4011,5353",
        "--scan-delay",
        "1100ms",
        "--max-retries",
        "2",
        "-oG",
        "-",
        addr,
    ]))?;
    let mut open = Vec::new();
    for out in [tcp, udp] {
        for line in out.lines().filter(|l| l.contains("Ports:")) {
            let ports = line.split("Ports:").nth(1).unwrap_or("");
            for p in ports.split(',') {
                // `67/open|filtered/udp//dhcps///`: a closed UDP port answers ICMP unreachable;
                // open|filtered means something may listen, so it counts as reachable.
                let parts: Vec<&str> = p.trim().split('/').collect();
                if let [port, state, proto, ..] = parts.as_slice()
                    && state.starts_with("open")
                {
                    open.push(format!("{port}/{proto}"));
                }
            }
        }
    }
    open.sort();
    Ok(open)
}

#[test]
fn appliance_boots_under_secure_boot_hardened_and_serves_its_ports() {
    if !preflight() {
        return;
    }
    let mut ns = network("appl").expect("test network");
    let disk = Disk::new().expect("disk copy");
    // A larger drive: the appliance grows its data partition over it on first boot (and the
    // nodes' initrd with the identity agent, a debug build of rackboot, needs the room).
    disk.grow(384).expect("grow the disk");
    let mut vm = Appliance::boot(&ns, &disk).expect("start the appliance VM");
    if let Err(e) = wait_ready(&ns, &mut vm) {
        panic!("the appliance did not come up: {e:#}");
    }
    let console = vm.console_text();

    // Secure Boot was on, and the kernel locked itself down.
    assert!(
        console.contains("Secure boot enabled"),
        "the kernel did not report Secure Boot"
    );
    assert_eq!(
        vm.report("lockdown").as_deref(),
        Some("none [integrity] confidentiality")
    );

    // Root: the squashfs on the dm-verity device, read-only.
    let root_mount = vm.report("root").unwrap_or_default();
    assert!(
        root_mount.starts_with("/dev/mapper/root,squashfs,ro")
            || root_mount.starts_with("/dev/dm-0,squashfs,ro"),
        "root is {root_mount}"
    );
    assert_eq!(
        vm.report("verity_uuid_prefix").as_deref(),
        Some("CRYPT-VERITY-")
    );

    // rackboot: not uid 0, exactly CAP_NET_BIND_SERVICE (bit 10) effective and permitted.
    let uid = vm.report("rackboot_uid").unwrap_or_default();
    assert!(!uid.is_empty() && uid != "0", "rackboot uid {uid}");
    assert_eq!(
        vm.report("rackboot_capeff").as_deref(),
        Some("0000000000000400")
    );
    assert_eq!(
        vm.report("rackboot_capprm").as_deref(),
        Some("0000000000000400")
    );
    assert_eq!(
        vm.report("rackboot_capinh").as_deref(),
        Some("0000000000000000")
    );
    assert_eq!(
        vm.report("rackboot_capamb").as_deref(),
        Some("0000000000000000")
    );

    // /data and /tmp: not executable, no devices, no setuid.
    for key in ["data", "tmp"] {
        let m = vm.report(key).unwrap_or_default();
        for opt in ["nosuid", "nodev", "noexec"] {
            assert!(m.split(',').any(|o| o == opt), "{key} mounted {m}");
        }
    }
    assert!(vm.report("data").unwrap_or_default().contains(",ext4,rw"));
    let data_mib: u64 = vm
        .report("data_partition_mib")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        data_mib >= 384,
        "the data partition was not grown over the larger disk: {data_mib} MiB"
    );
    // Nothing to build, install or log in with.
    assert_eq!(vm.report("forbidden_tools").as_deref(), Some(""));

    // sysctls.
    for (k, want) in [
        ("net.ipv4.ip_forward", "0"),
        ("net.ipv4.conf.all.rp_filter", "1"),
        ("net.ipv4.conf.all.accept_redirects", "0"),
        ("net.ipv4.conf.all.send_redirects", "0"),
        ("kernel.kptr_restrict", "2"),
        ("kernel.dmesg_restrict", "1"),
    ] {
        assert_eq!(
            vm.report(&format!("sysctl.{k}")).as_deref(),
            Some(want),
            "{k}"
        );
    }
    // No console login without a maintenance password in rackboot.toml.
    assert_eq!(vm.report("getty").as_deref(), Some("none"));

    // The admin token, printed once on first boot, works on the management NIC; no token, no API.
    let token_line = console
        .lines()
        .find(|l| l.contains("rackboot-appliance: admin token"))
        .expect("no admin token on the console")
        .to_owned();
    let token = token_line
        .rsplit(' ')
        .next()
        .expect("token")
        .trim()
        .to_owned();
    let components = format!("http://{MGMT_ADDR}/hsm/v2/State/Components");
    let (code, _) = http(&ns, "GET", &components, None, None).expect("curl");
    assert_eq!(code, 401, "the admin API answered without a token");
    let (code, body) = http(&ns, "GET", &components, Some(&token), None).expect("curl");
    assert_eq!(code, 200, "{body}");

    // Ports: rack network = rackboot's services only; management = the admin API only (its
    // DHCP client's 68/udp aside). No packet filter in the offline image: rackboot binds each
    // listener to its interface (--admin-interface).
    let rack = open_ports(&ns, RACK_ADDR).expect("nmap rack");
    // DNS (53, [dns], on by default on the rack address), DHCP, TFTP, HTTP, identity HTTPS.
    assert_eq!(
        rack,
        ["443/tcp", "53/tcp", "53/udp", "67/udp", "69/udp", "80/tcp"],
        "open on the rack network"
    );
    let mgmt = open_ports(&ns, MGMT_ADDR).expect("nmap management");
    for p in &mgmt {
        assert!(
            ["80/tcp", "68/udp"].contains(&p.as_str()),
            "unexpected port {p} open on the management network: {mgmt:?}"
        );
    }
    assert!(mgmt.contains(&"80/tcp".to_owned()), "{mgmt:?}");
    // The rack network's port 80 is the boot path alone: the admin API is not there, token or not.
    let (code, body) = http(
        &ns,
        "GET",
        &format!("http://{RACK_ADDR}/hsm/v2/State/Components"),
        Some(&token),
        None,
    )
    .expect("curl");
    assert_eq!(
        code, 404,
        "the admin API answered on the rack network: {body}"
    );

    // Nodes on the rack network PXE-boot from the appliance, registered and their kernel and
    // initrd imported through the admin API on the management NIC.
    pxe_boot_nodes(&mut ns, &token);
}

/// Registers two nodes over the management network, imports their kernel and initrd there, and
/// boots them on the rack bridge at the same time: one with SeaBIOS + iPXE, one with OVMF's own
/// PXE client (TFTP of snponly.efi from the appliance). Their initrd carries `rackboot agent`:
/// each enrolls for its mTLS certificate with the join token its boot script carried.
fn pxe_boot_nodes(ns: &mut Netns, token: &str) {
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

#[test]
fn maintenance_console_login_only_when_configured() {
    if !preflight() {
        return;
    }
    let ns = network("maint").expect("test network");
    let disk = Disk::new().expect("disk copy");
    let hash =
        sh(Command::new("openssl").args(["passwd", "-6", "-salt", "rackboottest", "maintenance"]))
            .expect("openssl passwd");
    let conf = disk.dir.path().join("maint.toml");
    fs::write(
        &conf,
        format!(
            "{}maintenance_password_hash = \"{}\"\n",
            test_config(),
            hash.trim()
        ),
    )
    .expect("write config");
    disk.put_on_esp(&conf, "::/rackboot.toml")
        .expect("config on the ESP");
    let mut vm = Appliance::boot(&ns, &disk).expect("start the appliance VM");
    vm.wait_for_any(&["rackboot-appliance: ready"], BOOT_DEADLINE)
        .expect("the appliance did not come up");
    assert!(
        vm.console_text()
            .contains("maintenance login enabled on the serial console"),
        "S11accounts did not take the hash"
    );
    vm.wait_for_any(&["login:"], BOOT_DEADLINE)
        .expect("no login prompt on the serial console with a maintenance password set");
}

/// Boots the same image with another EFI binary as \EFI\BOOT\BOOTX64.EFI; firmware must refuse.
fn refused_with(uki: &Path) {
    let ns = network("refuse").expect("test network");
    let disk = Disk::new().expect("disk copy");
    disk.put_on_esp(uki, "::/EFI/BOOT/BOOTX64.EFI")
        .expect("replace the UKI");
    let mut vm = Appliance::boot(&ns, &disk).expect("start the appliance VM");
    let line = vm
        .wait_for_any(
            &[
                "Access Denied",
                "Linux version",
                "rackboot-appliance: ready",
            ],
            BOOT_DEADLINE,
        )
        .expect("the firmware said nothing");
    assert!(
        line.contains("Access Denied"),
        "the firmware ran an EFI binary it must refuse: {line}"
    );
}

#[test]
fn unsigned_uki_is_refused() {
    if !preflight() {
        return;
    }
    refused_with(&image_dir().join("rackboot-a.unsigned.efi"));
}

#[test]
fn uki_signed_with_another_key_is_refused() {
    if !preflight() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, crt) = (dir.path().join("other.key"), dir.path().join("other.crt"));
    sh(Command::new("openssl")
        .args([
            "req", "-new", "-x509", "-newkey", "rsa:2048", "-sha256", "-days", "1",
        ])
        .args(["-nodes", "-subj", "/CN=not the rack's db key/", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt))
    .expect("openssl");
    let resigned = dir.path().join("resigned.efi");
    sh(Command::new("sbsign")
        .arg("--key")
        .arg(&key)
        .arg("--cert")
        .arg(&crt)
        .arg("--output")
        .arg(&resigned)
        .arg(image_dir().join("rackboot-a.unsigned.efi")))
    .expect("sbsign");
    refused_with(&resigned);
}

#[test]
fn tampered_root_slot_does_not_boot() {
    if !preflight() {
        return;
    }
    let ns = network("tamper").expect("test network");
    let disk = Disk::new().expect("disk copy");
    let start: u64 = image_env("root_slot_a_start_sector")
        .expect("appliance.env")
        .parse()
        .expect("sector");
    // Byte 8 of the squashfs superblock (its inode count): the first block mount reads.
    disk.flip_byte(start * 512 + 8).expect("flip");
    let mut vm = Appliance::boot(&ns, &disk).expect("start the appliance VM");
    let line = vm
        .wait_for_any(
            &[
                "rackboot-initramfs: FATAL",
                "dm-verity device corrupted",
                "Kernel panic",
                "rackboot-appliance: ready",
            ],
            BOOT_DEADLINE,
        )
        .expect("the appliance said nothing");
    assert!(
        !line.contains("rackboot-appliance: ready"),
        "a tampered root slot booted"
    );
    assert!(
        vm.console_text().contains("verity"),
        "the boot stopped, but not on dm-verity: {line}"
    );
}
