//! The DHCP benchmark: a ladder of offered rates, perfdhcp's achieved (sustained) rate at each,
//! rackboot against Kea (`cargo xtask bench dhcp`); Kea is also a storm peer (`storm.rs`).

use std::time::Duration;

use anyhow::Context;
use qemu_tests::{Netns, PerfdhcpStats, Rackboot};

use super::{Daemon, run_section_only};

/// One step of the DHCP ladder: the offered rate, perfdhcp's achieved rate over the period,
/// and the fraction of started exchanges that did not complete.
#[derive(Debug, Clone)]
pub(super) struct DhcpStep {
    offered: u64,
    achieved: f64,
    drops: f64,
    /// The drops of every period run at this rate, lowest first (`drops` is their median).
    period_drops: Vec<f64>,
}

impl DhcpStep {
    /// perfdhcp completed nearly every exchange it started but started far fewer than offered:
    /// the client, not the server, set the pace (both share the machine's cores).
    fn client_bound(&self) -> bool {
        self.drops <= 0.01 && self.achieved < 0.95 * self.offered as f64
    }
}

/// The socket receive buffer every socket gets by default during the ladders, in both the
/// server's namespace and perfdhcp's (`net.core.rmem_default`, a global sysctl): 4 MiB.
const BENCH_RMEM: u64 = 4 << 20;

/// Raises `net.core.rmem_default` (and `rmem_max` if lower) to [`BENCH_RMEM`] and puts the old
/// values back when dropped. With the kernel's 208 KiB default, perfdhcp itself lost thousands
/// of replies a step to a full receive buffer while it shared two cores with the server, so the
/// client's losses were charged to whichever server was faster. Both servers run under the same
/// setting.
struct RmemGuard {
    saved: Vec<(&'static str, String)>,
}

impl RmemGuard {
    fn raise() -> anyhow::Result<Self> {
        let mut saved = Vec::new();
        for key in ["rmem_max", "rmem_default"] {
            let path = format!("/proc/sys/net/core/{key}");
            let old = std::fs::read_to_string(&path).with_context(|| path.clone())?;
            let value: u64 = old.trim().parse().with_context(|| path.clone())?;
            if value < BENCH_RMEM {
                std::fs::write(&path, BENCH_RMEM.to_string()).with_context(|| path.clone())?;
                saved.push((key, old.trim().to_owned()));
            }
        }
        Ok(Self { saved })
    }
}

impl Drop for RmemGuard {
    fn drop(&mut self) {
        // rmem_default first: it may not exceed rmem_max.
        for (key, old) in self.saved.iter().rev() {
            let _ = std::fs::write(format!("/proc/sys/net/core/{key}"), old);
        }
    }
}

/// Periods run at each offered rate; the step's achieved rate and drops are the medians of
/// theirs.
const PERIODS: usize = 3;

/// The best sustained step: the highest achieved DORA/s among the ladder steps with ≤ 1%
/// drops. Each step is [`PERIODS`] periods of 6 s (`-p 6`) of perfdhcp in relay mode over
/// 30,000 client MACs, each against a freshly started server, without a grace window for late
/// replies (perfdhcp's default); the step's achieved rate and drops are the medians of the
/// periods', and each figure is perfdhcp's own `Rate:` (completed exchanges per second over the period), never the
/// offered rate. The median keeps one noisy period (a stall of the shared virtual disk, the
/// client starved of CPU) from ending a ladder or from lifting it.
pub(super) fn dhcp_sustained(
    who: &str,
    start: impl Fn(&Netns) -> anyhow::Result<Box<dyn std::any::Any>>,
) -> anyhow::Result<(Option<DhcpStep>, Vec<DhcpStep>)> {
    let _rmem = RmemGuard::raise()?;
    let mut steps = Vec::new();
    // Steps of 1,000/s all the way: a coarser step above 10,000 hid whichever server's limit
    // fell between two steps.
    'ladder: for offered in (2000u64..=24000).step_by(1000) {
        let mut periods = Vec::with_capacity(PERIODS);
        for _ in 0..PERIODS {
            match dhcp_period(who, offered, &start)? {
                Some(p) => periods.push(p),
                None => break 'ladder,
            }
        }
        // Each figure's median on its own: a period can be clean because perfdhcp, starved
        // of CPU, started fewer exchanges, or fast and a little lossy.
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied()
        };
        let (Some(achieved), Some(drops)) = (
            median(periods.iter().map(|p| p.achieved).collect()),
            median(periods.iter().map(|p| p.drops).collect()),
        ) else {
            break;
        };
        let mut period_drops: Vec<f64> = periods.iter().map(|p| p.drops).collect();
        period_drops.sort_by(f64::total_cmp);
        let step = DhcpStep {
            offered,
            achieved,
            drops,
            period_drops,
        };
        eprintln!(
            "{who} offered {offered}/s: median {:.0} DORA/s, median drops {:.2}%{}",
            step.achieved,
            step.drops * 100.0,
            if step.client_bound() {
                "; client-bound: perfdhcp started fewer exchanges than offered"
            } else {
                ""
            }
        );
        let stop = step.drops > 0.01 || step.client_bound();
        steps.push(step);
        if stop {
            break;
        }
    }
    let best = steps
        .iter()
        .filter(|s| s.drops <= 0.01)
        .max_by(|a, b| a.achieved.total_cmp(&b.achieved))
        .cloned();
    Ok((best, steps))
}

/// One 6-second period of perfdhcp at `offered` against a freshly started server; `None` when
/// perfdhcp printed no report (said on stderr).
fn dhcp_period(
    who: &str,
    offered: u64,
    start: &impl Fn(&Netns) -> anyhow::Result<Box<dyn std::any::Any>>,
) -> anyhow::Result<Option<DhcpStep>> {
    let ns = Netns::with_address(&format!("b{who}"), "198.18.0.1/16")?;
    let server = start(&ns)?;
    let client = ns.add_client_ns()?;
    client.ip(&["addr", "add", "198.18.0.2/16", "dev", "vc"])?;
    std::thread::sleep(Duration::from_millis(500));
    let out = client
        .cmd("perfdhcp")
        .args([
            "-4",
            "-l",
            "198.18.0.2",
            "-r",
            &offered.to_string(),
            "-R",
            "30000",
            "-p",
            "6",
            "198.18.0.1",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let why = step_drops(&ns, &client, server.as_ref());
    drop(server);
    let Some((st, achieved)) = PerfdhcpStats::parse(&text).and_then(|s| Some((s, s.rate?))) else {
        eprintln!(
            "{who} @ {offered}/s: no report\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return Ok(None);
    };
    let drops = st.drop_ratio();
    eprintln!(
        "  {who} period at {offered}/s: achieved {achieved:.0} DORA/s, drops {:.2}% ({why})",
        drops * 100.0
    );
    Ok(Some(DhcpStep {
        offered,
        achieved,
        drops,
        period_drops: Vec::new(),
    }))
}

/// Where a step's lost exchanges went: datagrams dropped for a full socket receive buffer
/// (`Udp: RcvbufErrors`) in the server's namespace and in perfdhcp's, and, for rackboot, its
/// own counted drops by reason (`rackboot_dhcp_drops_total`).
fn step_drops(ns: &Netns, client: &Netns, server: &dyn std::any::Any) -> String {
    let rcvbuf = |ns: &Netns| {
        let snmp = ns
            .cmd("cat")
            .arg("/proc/net/snmp")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
        match (udp.next(), udp.next()) {
            (Some(names), Some(values)) => names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(n, _)| *n == "RcvbufErrors")
                .map_or("?".to_owned(), |(_, v)| v.to_owned()),
            _ => "?".to_owned(),
        }
    };
    let mut why = format!(
        "receive-buffer drops: server {}, perfdhcp {}",
        rcvbuf(ns),
        rcvbuf(client)
    );
    if let Some(rb) = server.downcast_ref::<Rackboot>() {
        let counted = rb
            .http("GET", "/metrics", None)
            .map(|(_, text)| {
                qemu_tests::flood::metric_values(&text, "rackboot_dhcp_drops_total", &[], "reason")
            })
            .unwrap_or_default();
        for (reason, n) in counted.iter().filter(|(_, n)| **n > 0) {
            why.push_str(&format!(", {reason} {n}"));
        }
    }
    why
}

const DHCP_HEADING: &str =
    "## DHCP: sustained DORA/s with ≤ 1% drops (perfdhcp relay mode, 30,000 clients, 6 s per step)";

/// `cargo xtask bench dhcp`: only the sustained DHCP ladders (rackboot, then Kea).
pub fn run_dhcp_only() -> anyhow::Result<()> {
    run_section_only(DHCP_HEADING, |_, bin| {
        let rb = dhcp_sustained("rackboot", |ns| {
            let r = Rackboot::start_with(ns, bin)?;
            Ok(Box::new(r) as Box<dyn std::any::Any>)
        })?;
        let kea = dhcp_sustained("kea", start_kea)?;
        Ok(dhcp_section(&rb, &kea))
    })
}

/// The DHCP section of docs/benchmarks.md from both ladders.
pub(super) fn dhcp_section(
    rb: &(Option<DhcpStep>, Vec<DhcpStep>),
    kea: &(Option<DhcpStep>, Vec<DhcpStep>),
) -> String {
    let best = |b: &Option<DhcpStep>| {
        b.as_ref().map_or("— (no step ≤ 1% drops)".to_owned(), |s| {
            format!(
                "{:.0} | {} | {:.2}%",
                s.achieved,
                s.offered,
                s.drops * 100.0
            )
        })
    };
    let ladder = |steps: &[DhcpStep]| {
        steps
            .iter()
            .map(|s| {
                let periods = s
                    .period_drops
                    .iter()
                    .map(|d| format!("{:.2}", d * 100.0))
                    .collect::<Vec<_>>()
                    .join("/");
                format!(
                    "{} → {:.0} ({:.2}%; periods {periods}%)",
                    s.offered,
                    s.achieved,
                    s.drops * 100.0
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Where a ladder ended because perfdhcp could not offer more, that server's limit lies
    // above its figure, and so may the ratio.
    let unreached = |who: &str, steps: &[DhcpStep]| {
        steps
            .last()
            .filter(|s| s.client_bound())
            .map(|s| {
                format!(
                    " {who}'s limit was not reached: at {}/s offered perfdhcp, sharing the \
                     cores, started only {:.0} exchanges/s and {who} completed them all but \
                     {:.2}%, so its figure is a lower bound.",
                    s.offered,
                    s.achieved,
                    s.drops * 100.0
                )
            })
            .unwrap_or_default()
    };
    let ratio = match (&rb.0, &kea.0) {
        (Some(r), Some(k)) if k.achieved > 0.0 => format!("**{:.2}×**", r.achieved / k.achieved),
        _ => "n/a".to_owned(),
    };
    format!(
        "{DHCP_HEADING}\n\n\
         Method: a ladder of offered rates; at each step perfdhcp `-r <rate> -R 30000 -p 6` \
         (relay mode, a 6-second period, no grace window for late replies), three periods per \
         step, each against a freshly started server. A period's figure is perfdhcp's \
         achieved `Rate:` (completed DORA exchanges per second over the period) and its drops \
         (started exchanges without an ACK); a step's figures are the medians of its \
         periods' (achieved and drops each), so one noisy period (a stall of the shared \
         virtual disk, the client starved of CPU) neither ends a ladder nor lifts it. The \
         best step with ≤ 1% drops is reported; a ladder stops at the first step above 1% \
         drops, or where perfdhcp started fewer than 95% of the offered exchanges \
         (client-bound). \
         Leases are durable in both: rackboot commits to SQLite (WAL, synchronous=FULL) \
         before each ACK; Kea uses memfile with persist=true (no fsync per lease). \
         Both run with `net.core.rmem_default` raised to 4 MiB for the ladders (put back \
         after): at the kernel's 208 KiB default, perfdhcp, sharing the two cores with the \
         server, lost thousands of replies a step to its own full receive buffer (counted \
         as `Udp: RcvbufErrors` in its namespace), which charged the client's losses to the \
         faster server.\n\n\
         | server | sustained DORA/s (achieved) | offered | drops |\n|---|---|---|---|\n\
         | rackboot | {} |\n| Kea (kea-dhcp4) | {} |\n\n\
         Ratio rackboot / Kea: {ratio} (target ≥ 2×).{}{}\n\n\
         Ladders (offered → achieved (drops)): rackboot: {}; Kea: {}.",
        best(&rb.0),
        best(&kea.0),
        unreached("rackboot", &rb.1),
        unreached("Kea", &kea.1),
        ladder(&rb.1),
        ladder(&kea.1),
    )
}

/// kea-dhcp4 and its directory (config, leases, log), removed after the process is gone.
struct Kea {
    _child: Daemon,
    _dir: tempfile::TempDir,
}

pub(super) fn start_kea(ns: &Netns) -> anyhow::Result<Box<dyn std::any::Any>> {
    start_kea_with(ns, "", "")
}

/// kea-dhcp4 on br0 for 198.18.0.0/16 with a pool in its upper half; `subnet` is added to the
/// subnet's JSON object (e.g. `, "reservations": [...]`), `dhcp4` to Dhcp4's (e.g.
/// `"client-classes": [...],`).
pub(super) fn start_kea_with(
    ns: &Netns,
    subnet: &str,
    dhcp4: &str,
) -> anyhow::Result<Box<dyn std::any::Any>> {
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("kea.json");
    let leases = dir.path().join("leases4.csv");
    std::fs::write(
        &conf,
        format!(
            r#"{{ "Dhcp4": {{
  "interfaces-config": {{ "interfaces": [ "br0" ], "dhcp-socket-type": "udp" }},
  "lease-database": {{ "type": "memfile", "persist": true, "name": "{}", "lfc-interval": 0 }},
  "valid-lifetime": 3600, {dhcp4}
  "subnet4": [ {{ "id": 1, "subnet": "198.18.0.0/16", "pools": [ {{ "pool": "198.18.128.0 - 198.18.255.254" }} ] {subnet} }} ],
  "loggers": [ {{ "name": "kea-dhcp4", "output_options": [ {{ "output": "{}" }} ], "severity": "WARN" }} ]
}} }}"#,
            leases.display(),
            dir.path().join("kea.log").display()
        ),
    )?;
    std::fs::create_dir_all("/run/kea")?;
    let child = ns
        .cmd("kea-dhcp4")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("kea-dhcp4")?;
    std::thread::sleep(Duration::from_secs(2));
    Ok(Box::new(Kea {
        _child: Daemon(child),
        _dir: dir,
    }))
}
