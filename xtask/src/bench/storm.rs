//! `cargo xtask bench storm`: one boot storm (`rackboot storm`, appliance/src/storm) against
//! three PXE stacks in one run, each in its own namespace with the storm on the other side of
//! a veth, acting as a DHCP relay and sending each node's traffic from its leased address:
//!
//! - rackboot (`rackboot serve`, the release binary) with 1,000 inventory nodes;
//! - dnsmasq (DHCP with 1,000 `dhcp-host`s, TFTP) + nginx (boot script, kernel, initrd);
//! - Kea (kea-dhcp4, 1,000 reservations, client classes for PXE and iPXE) + tftpd-hpa
//!   (`in.tftpd -L`) + nginx.
//!
//! 100, 500 and 1,000 nodes power on within 10 s. The peers serve no cloud-init, so every node
//! stops after its initrd (`--until initrd`) on all three. Results: docs/benchmarks.md
//! `## Storm`, the 1,000-node charts in docs/storm-<stack>-1000.svg.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use qemu_tests::{Netns, Rackboot};
use serde_json::Value;

use super::{Daemon, dnsmasq_pxe, loadavg, nginx, start_kea_with};
use crate::run::{output, run};

/// The section's heading in docs/benchmarks.md.
pub const HEADING: &str = "## Storm";

const SERVER: &str = "198.18.0.1";
const RELAY: &str = "198.18.0.10";
const SIZES: [usize; 3] = [100, 500, 1000];
/// Inventory nodes every stack knows (the storm's MACs), whatever the storm's size.
const INVENTORY: usize = 1000;
const KERNEL_MIB: u64 = 8;
/// The issue's 64 MiB: the 9 storms move 1,600 × 72 MiB ≈ 112 GiB per stack.
const INITRD_MIB: u64 = 64;
/// The boot file every stack offers the storm's EDK2 nodes.
const BOOT_FILE: &str = "snponly.efi";
/// The stages a node walks up to `--until initrd`.
const STAGES: [&str; 6] = [
    "dhcp",
    "tftp",
    "ipxe_dhcp",
    "bootscript",
    "kernel",
    "initrd",
];
/// rackboot's timeline stages for them.
const EVENTS: [&str; 6] = [
    "dhcp_ack",
    "tftp_end",
    "ipxe_dhcp",
    "bootscript",
    "kernel",
    "initrd",
];

/// Node `i`'s MAC as `rackboot storm` generates it from its default first MAC.
fn mac(i: usize) -> String {
    format!("52:54:00:5e:{:02x}:{:02x}", (i + 1) >> 8, (i + 1) & 0xff)
}

/// Node `i`'s reserved address: 198.18.1.1 upwards, 250 a /24.
fn ip(i: usize) -> String {
    format!("198.18.{}.{}", 1 + i / 250, 1 + i % 250)
}

/// Node `i`'s xname: 8 chassis of 64 slots a cabinet.
fn xname(i: usize) -> String {
    format!("x{}c{}s{}b0n0", 1000 + i / 512, (i % 512) / 64, i % 64)
}

/// What the peers serve (nginx's root, dnsmasq's and tftpd-hpa's TFTP root) and the hashes
/// the storm checks.
struct Files {
    dir: tempfile::TempDir,
    expect: String,
}

impl Files {
    fn new() -> anyhow::Result<Files> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        // tftpd-hpa drops to `nobody` after its chroot into this directory.
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        for (name, mib) in [("vmlinuz", KERNEL_MIB), ("initrd.img", INITRD_MIB)] {
            run(Command::new("head")
                .args(["-c", &(mib << 20).to_string(), "/dev/urandom"])
                .stdout(std::fs::File::create(d.join(name))?))?;
        }
        std::fs::copy(
            Path::new("/usr/lib/ipxe").join(BOOT_FILE),
            d.join(BOOT_FILE),
        )?;
        std::fs::write(
            d.join("boot.ipxe"),
            format!(
                "#!ipxe\nkernel http://{SERVER}:8080/vmlinuz initrd=initrd.img console=ttyS0\n\
                 initrd http://{SERVER}:8080/initrd.img\nboot\n"
            ),
        )?;
        let mut expect = Vec::new();
        for name in ["vmlinuz", "initrd.img", BOOT_FILE] {
            expect.push(format!("{name}={}", crate::release::sha256(&d.join(name))?));
        }
        Ok(Files {
            dir,
            expect: expect.join(","),
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A started stack: the processes to stop afterwards, and rackboot's handle.
type Started = (Vec<Box<dyn std::any::Any>>, Option<Rackboot>);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stack {
    Rackboot,
    Dnsmasq,
    Kea,
}

impl Stack {
    const ALL: [Stack; 3] = [Stack::Rackboot, Stack::Dnsmasq, Stack::Kea];

    fn tag(self) -> &'static str {
        match self {
            Stack::Rackboot => "rackboot",
            Stack::Dnsmasq => "dnsmasq",
            Stack::Kea => "kea",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Stack::Rackboot => "rackboot",
            Stack::Dnsmasq => "dnsmasq + nginx",
            Stack::Kea => "Kea + tftpd-hpa + nginx",
        }
    }

    /// Starts the stack in `ns`.
    fn start(self, ns: &Netns, files: &Files, bin: &Path) -> anyhow::Result<Started> {
        let d = files.path();
        let web = || nginx(ns, d, &format!("{SERVER}:8080"), 2);
        Ok(match self {
            Stack::Rackboot => (Vec::new(), Some(start_rackboot(ns, files, bin)?)),
            Stack::Dnsmasq => {
                let hosts: String = (0..INVENTORY)
                    .map(|i| format!("{},{}\n", mac(i), ip(i)))
                    .collect();
                std::fs::write(d.join("hosts"), hosts)?;
                let dnsmasq = dnsmasq_pxe(
                    ns,
                    d,
                    &format!("http://{SERVER}:8080/boot.ipxe"),
                    BOOT_FILE,
                    &[
                        "--dhcp-range=198.18.128.0,198.18.255.254,255.255.0.0,1h".into(),
                        "--dhcp-lease-max=10000".into(),
                        // dnsmasq's default is 50 transfers at once; a storm needs more.
                        "--tftp-max=1000".into(),
                        format!("--dhcp-hostsfile={}", d.join("hosts").display()),
                        format!("--tftp-root={}", d.display()),
                    ],
                )?;
                (
                    vec![
                        Box::new(dnsmasq) as Box<dyn std::any::Any>,
                        Box::new(web()?),
                    ],
                    None,
                )
            }
            Stack::Kea => {
                let reservations: Vec<String> = (0..INVENTORY)
                    .map(|i| {
                        format!(
                            r#"{{ "hw-address": "{}", "ip-address": "{}" }}"#,
                            mac(i),
                            ip(i)
                        )
                    })
                    .collect();
                let classes = format!(
                    r#""client-classes": [
  {{ "name": "ipxe", "test": "option[77].hex == 'iPXE'", "boot-file-name": "http://{SERVER}:8080/boot.ipxe" }},
  {{ "name": "pxe", "test": "substring(option[60].hex,0,9) == 'PXEClient' and not member('ipxe')",
     "next-server": "{SERVER}", "boot-file-name": "{BOOT_FILE}" }} ],"#
                );
                let kea = start_kea_with(
                    ns,
                    &format!(r#", "reservations": [ {} ]"#, reservations.join(",\n")),
                    &classes,
                )?;
                let tftpd = ns
                    .cmd("in.tftpd")
                    .args(["-L", "-a", &format!("{SERVER}:69"), "-s"])
                    .arg(d)
                    .spawn()
                    .context("in.tftpd (tftpd-hpa)")?;
                (vec![kea, Box::new(Daemon(tftpd)), Box::new(web()?)], None)
            }
        })
    }
}

/// rackboot with the kernel and initrd imported and the whole inventory: SMD Components and
/// EthernetInterfaces (MAC → reserved address), BSS boot parameters for every MAC.
fn start_rackboot(ns: &Netns, files: &Files, bin: &Path) -> anyhow::Result<Rackboot> {
    // info, not the harness's debug log: a storm would spend its time logging.
    let rb = Rackboot::start_bin_env_at(ns, bin, &[("RACKBOOT_LOG", "info")], SERVER)?;
    for name in ["vmlinuz", "initrd.img"] {
        run(Command::new(bin)
            .args(["image", "import", "--data-dir"])
            .arg(rb.data_dir.path())
            .arg(name)
            .arg(files.path().join(name)))?;
    }
    let api = |method: &str, path: &str, body: String, want: u16| {
        let (code, resp) = rb.http(method, path, Some(&body))?;
        anyhow::ensure!(code == want, "{method} {path} → {code}: {resp}");
        Ok(())
    };
    let comps: Vec<String> = (0..INVENTORY)
        .map(|i| {
            format!(
                r#"{{"ID":"{}","Type":"Node","State":"Ready","Enabled":true,"NID":{},"Arch":"X86","Role":"Compute"}}"#,
                xname(i),
                i + 1
            )
        })
        .collect();
    api(
        "POST",
        "/hsm/v2/State/Components",
        format!(r#"{{"Components":[{}]}}"#, comps.join(",")),
        204,
    )?;
    for i in 0..INVENTORY {
        api(
            "POST",
            "/hsm/v2/Inventory/EthernetInterfaces",
            format!(
                r#"{{"MACAddress":"{}","IPAddresses":[{{"IPAddress":"{}"}}],"ComponentID":"{}","Type":"Node"}}"#,
                mac(i),
                ip(i),
                xname(i)
            ),
            201,
        )?;
    }
    let macs: Vec<String> = (0..INVENTORY).map(|i| format!("\"{}\"", mac(i))).collect();
    api(
        "PUT",
        "/boot/v1/bootparameters",
        format!(
            r#"{{"macs":[{}],"kernel":"http://{SERVER}/images/vmlinuz","initrd":"http://{SERVER}/images/initrd.img","params":"console=ttyS0"}}"#,
            macs.join(",")
        ),
        200,
    )?;
    Ok(rb)
}

/// Runs `rackboot storm args… --json FILE` in `client` and returns its JSON report (the
/// storm's exit status is 1 when a node failed; the report says which and why).
pub(super) fn run_storm(client: &Netns, bin: &Path, args: &[String]) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("storm.json");
    let out = client
        .cmd(bin.to_str().context("binary path")?)
        .arg("storm")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()?;
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&json).context("the storm wrote no JSON report")?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// What rackboot holds after a storm: its peak RSS, leases, and timeline events per stage
/// (events, distinct MACs).
struct Kept {
    /// VmHWM after the setup, before the storm (then reset).
    setup_hwm_kib: u64,
    /// VmHWM during the storm.
    hwm_kib: u64,
    /// RssAnon and RssFile right after the storm: what the peak is made of (file pages are the
    /// mapped images and binaries, anonymous ones the heap and stacks).
    anon_kib: u64,
    file_kib: u64,
    leases: u64,
    events: Vec<(String, u64, u64)>,
}

/// A field of /proc/`pid`/status, in kB.
fn status_kib(pid: u32, name: &str) -> anyhow::Result<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {name} in /proc/{pid}/status"))
}

/// rackboot's peak RSS so far (VmHWM), then resets it to the current RSS (proc(5),
/// `clear_refs` value 5).
fn reset_peak_rss(rb: &Rackboot) -> anyhow::Result<u64> {
    let hwm = status_kib(rb.pid(), "VmHWM:")?;
    std::fs::write(format!("/proc/{}/clear_refs", rb.pid()), "5")
        .context("resetting VmHWM (clear_refs)")?;
    Ok(hwm)
}

/// rackboot's VmHWM, then (after a clean stop) its leases and events from the store.
fn kept(mut rb: Rackboot, setup_hwm_kib: u64) -> anyhow::Result<Kept> {
    let field = |name: &str| status_kib(rb.pid(), name);
    let (hwm_kib, anon_kib, file_kib) = (field("VmHWM:")?, field("RssAnon:")?, field("RssFile:")?);
    rb.terminate()?;
    let db = rb.data_dir.path().join("rackboot.db");
    let sql = |q: &str| output(Command::new("sqlite3").arg("-readonly").arg(&db).arg(q));
    let leases = sql("SELECT count(*) FROM leases")?.trim().parse()?;
    let events = sql(
        "SELECT stage, count(*), count(DISTINCT mac) FROM boot_events WHERE ok = 1 GROUP BY stage",
    )?
    .lines()
    .filter_map(|l| {
        let mut f = l.split('|');
        Some((
            f.next()?.to_owned(),
            f.next()?.parse().ok()?,
            f.next()?.parse().ok()?,
        ))
    })
    .collect();
    Ok(Kept {
        setup_hwm_kib,
        hwm_kib,
        anon_kib,
        file_kib,
        leases,
        events,
    })
}

/// One storm against one stack.
struct Run {
    stack: Stack,
    nodes: usize,
    report: Value,
    kept: Option<Kept>,
}

impl Run {
    fn summary(&self) -> &Value {
        &self.report["summary"]
    }

    /// Seconds from the storm's start to the last node's initrd loaded.
    fn last_initrd(&self) -> Option<f64> {
        self.report["nodes"]
            .as_array()?
            .iter()
            .flat_map(|n| n["stages"].as_array().into_iter().flatten())
            .filter(|s| s[0] == "initrd")
            .filter_map(|s| s[2].as_f64())
            .reduce(f64::max)
    }

    fn latency(&self, stage: &str) -> String {
        let l = &self.summary()["latency"][stage];
        match (l["p50"].as_f64(), l["p99"].as_f64()) {
            (Some(p50), Some(p99)) => format!("{p50:.2} / {p99:.2}"),
            _ => "—".into(),
        }
    }

    /// "stage: reason × n; …", or "—".
    fn failures(&self) -> String {
        let mut out = Vec::new();
        if let Some(stages) = self.summary()["failures"].as_object() {
            for (stage, reasons) in stages {
                for (reason, n) in reasons.as_object().into_iter().flatten() {
                    out.push(format!("{stage}: {reason} × {n}"));
                }
            }
        }
        if out.is_empty() {
            "—".into()
        } else {
            out.join("; ").replace('|', "/")
        }
    }
}

fn storm_args(files: &Files, nodes: usize, chart: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--server",
        SERVER,
        "--relay",
        RELAY,
        "--interface",
        "vc",
        "--bind-leases",
        "--window",
        "10",
        "--until",
        "initrd",
        // EDK2's PXE client asks for windowsize 4 (PcdPxeTftpWindowSize); a server that
        // does not know the option answers without it and the transfer is lock-step.
        "--tftp-windowsize",
        "4",
        // Up to 1,000 nodes share the link for their images: give them time.
        "--http-timeout",
        "600",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend([
        "--nodes".into(),
        nodes.to_string(),
        "--expect-sha256".into(),
        files.expect.clone(),
        "--chart".into(),
        chart.display().to_string(),
    ]);
    args
}

/// One storm; with `chart`, the 1,000-node chart goes to docs/storm-<stack>-1000.svg.
fn storm_once(
    stack: Stack,
    nodes: usize,
    files: &Files,
    bin: &Path,
    chart_to_docs: bool,
) -> anyhow::Result<Run> {
    crate::stage(&format!("storm: {nodes} nodes against {}", stack.label()));
    let ns = Netns::with_address(&format!("storm-{}", stack.tag()), &format!("{SERVER}/16"))?;
    let (guards, rb) = stack.start(&ns, files, bin)?;
    // The setup (1,000 nodes through the API one by one, the images imported) has a peak of
    // its own: kept, then the peak is reset so that VmHWM after the storm is the storm's.
    let setup_hwm_kib = rb.as_ref().map(reset_peak_rss).transpose()?;
    let client = ns.add_client_ns()?;
    client.ip(&["addr", "add", &format!("{RELAY}/16"), "dev", "vc"])?;
    // A node's receive window is its firmware's: iPXE's is 256 KiB (TCP_MAX_WINDOW_SIZE), not
    // Linux's autotuned 6 MiB, and a thousand 6 MiB windows on one host put its TCP memory
    // under pressure (receive queues pruned, segments dropped: downloads stalled on backed-off
    // retransmission timers). A 512 KiB buffer gives about a 256 KiB window.
    run(client.cmd("sysctl").args([
        "-qw",
        &format!("net.ipv4.tcp_rmem=4096 131072 {}", 512 * 1024),
    ]))?;
    std::thread::sleep(Duration::from_secs(2));
    let chart = files.path().join("chart.svg");
    let report = run_storm(&client, bin, &storm_args(files, nodes, &chart))?;
    if chart_to_docs && nodes == INVENTORY {
        let to = crate::root().join(format!("docs/storm-{}-{nodes}.svg", stack.tag()));
        std::fs::copy(&chart, &to).with_context(|| format!("{}", to.display()))?;
    }
    let kept = rb
        .map(|rb| kept(rb, setup_hwm_kib.unwrap_or_default()))
        .transpose()?;
    drop(guards);
    Ok(Run {
        stack,
        nodes,
        report,
        kept,
    })
}

pub fn section(_root: &Path, bin: &Path) -> anyhow::Result<String> {
    let files = Files::new()?;
    let load_before = loadavg();
    let mut runs = Vec::new();
    for nodes in SIZES {
        for stack in Stack::ALL {
            runs.push(storm_once(stack, nodes, &files, bin, true)?);
        }
    }
    Ok(render(&runs, &load_before, &loadavg()))
}

/// `cargo xtask bench storm rackboot N…`: storms against rackboot alone, at the sizes given
/// (default 1,000), printed and not written to docs/benchmarks.md: for a before/after
/// comparison of a change to rackboot (`RACKBOOT_BENCH_BIN` picks the binary).
pub fn rackboot_only(bin: &Path, sizes: &[usize]) -> anyhow::Result<String> {
    let files = Files::new()?;
    let load_before = loadavg();
    let mut runs = Vec::new();
    for &nodes in sizes {
        anyhow::ensure!(
            (1..=INVENTORY).contains(&nodes),
            "{nodes} nodes: the inventory has 1 to {INVENTORY}"
        );
        runs.push(storm_once(Stack::Rackboot, nodes, &files, bin, false)?);
    }
    Ok(render(&runs, &load_before, &loadavg()))
}

fn render(runs: &[Run], load_before: &str, load_after: &str) -> String {
    let mut s = format!(
        "{HEADING}\n\n\
         `cargo xtask bench storm` (`xtask/src/bench/storm.rs`): `rackboot storm` (release build) \
         against three stacks, one after the other, each in its own network namespace with the \
         storm in a second namespace on a veth pair, acting as a DHCP relay (giaddr {RELAY}) and \
         sending each node's TFTP and HTTP from its leased address (`--bind-leases`). Every stack \
         knows the same {INVENTORY} nodes (MAC → fixed address); the storm powers on the first N \
         of them uniformly within 10 s (`--window 10`) as EDK2 (OVMF) PXE clients: DHCP with PXE \
         options → TFTP of `{BOOT_FILE}` (blksize 1468, windowsize 4 asked for, as EDK2 does) → \
         iPXE's DHCP (user class `iPXE`) → HTTP boot script → kernel ({KERNEL_MIB} MiB) and \
         initrd ({INITRD_MIB} MiB), each file's sha256 checked (`--expect-sha256`, the boot \
         file's too). The peers serve no cloud-init, so every node stops after its initrd on all \
         three stacks (`--until initrd`); \"completed\" is a node that got its initrd.\n\n\
         - **rackboot**: `rackboot serve` on the namespace's bridge, log level info, the images \
         imported into its store, {INVENTORY} SMD Components + EthernetInterfaces and BSS boot \
         parameters, iPXE from /usr/lib/ipxe.\n\
         - **dnsmasq + nginx**: dnsmasq (`dhcp-hostsfile` with the {INVENTORY} MACs, `dhcp-userclass` \
         iPXE → the script's URL, its TFTP server with `--tftp-max=1000`, as its default of 50 \
         refuses a storm) + nginx (2 workers, sendfile) serving one static script, the kernel and \
         the initrd.\n\
         - **Kea + tftpd-hpa + nginx**: kea-dhcp4 ({INVENTORY} reservations, client classes `ipxe` \
         (option 77) → the script's URL and `pxe` (option 60 `PXEClient`) → next-server + boot \
         file, memfile leases persisted), `in.tftpd -L -s` run in the namespace, the same nginx.\n\n\
         Figures: nodes completed / N; the time from the storm's start to the last node's initrd \
         loaded; p50 / p99 seconds per stage (from the storm's JSON: first packet or request to \
         last reply or byte, retries included); failures by stage. The 9 storms move \
         1,600 × ({KERNEL_MIB} + {INITRD_MIB}) MiB per stack, all hashed by the client on the \
         same 2 cores; rackboot and nginx send the images with sendfile. The storm's namespace has \
         firmware-sized TCP receive windows (`tcp_rmem` max 512 KiB: about iPXE's 256 KiB \
         window), as a thousand Linux-autotuned windows on one host exhaust its TCP memory and \
         stall downloads that real nodes would not.\n\n\
         Machine: {}; 1-minute load average {load_before} before the runs, {load_after} after \
         (the machine is shared with another engineer's builds and QEMU tests).\n\n\
         | stack | N | completed | last initrd at (s) | dhcp | tftp | ipxe_dhcp | bootscript | kernel | initrd | failures |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        super::machine()
    );
    for r in runs {
        let _ = write!(
            s,
            "| {} | {} | {} / {} | {} |",
            r.stack.label(),
            r.nodes,
            r.summary()["booted"],
            r.nodes,
            r.last_initrd().map_or("—".into(), |t| format!("{t:.1}"))
        );
        for stage in STAGES {
            let _ = write!(s, " {} |", r.latency(stage));
        }
        let _ = writeln!(s, " {} |", r.failures());
    }
    let _ = writeln!(
        s,
        "\nStage columns: p50 / p99 seconds.\n\n\
         rackboot after each storm: its peak RSS during the storm (`VmHWM` in /proc/PID/status, \
         reset with `clear_refs` after the setup and read after the storm; the setup's own \
         peak, 1,000 nodes posted one by one, beside it) and what its RSS is made of after the \
         storm (`RssAnon`: heap and stacks; `RssFile`: the mapped binary), then, after a clean \
         stop, the leases and the timeline events (`ok` ones, by stage: events / distinct \
         MACs) in its store, against the N nodes.\n\n\
         | N | peak RSS (setup) | RSS after: anon / file | leases | {} |\n|---|---|---|---|{}",
        EVENTS.join(" | "),
        "---|".repeat(EVENTS.len())
    );
    for r in runs {
        let Some(k) = &r.kept else { continue };
        let _ = write!(
            s,
            "| {} | {:.1} MiB ({:.1}) | {:.1} / {:.1} MiB | {} |",
            r.nodes,
            k.hwm_kib as f64 / 1024.0,
            k.setup_hwm_kib as f64 / 1024.0,
            k.anon_kib as f64 / 1024.0,
            k.file_kib as f64 / 1024.0,
            k.leases
        );
        for stage in EVENTS {
            let cell = k
                .events
                .iter()
                .find(|(st, _, _)| st == stage)
                .map_or("0".into(), |(_, n, macs)| format!("{n} / {macs}"));
            let _ = write!(s, " {cell} |");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "\nCharts of the 1,000-node storms (nodes per stage, per second): \
         [rackboot](storm-rackboot-1000.svg), [dnsmasq + nginx](storm-dnsmasq-1000.svg), \
         [Kea + tftpd-hpa + nginx](storm-kea-1000.svg)."
    );
    s
}
