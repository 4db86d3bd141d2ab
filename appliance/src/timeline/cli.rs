//! `rackboot status [--watch]` and `rackboot timeline <xname>`.

use std::time::Duration;

use clap::Args;

use super::routes::{NodeTimeline, RackStatus};
use crate::client::{ApiClient, ClientArgs};
use crate::output::{format_table, print_json, print_table};
use crate::store::{StoreHealth, StoreState};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Redraw every few seconds until interrupted (a live view during a boot storm).
    #[arg(long)]
    pub watch: bool,
    /// Seconds between redraws with --watch.
    #[arg(long, default_value_t = 2)]
    pub interval: u64,
    /// Only nodes flagged stuck.
    #[arg(long)]
    pub stuck: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// The node's xname.
    pub xname: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The status table (one line per node, plus a per-stage summary line).
pub fn status_table(s: &RackStatus, only_stuck: bool) -> String {
    let rows: Vec<Vec<String>> = s
        .nodes
        .iter()
        .filter(|n| !only_stuck || n.stuck)
        .map(|n| {
            vec![
                n.xname.clone().unwrap_or_else(|| "-".into()),
                n.mac.clone(),
                n.ip.clone().unwrap_or_else(|| "-".into()),
                n.boot.to_string(),
                n.stage.clone(),
                n.idle_s.map_or_else(|| "-".into(), |s| format!("{s}s")),
                if n.stuck {
                    "STUCK".into()
                } else {
                    String::new()
                },
                n.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = format_table(
        &[
            "NODE",
            "MAC",
            "IP",
            "BOOT",
            "STAGE",
            "IDLE",
            "STUCK",
            "LAST ERROR",
        ],
        &rows,
    );
    let mut by_stage: Vec<(String, usize)> = Vec::new();
    for n in &s.nodes {
        match by_stage.iter_mut().find(|(st, _)| *st == n.stage) {
            Some((_, c)) => *c += 1,
            None => by_stage.push((n.stage.clone(), 1)),
        }
    }
    let stuck = s.nodes.iter().filter(|n| n.stuck).count();
    if let Some(h) = &s.store {
        out.push_str(&store_line(h));
    }
    let summary: Vec<String> = by_stage
        .iter()
        .map(|(st, c)| format!("{st}: {c}"))
        .collect();
    out.push_str(&format!(
        "\n{} nodes, {stuck} stuck (no progress for {}s) — {}\n",
        s.nodes.len(),
        s.stuck_after_s,
        summary.join(", ")
    ));
    out
}

/// One line on the store: "store: ok, 12.3 GiB free in /var/lib/rackboot".
fn store_line(h: &StoreHealth) -> String {
    let free = h
        .free_bytes
        .map_or_else(|| "unknown space".into(), |f| format!("{} free", bytes(f)));
    let dir = h.data_dir.display();
    match h.state {
        StoreState::Ok => format!("\nstore: ok, {free} in {dir}"),
        StoreState::Full => format!(
            "\nstore: FULL, {free} in {dir}: dynamic leases, API changes and boot events are not stored (inventory nodes still boot); see docs/runbook-disk-full.md"
        ),
        StoreState::Failing => format!(
            "\nstore: FAILING ({}), {free} in {dir}: see the rackboot log",
            h.detail.as_deref().unwrap_or("commit failed")
        ),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS.get(u).unwrap_or(&"B"))
    }
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let api = ApiClient::new(&args.client)?;
    loop {
        let mut s: RackStatus = api.get("/rackboot/v1/status").await?;
        if args.client.json() {
            if args.stuck {
                s.nodes.retain(|n| n.stuck);
            }
            print_json(&s);
        } else {
            if args.watch {
                // Clear the screen and home the cursor, then redraw.
                crate::out!("\x1b[2J\x1b[H");
            }
            crate::out!("{}", status_table(&s, args.stuck));
        }
        if !args.watch {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(args.interval.max(1))).await;
    }
}

pub async fn timeline(args: TimelineArgs) -> anyhow::Result<()> {
    let api = ApiClient::new(&args.client)?;
    let t: NodeTimeline = api
        .get(&format!("/rackboot/v1/nodes/{}/timeline", args.xname))
        .await?;
    if args.client.json() {
        print_json(&t);
        return Ok(());
    }
    for run in &t.boots {
        crate::outln!("boot {} ({})", run.boot, run.mac);
        let rows: Vec<Vec<String>> = run
            .events
            .iter()
            .map(|e| {
                vec![
                    e.at.clone(),
                    format!("+{:.1}s", e.t_ms as f64 / 1000.0),
                    e.stage.clone(),
                    if e.ok { "ok".into() } else { "FAILED".into() },
                    e.detail.to_string(),
                ]
            })
            .collect();
        print_table(&["AT", "T", "STAGE", "RESULT", "DETAIL"], &rows);
        crate::outln!();
    }
    Ok(())
}
