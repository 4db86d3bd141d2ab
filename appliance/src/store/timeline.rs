//! The boot timeline: timestamped stages per node (keyed by MAC, with the xname when the
//! inventory knows it), the last few boots per MAC.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// One recorded stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootEvent {
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xname: Option<String>,
    /// Counts up per MAC; a firmware DHCP DISCOVER after later stages starts the next one.
    #[serde(default)]
    pub boot: i64,
    /// Unix milliseconds.
    pub ts_ms: i64,
    pub stage: String,
    pub ok: bool,
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// Where one MAC's latest boot stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatusRow {
    pub mac: String,
    pub xname: Option<String>,
    pub boot: i64,
    /// The latest stage and when it happened (Unix ms).
    pub stage: String,
    pub since_ms: i64,
    /// When this boot started (Unix ms).
    pub started_ms: i64,
    /// The latest failed stage of this boot, with its detail.
    pub last_error: Option<String>,
    /// The latest address seen for it (DHCP).
    pub ip: Option<String>,
}

impl Store {
    /// Appends events (one transaction). `starts_boot(stage, last_stage)` says whether `stage`
    /// begins a new boot after `last_stage`; only the last `keep_boots` boots of each MAC are kept.
    pub async fn record_boot_events(
        &self,
        events: Vec<BootEvent>,
        keep_boots: i64,
        starts_boot: fn(&str, &str) -> bool,
    ) -> Result<Vec<BootEvent>, StoreError> {
        let push = self.pushes_upstream();
        self.write(move |tx| {
            let mut out = Vec::with_capacity(events.len());
            for mut e in events {
                let last: Option<(i64, String)> = tx
                    .prepare_cached(
                        "SELECT boot, stage FROM boot_events WHERE mac = ?1 ORDER BY id DESC LIMIT 1",
                    )?
                    .query_row([&e.mac], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                e.boot = match last {
                    None => 1,
                    Some((b, stage)) if starts_boot(&e.stage, &stage) => b + 1,
                    Some((b, _)) => b,
                };
                if e.xname.is_none() {
                    e.xname = tx
                        .prepare_cached(
                            "SELECT component_id FROM ethernet_interfaces WHERE mac = ?1",
                        )?
                        .query_row([&e.mac], |r| r.get::<_, Option<String>>(0))
                        .optional()?
                        .flatten();
                }
                tx.prepare_cached(
                    "INSERT INTO boot_events (mac, xname, boot, ts_ms, stage, ok, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    e.mac,
                    e.xname,
                    e.boot,
                    e.ts_ms,
                    e.stage,
                    e.ok,
                    serde_json::to_string(&e.detail)?
                ])?;
                tx.prepare_cached("DELETE FROM boot_events WHERE mac = ?1 AND boot <= ?2")?
                    .execute(params![e.mac, e.boot - keep_boots])?;
                // Federated: a node that phoned home is Ready; one whose boot failed (its
                // image, TFTP or cloud-init stage, or the boot script's retry chain gave up) is
                // flagged Alert. The upstream hears both.
                if push && let Some(x) = &e.xname {
                    let gave_up = e.stage == "bootscript_retry"
                        && e.detail.get("gave_up").and_then(serde_json::Value::as_bool) == Some(true);
                    if e.ok && e.stage == "phone_home" {
                        super::outbox::enqueue(
                            tx,
                            "ComponentState",
                            x,
                            &serde_json::json!({"State": "Ready", "Flag": "OK"}),
                        )?;
                    } else if !e.ok
                        && (matches!(e.stage.as_str(), "image_error" | "tftp_error" | "cloud_init_error")
                            || gave_up)
                    {
                        super::outbox::enqueue(
                            tx,
                            "ComponentFlag",
                            x,
                            &serde_json::json!({"Flag": "Alert"}),
                        )?;
                    }
                }
                out.push(e);
            }
            Ok(out)
        })
        .await
    }

    /// Deletes boot events older than `before_ms`, then the oldest beyond the newest
    /// `max_events`; returns how many went.
    pub async fn prune_boot_events(
        &self,
        before_ms: i64,
        max_events: u64,
    ) -> Result<usize, StoreError> {
        let keep = i64::try_from(max_events).unwrap_or(i64::MAX);
        self.write(move |tx| {
            let old = tx.execute("DELETE FROM boot_events WHERE ts_ms < ?1", [before_ms])?;
            let over = tx.execute(
                "DELETE FROM boot_events WHERE id <= (SELECT id FROM boot_events ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                [keep],
            )?;
            Ok(old + over)
        })
        .await
    }

    /// The client that holds (or last held) `ip`, from the lease table.
    pub async fn mac_for_ip(&self, ip: std::net::Ipv4Addr) -> Result<Option<String>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT mac FROM leases WHERE ip = ?1 ORDER BY expires_ms DESC LIMIT 1",
                [ip.to_string()],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    /// Every kept event of node `xname` (through its interfaces' MACs too), oldest first.
    pub async fn node_timeline(&self, xname: String) -> Result<Vec<BootEvent>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT mac, xname, boot, ts_ms, stage, ok, detail FROM boot_events
                 WHERE xname = ?1 OR mac IN (SELECT mac FROM ethernet_interfaces WHERE component_id = ?1)
                 ORDER BY id",
            )?;
            let rows = stmt.query_map([xname], event_row)?;
            collect_events(rows)
        })
        .await
    }

    /// The latest boot of every MAC with events.
    pub async fn boot_status(&self) -> Result<Vec<NodeStatusRow>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT mac, xname, boot, ts_ms, stage, ok, detail FROM boot_events e
                 WHERE boot = (SELECT MAX(boot) FROM boot_events WHERE mac = e.mac)
                 ORDER BY mac, id",
            )?;
            let rows = stmt.query_map([], event_row)?;
            let events = collect_events(rows)?;
            let mut out: Vec<NodeStatusRow> = Vec::new();
            for e in events {
                let row = match out.last_mut() {
                    Some(r) if r.mac == e.mac => r,
                    _ => {
                        out.push(NodeStatusRow {
                            mac: e.mac.clone(),
                            xname: None,
                            boot: e.boot,
                            stage: String::new(),
                            since_ms: e.ts_ms,
                            started_ms: e.ts_ms,
                            last_error: None,
                            ip: None,
                        });
                        let Some(r) = out.last_mut() else { continue };
                        r
                    }
                };
                if e.xname.is_some() {
                    row.xname.clone_from(&e.xname);
                }
                if let Some(ip) = e.detail.get("ip").and_then(|v| v.as_str()) {
                    row.ip = Some(ip.to_owned());
                }
                if !e.ok {
                    let why = e.detail.get("error").and_then(|v| v.as_str()).unwrap_or("");
                    row.last_error = Some(if why.is_empty() {
                        e.stage.clone()
                    } else {
                        format!("{}: {why}", e.stage)
                    });
                }
                row.stage = e.stage;
                row.since_ms = e.ts_ms;
            }
            Ok(out)
        })
        .await
    }
}

type EventCols = (String, Option<String>, i64, i64, String, bool, String);

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventCols> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn collect_events(
    rows: impl Iterator<Item = rusqlite::Result<EventCols>>,
) -> Result<Vec<BootEvent>, StoreError> {
    let mut out = Vec::new();
    for row in rows {
        let (mac, xname, boot, ts_ms, stage, ok, detail) = row?;
        out.push(BootEvent {
            mac,
            xname,
            boot,
            ts_ms,
            stage,
            ok,
            detail: serde_json::from_str(&detail).unwrap_or_default(),
        });
    }
    Ok(out)
}
