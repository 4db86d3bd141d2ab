//! `rackboot storm`: a boot-storm load generator for any PXE server.
//!
//! N simulated nodes (N generated MACs) power on spread over a window and each walks the
//! firmware's real sequence: DHCP with PXE options, TFTP of the offered boot file, iPXE's DHCP,
//! the HTTP boot script, kernel and initrd (sha256 checked), the OS's DHCP, cloud-init and
//! phone-home. DHCP goes through one socket acting as a relay (giaddr), so one host simulates
//! many nodes without raw sockets. See docs/runbook-storm.md.
//!
//! Owns: `rackboot storm`. May call: `http`.
//! It reads answers with `http`'s capped reader, uses pxe-core's DHCP wire types, and holds no
//! store and no server state.

mod dhcp;
mod http;
mod node;
mod report;
mod stats;
mod tftp;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

pub use dhcp::Firmware;
pub use stats::Stage;
use stats::Summary;

/// `rackboot storm`: load-test a PXE server (rackboot or any other) with simulated nodes.
///
/// Never point it at a production network without its owner's consent: it takes real leases
/// and downloads real images, as many times as --nodes says.
#[derive(Debug, Args)]
#[command(
    after_help = "Example (a relay at 192.0.2.10 in front of the server at 192.0.2.1, each node's traffic \
from its leased address):\n  rackboot storm --server 192.0.2.1 --relay 192.0.2.10 --interface vc \
--bind-leases --nodes 200 --window 10 --chart storm.svg --json storm.json\n\nStages: dhcp (firmware \
DHCP), tftp (boot file), ipxe_dhcp (iPXE's DHCP), bootscript, kernel, initrd, os_dhcp, cloud_init \
(meta-data, user-data, vendor-data), phone_home; --until STAGE stops there. Exit status 1 if any \
node failed. See docs/runbook-storm.md."
)]
pub struct StormArgs {
    /// The PXE server's address. In relay mode DHCP is sent to its port 67; TFTP and HTTP go
    /// wherever its replies point.
    #[arg(long, env = "RACKBOOT_STORM_SERVER")]
    pub server: Ipv4Addr,
    /// Act as a DHCP relay at this local address: requests carry it as giaddr and the server
    /// answers on its port 67 (binds ADDR:67, so root or CAP_NET_BIND_SERVICE). Without it
    /// the storm broadcasts from port 68 on --interface, as nodes on the segment would.
    #[arg(long, env = "RACKBOOT_STORM_RELAY")]
    pub relay: Option<Ipv4Addr>,
    /// The local interface: the one to broadcast on without --relay, and the one leased
    /// addresses are added to with --bind-leases.
    #[arg(long, env = "RACKBOOT_STORM_INTERFACE")]
    pub interface: Option<String>,
    /// Add each node's leased address to --interface as a /32 (`ip addr add`) and send its
    /// TFTP, HTTP, cloud-init and phone-home from that address, as the real node would.
    /// Needed when the server identifies nodes by source address (rackboot does, for the
    /// timeline and for cloud-init). Use it only in a namespace made for the test: the
    /// addresses stay until the namespace goes.
    #[arg(long, env = "RACKBOOT_STORM_BIND_LEASES")]
    pub bind_leases: bool,
    /// Number of simulated nodes.
    #[arg(long, env = "RACKBOOT_STORM_NODES", default_value_t = 10)]
    pub nodes: u32,
    /// Power-on times are spread uniformly over this many seconds (0 = all at once).
    #[arg(long, env = "RACKBOOT_STORM_WINDOW", default_value_t = 10.0)]
    pub window: f64,
    /// The first node's MAC; node i gets this MAC + i.
    #[arg(
        long,
        env = "RACKBOOT_STORM_FIRST_MAC",
        default_value = "52:54:00:5e:00:01"
    )]
    pub first_mac: pxe_core::MacAddr,
    /// Firmware of the nodes, assigned round-robin (e.g. `ovmf,seabios-ipxe`). `ovmf`: EDK2's
    /// PXE client, TFTP of the boot file, then iPXE's DHCP. `seabios-ipxe`: QEMU's iPXE ROM,
    /// whose first DHCP is already iPXE's (no TFTP stage).
    #[arg(
        long,
        env = "RACKBOOT_STORM_FIRMWARE",
        value_enum,
        value_delimiter = ',',
        default_value = "ovmf"
    )]
    pub firmware: Vec<Firmware>,
    /// TFTP block size the firmware asks for (EDK2 asks for 1468).
    #[arg(long, env = "RACKBOOT_STORM_TFTP_BLKSIZE", default_value_t = 1468)]
    pub tftp_blksize: u16,
    /// TFTP window size to ask for (RFC 7440); unset, none is asked for (lock-step).
    #[arg(long, env = "RACKBOOT_STORM_TFTP_WINDOWSIZE")]
    pub tftp_windowsize: Option<u16>,
    /// Seconds without a packet before the last ACK (or the RRQ) is sent again.
    #[arg(long, env = "RACKBOOT_STORM_TFTP_TIMEOUT", default_value_t = 4.0)]
    pub tftp_timeout: f64,
    /// Timeouts in a row before a TFTP download fails.
    #[arg(long, env = "RACKBOOT_STORM_TFTP_RETRIES", default_value_t = 5)]
    pub tftp_retries: u32,
    /// Transmissions of each DHCP message before the stage fails; the waits are RFC 2131's
    /// 4, 8, 16, 32, 64 s (±1 s, capped at 64).
    #[arg(long, env = "RACKBOOT_STORM_DHCP_TRIES", default_value_t = 5)]
    pub dhcp_tries: u32,
    /// HTTP request timeout, seconds (a kernel or initrd must arrive within it).
    #[arg(long, env = "RACKBOOT_STORM_HTTP_TIMEOUT", default_value_t = 120.0)]
    pub http_timeout: f64,
    /// Extra tries of an HTTP request whose connection failed, one second apart.
    #[arg(long, env = "RACKBOOT_STORM_HTTP_RETRIES", default_value_t = 3)]
    pub http_retries: u32,
    /// The sha256 an image must have, by the last segment of its URL (`vmlinuz=HEX`);
    /// repeatable or comma-separated. Without it the server's `ETag: "sha256:HEX"` is used
    /// (rackboot publishes one for every image), and an image with neither is a failure.
    #[arg(
        long = "expect-sha256",
        env = "RACKBOOT_STORM_EXPECT_SHA256",
        value_name = "NAME=HEX",
        value_delimiter = ','
    )]
    pub expect_sha256: Vec<String>,
    /// Download images without checking their sha256 (counted as unchecked).
    #[arg(long, env = "RACKBOOT_STORM_NO_VERIFY")]
    pub no_verify: bool,
    /// Where phone-home is POSTed; `{xname}`, `{mac}` and `{ip}` are filled in. Default:
    /// `<seed origin>/cloud-init/phone-home/{xname}` (rackboot's route).
    #[arg(long, env = "RACKBOOT_STORM_PHONE_HOME_URL")]
    pub phone_home_url: Option<String>,
    /// Multiply every firmware timeout and pause by this (e.g. 0.05). For tests only: real
    /// firmware does not hurry.
    #[arg(long, env = "RACKBOOT_STORM_TIME_SCALE", default_value_t = 1.0)]
    pub time_scale: f64,
    /// Each node stops after this stage (e.g. `initrd`, to compare with a stack that serves
    /// no cloud-init) and counts as booted when it got there. A stage the node's firmware
    /// skips (`tftp` for `seabios-ipxe`) stops it after the next one it walks.
    #[arg(
        long,
        env = "RACKBOOT_STORM_UNTIL",
        value_enum,
        default_value = "phone_home"
    )]
    pub until: Stage,
    /// TFTP only: every node downloads FILE from --server's port 69 at its power-on, with
    /// the --tftp-* options, and nothing else (no DHCP, no HTTP; --relay and --interface are
    /// not needed). Its sha256 is checked against --expect-sha256 FILE=HEX (or --no-verify).
    #[arg(long, env = "RACKBOOT_STORM_TFTP_ONLY", value_name = "FILE")]
    pub tftp_only: Option<String>,
    /// Write the full report (summary, per-second timeline, every node) as JSON here.
    #[arg(long, env = "RACKBOOT_STORM_JSON", value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an SVG chart of nodes per stage over time here.
    #[arg(long, env = "RACKBOOT_STORM_CHART", value_name = "FILE.svg")]
    pub chart: Option<PathBuf>,
}

/// Runs the storm, prints the report; an error (exit status 1) if any node failed.
pub async fn run(args: StormArgs) -> anyhow::Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let finite_pos = |v: f64, zero_ok: bool| v.is_finite() && (v > 0.0 || (zero_ok && v == 0.0));
    if !finite_pos(args.time_scale, false) || !finite_pos(args.window, true) {
        bail!("--time-scale must be > 0 and --window ≥ 0");
    }
    if args.bind_leases && args.interface.is_none() {
        bail!("--bind-leases needs --interface (where the leased addresses go)");
    }
    let mut expect = std::collections::HashMap::new();
    for e in &args.expect_sha256 {
        let (name, hex) = e
            .split_once('=')
            .with_context(|| format!("--expect-sha256 {e}: want NAME=HEX"))?;
        expect.insert(name.to_owned(), hex.to_owned());
    }
    let transport = match (&args.tftp_only, args.relay, &args.interface) {
        (Some(file), ..) => {
            let name = file.rsplit('/').next().unwrap_or(file);
            if !args.no_verify && !expect.contains_key(name) {
                bail!("--tftp-only {file} needs --expect-sha256 {name}=HEX (or --no-verify)");
            }
            None
        }
        (None, Some(relay), _) => Some(
            dhcp::Transport::relay(relay, args.server)
                .with_context(|| format!("cannot bind {relay}:67 as a relay"))?,
        ),
        (None, None, Some(iface)) => Some(
            dhcp::Transport::direct(iface)
                .with_context(|| format!("cannot bind port 68 on {iface}"))?,
        ),
        (None, None, None) => {
            bail!("give --relay ADDR (one of this host's addresses) or --interface")
        }
    };
    let start = Instant::now() + Duration::from_millis(50);
    let plan = Arc::new(node::Plan {
        transport,
        start,
        time_scale: args.time_scale,
        dhcp_tries: args.dhcp_tries.max(1),
        tftp: tftp::TftpParams {
            blksize: args.tftp_blksize.clamp(8, 65464),
            windowsize: args.tftp_windowsize,
            timeout: Duration::from_secs_f64(args.tftp_timeout.max(0.01)),
            retries: args.tftp_retries,
        },
        http_timeout: Duration::from_secs_f64(args.http_timeout.max(0.1)),
        http_retries: args.http_retries,
        bind_interface: args.bind_leases.then(|| args.interface.clone()).flatten(),
        verify: http::Verify {
            expect,
            skip: args.no_verify,
        },
        phone_home: args.phone_home_url.clone(),
        until: if args.tftp_only.is_some() {
            Stage::Tftp
        } else {
            args.until
        },
        tftp_only: args.tftp_only.clone().map(|f| (args.server, f)),
    });
    let firmware = if args.firmware.is_empty() {
        vec![Firmware::Ovmf]
    } else {
        args.firmware.clone()
    };
    let mut rng = node::Rng::new(u64::from(args.nodes));
    let base = mac_to_u64(args.first_mac.0);
    let mut tasks = Vec::new();
    for i in 0..args.nodes {
        let mac = u64_to_mac(base.wrapping_add(u64::from(i)));
        let fw = firmware
            .get(i as usize % firmware.len())
            .copied()
            .unwrap_or(Firmware::Ovmf);
        let at = Duration::from_secs_f64(args.window * (rng.jitter() + 1.0) / 2.0);
        tasks.push(tokio::spawn(node::run(plan.clone(), mac, fw, at)));
    }
    let mut records = Vec::with_capacity(tasks.len());
    for t in tasks {
        records.push(t.await.context("a node task panicked")?);
    }
    let summary = Summary::of(&records, plan.start.elapsed());
    crate::out!("{}", report::table(&summary));
    if let Some(path) = &args.json {
        let doc = serde_json::to_vec_pretty(&report::json(&summary, &records))?;
        std::fs::write(path, doc).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.chart {
        std::fs::write(path, report::svg(&summary))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if summary.failed > 0 || summary.booted < summary.nodes {
        bail!(
            "{} of {} nodes failed: {}",
            summary.nodes - summary.booted,
            summary.nodes,
            report::failure_line(&summary)
        );
    }
    Ok(())
}

fn mac_to_u64(m: [u8; 6]) -> u64 {
    u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]])
}

fn u64_to_mac(v: u64) -> [u8; 6] {
    let b = v.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn macs_count_up_across_bytes() {
        let base = mac_to_u64([0x52, 0x54, 0, 0x5e, 0, 0xff]);
        assert_eq!(u64_to_mac(base + 1), [0x52, 0x54, 0, 0x5e, 1, 0]);
    }
}
