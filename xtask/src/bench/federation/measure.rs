//! Measurement: the timed runs (first sync, steady state, outbox drain) and what they read
//! from the servers' logs, status and store files.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::bail;
use serde_json::Value;

use super::setup::{Node, Server, endpoint_ids, in_prefix};
use super::{BACKLOG, PREFIX, RACK, STEADY_PULLS};

/// Seconds since the Unix epoch of a log line's leading RFC 3339 timestamp
/// (`2026-01-02T03:04:05.123456Z`).
pub(super) fn log_time(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let h: f64 = t.next()?.parse().ok()?;
    let mi: f64 = t.next()?.parse().ok()?;
    let s: f64 = t.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + mi * 60.0 + s)
}

/// A `key=value` field of a log line.
fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// One `upstream pull` debug line: (time, written, deleted, unchanged).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Pull {
    pub(super) at: f64,
    pub(super) written: u64,
    pub(super) deleted: u64,
    pub(super) unchanged: u64,
}

pub(super) fn pulls(log: &str) -> Vec<Pull> {
    log.lines()
        .filter(|l| l.contains("upstream pull ") || l.ends_with("upstream pull"))
        .filter(|l| !l.contains("pull failed"))
        .filter_map(|l| {
            let n = |k: &str| log_field(l, k).and_then(|v| v.parse().ok());
            Some(Pull {
                at: log_time(l)?,
                written: n("written")?,
                deleted: n("deleted")?,
                unchanged: n("unchanged")?,
            })
        })
        .collect()
}

/// The time of the first log line containing `what`.
pub(super) fn first_time(log: &str, what: &str) -> Option<f64> {
    log.lines().find(|l| l.contains(what)).and_then(log_time)
}

/// The 1/5/15-minute load averages (other work on the machine shows in the times).
pub(super) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".to_owned())
}

pub(super) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// (size, mtime, sha256) of a file, or a note that it does not exist.
pub(super) fn fingerprint(path: &Path) -> String {
    let Ok(meta) = fs::metadata(path) else {
        return "absent".to_owned();
    };
    let mtime = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let sum = Command::new("sha256sum")
        .arg(path)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default();
    format!("{} bytes, mtime {mtime} ns, sha256 {sum}", meta.len())
}

/// Times the four list GETs a pull makes, from the namespace: (path, bytes, seconds), the
/// median of three.
pub(super) fn upstream_gets(up: &Server) -> anyhow::Result<Vec<(String, u64, f64)>> {
    let mut out = Vec::new();
    for path in [
        "/hsm/v2/State/Components",
        "/hsm/v2/Inventory/EthernetInterfaces",
        "/hsm/v2/groups",
        "/boot/v1/bootparameters",
    ] {
        let mut secs = Vec::new();
        let mut bytes = 0;
        for _ in 0..3 {
            let o = up
                .cmd("curl")
                .args(["-s", "-m", "60", "-o", "/dev/null"])
                .args(["-H", &format!("Authorization: Bearer {}", up.token)])
                .args(["-w", "%{http_code} %{size_download} %{time_total}"])
                .arg(format!("http://{}{path}", up.addr))
                .output()?;
            let w = String::from_utf8_lossy(&o.stdout).into_owned();
            let mut p = w.split_whitespace();
            let code = p.next().unwrap_or("");
            if code != "200" && code != "404" {
                bail!("GET {path} → {w}");
            }
            bytes = p.next().and_then(|b| b.parse().ok()).unwrap_or(0);
            secs.push(p.next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN));
        }
        out.push((path.to_owned(), bytes, median(&secs)));
    }
    Ok(out)
}

pub(super) struct FirstSync {
    pub(super) fill_s: f64,
    /// Spawn → status shows the rack.
    pub(super) external_s: f64,
    /// Process's first log line → `upstream pull`.
    pub(super) server_total_s: Option<f64>,
    /// `federated with an upstream` → `upstream pull`.
    pub(super) server_pull_s: Option<f64>,
    pub(super) pull: Option<Pull>,
    pub(super) polls: usize,
    pub(super) gets: Vec<(String, u64, f64)>,
    /// `upstream_owned` of the status after the first sync.
    pub(super) owned: Value,
    pub(super) load: String,
}

pub(super) struct Steady {
    pub(super) pulls: Vec<Pull>,
    /// Seconds per pull: the first from `federated with an upstream`, the rest from the gap
    /// between consecutive pulls less the interval.
    pub(super) durations: Vec<f64>,
    pub(super) status_stats: Value,
    pub(super) files_before: Vec<(String, String)>,
    pub(super) files_after: Vec<(String, String)>,
    pub(super) pulls_between: usize,
    pub(super) load: String,
}

pub(super) struct Drain {
    pub(super) create_note: String,
    pub(super) depth_before: i64,
    /// Upstream spawn → first delivery seen.
    pub(super) wait_s: f64,
    /// First delivery seen → outbox empty.
    pub(super) drain_s: f64,
    /// Outbox depth when the first delivery was seen (delivered in `drain_s`).
    pub(super) first_depth: i64,
    /// Upstream spawn → outbox empty.
    pub(super) total_s: f64,
    pub(super) upstream_endpoints: usize,
    pub(super) pushed: Value,
    pub(super) backoff_lines: Vec<String>,
    pub(super) drained_lines: Vec<String>,
    pub(super) load: String,
}

pub(super) fn check_rack(down: &Server, rack: &[&Node]) -> anyhow::Result<String> {
    let want_ids: BTreeSet<&str> = rack.iter().map(|n| n.xname.as_str()).collect();
    let want_macs: BTreeSet<&str> = rack.iter().map(|n| n.mac.as_str()).collect();
    let comps = down.list("/hsm/v2/State/Components", "Components")?;
    let ids: BTreeSet<&str> = comps
        .iter()
        .filter_map(|c| c.get("ID").and_then(Value::as_str))
        .collect();
    if comps.len() != RACK || ids != want_ids {
        let out: Vec<&&str> = ids
            .iter()
            .filter(|i| !in_prefix(i, PREFIX))
            .take(5)
            .collect();
        bail!(
            "downstream holds {} Components ({} distinct), wanted the {RACK} of {PREFIX}; out of scope e.g. {out:?}",
            comps.len(),
            ids.len()
        );
    }
    let eis = down.list("/hsm/v2/Inventory/EthernetInterfaces", "")?;
    let macs: BTreeSet<&str> = eis
        .iter()
        .filter_map(|e| e.get("MACAddress").and_then(Value::as_str))
        .collect();
    let eis_in = eis
        .iter()
        .filter(|e| {
            e.get("ComponentID")
                .and_then(Value::as_str)
                .is_some_and(|c| in_prefix(c, PREFIX))
        })
        .count();
    if eis.len() != RACK || macs != want_macs || eis_in != RACK {
        bail!(
            "downstream holds {} EthernetInterfaces ({} in {PREFIX}), wanted the rack's {RACK}",
            eis.len(),
            eis_in
        );
    }
    let bps = down.list("/boot/v1/bootparameters", "")?;
    let bp_macs: BTreeSet<&str> = bps
        .iter()
        .filter_map(|b| b.get("macs").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if bps.len() != RACK || bp_macs != want_macs {
        bail!(
            "downstream holds {} boot-parameters objects covering {} MACs, wanted {RACK} for the rack's MACs",
            bps.len(),
            bp_macs.len()
        );
    }
    Ok(format!(
        "{} Components, {} EthernetInterfaces, {} boot-parameters objects, all in {PREFIX}",
        comps.len(),
        eis.len(),
        bps.len()
    ))
}

pub(super) fn status(down: &Server) -> anyhow::Result<Value> {
    down.json("/rackboot/v1/upstream")
}

pub(super) fn first_sync(
    down: &mut Server,
    up: &Server,
    rack: &[&Node],
    fill_s: f64,
) -> anyhow::Result<(FirstSync, String)> {
    let load = loadavg();
    let (t0, offset) = down.spawn()?;
    let mut polls = 0;
    let external_s = loop {
        polls += 1;
        // Before the HTTP listener is up the request fails fast; keep polling.
        if let Ok((200, body)) = down.call("GET", "/rackboot/v1/upstream", None, 5)
            && let Ok(v) = serde_json::from_str::<Value>(&body)
            && v.get("last_pull").is_some_and(Value::is_string)
            && v.pointer("/upstream_owned/components")
                .and_then(Value::as_u64)
                == Some(RACK as u64)
        {
            break t0.elapsed().as_secs_f64();
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!("no first sync within 300 s; log:\n{}", down.log_tail(4000));
        }
        if let Some(c) = down.child.as_mut()
            && c.try_wait()?.is_some()
        {
            bail!("downstream exited; log:\n{}", down.log_tail(4000));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = down.log_from(offset);
    let pull = pulls(&log).first().copied();
    let start = log.lines().next().and_then(log_time);
    let fed = first_time(&log, "federated with an upstream");
    let owned = status(down)?
        .get("upstream_owned")
        .cloned()
        .unwrap_or(Value::Null);
    let checked = check_rack(down, rack)?;
    let gets = upstream_gets(up)?;
    Ok((
        FirstSync {
            fill_s,
            external_s,
            server_total_s: start.zip(pull).map(|(s, p)| p.at - s),
            server_pull_s: fed.zip(pull).map(|(f, p)| p.at - f),
            pull,
            polls,
            gets,
            owned,
            load,
        },
        checked,
    ))
}

pub(super) fn steady(down: &mut Server) -> anyhow::Result<Steady> {
    let load = loadavg();
    let (_, offset) = down.spawn()?;
    down.wait_ready()?;
    let count = |d: &Server| pulls(&d.log_from(offset)).len();
    let wait_pulls = |d: &Server, n: usize| -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while count(d) < n {
            if Instant::now() > deadline {
                bail!(
                    "only {} steady-state pulls within 120 s; log:\n{}",
                    count(d),
                    d.log_tail(4000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    };
    // Baseline after two pulls (recovery of the SIGKILLed WAL and start-up writes are over).
    wait_pulls(down, 2)?;
    // Just after a pull's log line: the next pull is about an interval away.
    let files = ["rackboot.db", "rackboot.db-wal"];
    let fp = |d: &Server| {
        files
            .iter()
            .map(|f| ((*f).to_owned(), fingerprint(&d.file(f))))
            .collect::<Vec<_>>()
    };
    let files_before = fp(down);
    let at_before = count(down);
    wait_pulls(down, at_before + STEADY_PULLS)?;
    let files_after = fp(down);
    let pulls_between = count(down) - at_before;
    let status_stats = status(down)?
        .get("last_pull_stats")
        .cloned()
        .unwrap_or(Value::Null);
    let log = down.log_from(offset);
    let all = pulls(&log);
    let mut durations = Vec::new();
    if let (Some(fed), Some(p)) = (first_time(&log, "federated with an upstream"), all.first()) {
        durations.push(p.at - fed);
    }
    for w in all.windows(2) {
        if let [a, b] = w {
            durations.push(b.at - a.at - 1.0);
        }
    }
    Ok(Steady {
        pulls: all,
        durations,
        status_stats,
        files_before,
        files_after,
        pulls_between,
        load,
    })
}

pub(super) fn drain(down: &Server, up: &mut Server) -> anyhow::Result<Drain> {
    let load = loadavg();
    up.kill();
    let ids = endpoint_ids();
    let eps: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            serde_json::json!({"ID": id, "FQDN": format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256),
                "User": "root", "MACRequired": false, "MACAddr": "", "Systems": [], "Managers": [],
                "SchemaVersion": 1})
        })
        .collect();
    let down_offset = fs::metadata(&down.log).map_or(0, |m| m.len());
    let body = serde_json::json!({ "RedfishEndpoints": eps }).to_string();
    let t = Instant::now();
    let (code, text) = down.call(
        "POST",
        "/hsm/v2/Inventory/RedfishEndpoints",
        Some(&body),
        600,
    )?;
    let mut create_s = t.elapsed().as_secs_f64();
    let mut create_note = format!(
        "one `POST /hsm/v2/Inventory/RedfishEndpoints` with all {BACKLOG} → {code} in {create_s:.1} s"
    );
    if code != 201 {
        // The single request did not make it (e.g. the 30 s request timeout): post the rest
        // in chunks, and say so.
        let have: BTreeSet<String> = down
            .list("/hsm/v2/Inventory/RedfishEndpoints", "RedfishEndpoints")?
            .iter()
            .filter_map(|e| e.get("ID").and_then(Value::as_str).map(str::to_owned))
            .collect();
        eprintln!(
            "the single POST answered {code} after {create_s:.1} s with {} of {BACKLOG} stored: {}",
            have.len(),
            text.chars().take(300).collect::<String>()
        );
        let missing: Vec<&Value> = eps
            .iter()
            .filter(|e| {
                e.get("ID")
                    .and_then(Value::as_str)
                    .is_some_and(|id| !have.contains(id))
            })
            .collect();
        for chunk in missing.chunks(500) {
            let body = serde_json::json!({ "RedfishEndpoints": chunk }).to_string();
            let (code, text) = down.call(
                "POST",
                "/hsm/v2/Inventory/RedfishEndpoints",
                Some(&body),
                120,
            )?;
            if code != 201 {
                bail!("POST of 500 RedfishEndpoints → {code}: {text}");
            }
        }
        create_s = t.elapsed().as_secs_f64();
        let _ = write!(
            create_note,
            " ({} stored; {} more posted in requests of 500, {create_s:.1} s in all)",
            have.len(),
            missing.len()
        );
    }
    let s = status(down)?;
    let depth_before = s.get("outbox_depth").and_then(Value::as_i64).unwrap_or(-1);
    if depth_before != BACKLOG as i64 {
        bail!(
            "outbox_depth is {depth_before} after {BACKLOG} endpoints with the upstream down: {s}"
        );
    }
    let (t0, _) = up.spawn()?;
    up.wait_ready()?;
    let mut first = None;
    let total_s = loop {
        let s = status(down)?;
        let depth = s.get("outbox_depth").and_then(Value::as_i64).unwrap_or(-1);
        if first.is_none() && (0..BACKLOG as i64).contains(&depth) {
            first = Some((t0.elapsed().as_secs_f64(), depth));
        }
        if depth == 0 {
            break t0.elapsed().as_secs_f64();
        }
        if t0.elapsed() > Duration::from_secs(900) {
            bail!(
                "outbox still at {depth} after 900 s; downstream log:\n{}",
                down.log_tail(3000)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (wait_s, first_depth) = first.unwrap_or((total_s, 0));
    let pushed = status(down)?.get("pushed").cloned().unwrap_or(Value::Null);
    let got = up.list("/hsm/v2/Inventory/RedfishEndpoints", "RedfishEndpoints")?;
    let got_ids: Vec<&str> = got
        .iter()
        .filter_map(|e| e.get("ID").and_then(Value::as_str))
        .collect();
    let distinct: BTreeSet<&str> = got_ids.iter().copied().collect();
    let want: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    if got_ids.len() != BACKLOG || distinct != want {
        bail!(
            "the upstream holds {} RedfishEndpoints ({} distinct) after the drain, wanted exactly the {BACKLOG} queued",
            got_ids.len(),
            distinct.len()
        );
    }
    let log = down.log_from(down_offset);
    let backoff_lines: Vec<String> = log
        .lines()
        .filter(|l| l.contains("outbox delivery failed"))
        .filter_map(|l| {
            Some(format!(
                "{} retry_in={}",
                l.split_whitespace().next()?,
                log_field(l, "retry_in")?
            ))
        })
        .collect();
    let drained_lines: Vec<String> = log
        .lines()
        .filter(|l| l.contains("outbox drained"))
        .map(str::to_owned)
        .collect();
    Ok(Drain {
        create_note,
        depth_before,
        wait_s,
        drain_s: total_s - wait_s,
        first_depth,
        total_s,
        upstream_endpoints: got_ids.len(),
        pushed,
        backoff_lines,
        drained_lines,
        load,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_parse() {
        let l = "2026-11-24T12:13:08.165934Z DEBUG rackboot::federation: upstream pull written=192 deleted=0 unchanged=0";
        let p = pulls(l);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].written, p[0].deleted, p[0].unchanged), (192, 0, 0));
        let a = log_time("1970-01-02T00:00:01.5Z x").unwrap();
        assert!((a - 86_401.5).abs() < 1e-9);
        let b = log_time("2026-11-24T12:13:08.165934Z").unwrap();
        let c = log_time("2026-11-25T00:00:00Z").unwrap();
        assert!((c - b - (11.0 * 3600.0 + 46.0 * 60.0 + 51.834066)).abs() < 1e-6);
        assert!(pulls("2026-11-24T12:13:08Z WARN rackboot::federation: upstream pull failed; serving the local copy error=x").is_empty());
    }
}
