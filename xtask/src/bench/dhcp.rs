//! The DHCP benchmark: a ladder of offered rates, perfdhcp's achieved (sustained) rate at each,
//! rackboot against Kea (`cargo xtask bench dhcp`); Kea is also a storm peer (`storm.rs`).

use std::time::Duration;

use anyhow::Context;
use qemu_tests::{Netns, PerfdhcpStats, Rackboot};

use super::{Daemon, run_section_only};

/// One step of the DHCP ladder: the offered rate, perfdhcp's achieved rate over the period,
/// and the fraction of started exchanges that did not complete.
#[derive(Debug, Clone, Copy)]
pub(super) struct DhcpStep {
    offered: u64,
    achieved: f64,
    drops: f64,
}

/// The best sustained step: the highest achieved DORA/s among the ladder steps with ≤ 1%
/// drops. Each step is a 6 s period (`-p 6`) of perfdhcp in relay mode over 30,000 client
/// MACs, against a freshly started server, without a grace window for late replies
/// (perfdhcp's default); the figure is perfdhcp's own `Rate:` (completed exchanges per second
/// over the period), never the offered rate.
pub(super) fn dhcp_sustained(
    who: &str,
    start: impl Fn(&Netns) -> anyhow::Result<Box<dyn std::any::Any>>,
) -> anyhow::Result<(Option<DhcpStep>, Vec<DhcpStep>)> {
    let mut steps = Vec::new();
    // Steps of 1,000/s all the way: a coarser step above 10,000 hid whichever server's limit
    // fell between two steps.
    for offered in (2000u64..=16000).step_by(1000) {
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
        let Some((st, achieved)) = PerfdhcpStats::parse(&text).and_then(|s| Some((s, s.rate?)))
        else {
            eprintln!(
                "{who} @ {offered}/s: no report\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            break;
        };
        let step = DhcpStep {
            offered,
            achieved,
            drops: st.drop_ratio(),
        };
        eprintln!(
            "{who} offered {offered}/s: achieved {achieved:.0} DORA/s, drops {:.2}% ({why})",
            step.drops * 100.0
        );
        steps.push(step);
        if step.drops > 0.01 {
            break;
        }
    }
    let best = steps
        .iter()
        .filter(|s| s.drops <= 0.01)
        .max_by(|a, b| a.achieved.total_cmp(&b.achieved))
        .copied();
    Ok((best, steps))
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
        b.map_or("— (no step ≤ 1% drops)".to_owned(), |s| {
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
                format!(
                    "{} → {:.0} ({:.2}%)",
                    s.offered,
                    s.achieved,
                    s.drops * 100.0
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ratio = match (rb.0, kea.0) {
        (Some(r), Some(k)) if k.achieved > 0.0 => format!("**{:.2}×**", r.achieved / k.achieved),
        _ => "n/a".to_owned(),
    };
    format!(
        "{DHCP_HEADING}\n\n\
         Method: a ladder of offered rates; at each step a freshly started server and perfdhcp \
         `-r <rate> -R 30000 -p 6` (relay mode, a 6-second period, no grace window for late \
         replies). The figure is perfdhcp's achieved `Rate:` (completed DORA exchanges per \
         second over the period) and its drops (started exchanges without an ACK); the best \
         step with ≤ 1% drops is reported. Leases are durable in both: rackboot commits to \
         SQLite (WAL, synchronous=FULL) before each ACK; Kea uses memfile with persist=true.\n\n\
         | server | sustained DORA/s (achieved) | offered | drops |\n|---|---|---|---|\n\
         | rackboot | {} |\n| Kea (kea-dhcp4) | {} |\n\n\
         Ratio rackboot / Kea: {ratio} (target ≥ 2×).\n\n\
         Ladders (offered → achieved (drops)): rackboot: {}; Kea: {}.",
        best(&rb.0),
        best(&kea.0),
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
