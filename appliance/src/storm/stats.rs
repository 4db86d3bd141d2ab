//! What a storm measured: per-node stage records, and the figures drawn from them (latency
//! percentiles, failures by stage and reason, the per-second timeline).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// The stages a simulated node walks, in order. Their names are the report's (and the JSON's,
/// and `--until`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Stage {
    /// Firmware DHCP (DISCOVER/OFFER/REQUEST/ACK with PXE options).
    Dhcp,
    /// TFTP download of the boot file the firmware was offered.
    Tftp,
    /// iPXE's own DHCP (user class `iPXE`), answered with the boot-script URL.
    IpxeDhcp,
    /// HTTP GET of the iPXE boot script.
    Bootscript,
    /// HTTP GET of the kernel, sha256 checked.
    Kernel,
    /// HTTP GET of the initrd, sha256 checked.
    Initrd,
    /// The booted OS's DHCP (a plain client).
    OsDhcp,
    /// cloud-init NoCloud fetches: meta-data, user-data, vendor-data.
    CloudInit,
    /// cloud-init's phone-home POST.
    PhoneHome,
}

impl Stage {
    pub const ALL: [Stage; 9] = [
        Stage::Dhcp,
        Stage::Tftp,
        Stage::IpxeDhcp,
        Stage::Bootscript,
        Stage::Kernel,
        Stage::Initrd,
        Stage::OsDhcp,
        Stage::CloudInit,
        Stage::PhoneHome,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Dhcp => "dhcp",
            Stage::Tftp => "tftp",
            Stage::IpxeDhcp => "ipxe_dhcp",
            Stage::Bootscript => "bootscript",
            Stage::Kernel => "kernel",
            Stage::Initrd => "initrd",
            Stage::OsDhcp => "os_dhcp",
            Stage::CloudInit => "cloud_init",
            Stage::PhoneHome => "phone_home",
        }
    }
}

/// Why a node stopped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub stage: Stage,
    pub reason: String,
    /// When the node gave up, seconds since the storm began.
    pub at: f64,
}

/// One simulated node's run: when it powered on, when each stage started and ended (seconds
/// since the storm began), counters, and how it ended.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeRecord {
    pub mac: String,
    pub ip: Option<String>,
    pub xname: Option<String>,
    pub power_on: f64,
    /// (stage, start, end); a stage that failed has no end.
    pub stages: Vec<(Stage, f64, Option<f64>)>,
    pub failure: Option<Failure>,
    /// DHCP messages sent again after a timeout (all DHCP stages).
    pub dhcp_retransmits: u32,
    /// TFTP ACKs (or the RRQ) sent again, on a timeout or a duplicate block.
    pub tftp_retransmits: u32,
    /// HTTP requests tried again after a connection failure.
    pub http_retries: u32,
    pub tftp_bytes: u64,
    pub http_bytes: u64,
    /// Images whose sha256 matched / could not be checked (no published hash, `--no-verify`).
    pub sha256_verified: u32,
    pub sha256_unchecked: u32,
    /// The node walked every stage asked for (through phone-home, or `--until`'s stage).
    pub completed: bool,
}

impl NodeRecord {
    /// Completed every stage asked for without failing (the report's "booted").
    pub fn booted(&self) -> bool {
        self.failure.is_none() && self.completed
    }
}

/// The `q`-quantile (0..=1) of `sorted` by nearest rank (the smallest value with at least
/// `q` of the samples at or below it); `None` when empty.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

/// Latency summary of one stage, in seconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(mut samples: Vec<f64>) -> Option<Latency> {
        samples.sort_by(f64::total_cmp);
        Some(Latency {
            count: samples.len(),
            p50: percentile(&samples, 0.50)?,
            p90: percentile(&samples, 0.90)?,
            p99: percentile(&samples, 0.99)?,
            max: *samples.last()?,
        })
    }
}

/// Nodes in each state during one second of the storm.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Second {
    pub t: u64,
    /// Not powered on yet.
    pub waiting: usize,
    /// In each stage, in [`Stage::ALL`] order.
    pub stages: Vec<usize>,
    pub booted: usize,
    pub failed: usize,
}

/// Everything the report shows.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub nodes: usize,
    pub booted: usize,
    pub failed: usize,
    pub duration_s: f64,
    pub latency: BTreeMap<&'static str, Latency>,
    /// stage → reason → nodes.
    pub failures: BTreeMap<&'static str, BTreeMap<String, usize>>,
    pub tftp_bytes: u64,
    pub http_bytes: u64,
    pub dhcp_retransmits: u64,
    pub tftp_retransmits: u64,
    pub http_retries: u64,
    pub sha256_verified: u64,
    pub sha256_unchecked: u64,
    pub timeline: Vec<Second>,
}

impl Summary {
    pub fn of(records: &[NodeRecord], duration: Duration) -> Summary {
        let mut latency = BTreeMap::new();
        for stage in Stage::ALL {
            let samples: Vec<f64> = records
                .iter()
                .flat_map(|r| &r.stages)
                .filter(|(s, _, _)| *s == stage)
                .filter_map(|(_, start, end)| end.map(|e| e - start))
                .collect();
            if let Some(l) = Latency::of(samples) {
                latency.insert(stage.as_str(), l);
            }
        }
        let mut failures: BTreeMap<&'static str, BTreeMap<String, usize>> = BTreeMap::new();
        for f in records.iter().filter_map(|r| r.failure.as_ref()) {
            *failures
                .entry(f.stage.as_str())
                .or_default()
                .entry(f.reason.clone())
                .or_default() += 1;
        }
        let sum = |f: fn(&NodeRecord) -> u64| records.iter().map(f).sum::<u64>();
        Summary {
            nodes: records.len(),
            booted: records.iter().filter(|r| r.booted()).count(),
            failed: records.iter().filter(|r| r.failure.is_some()).count(),
            duration_s: duration.as_secs_f64(),
            latency,
            failures,
            tftp_bytes: sum(|r| r.tftp_bytes),
            http_bytes: sum(|r| r.http_bytes),
            dhcp_retransmits: sum(|r| r.dhcp_retransmits.into()),
            tftp_retransmits: sum(|r| r.tftp_retransmits.into()),
            http_retries: sum(|r| r.http_retries.into()),
            sha256_verified: sum(|r| r.sha256_verified.into()),
            sha256_unchecked: sum(|r| r.sha256_unchecked.into()),
            timeline: timeline(records, duration),
        }
    }
}

/// Where each node stood at the middle of every second: waiting, in a stage, booted or failed.
pub fn timeline(records: &[NodeRecord], duration: Duration) -> Vec<Second> {
    let secs = duration.as_secs_f64().ceil().max(1.0) as u64;
    (0..secs)
        .map(|t| {
            let at = t as f64 + 0.5;
            let mut s = Second {
                t,
                waiting: 0,
                stages: vec![0; Stage::ALL.len()],
                booted: 0,
                failed: 0,
            };
            for r in records {
                match state_at(r, at) {
                    State::Waiting => s.waiting += 1,
                    State::In(i) => {
                        if let Some(c) = s.stages.get_mut(i) {
                            *c += 1;
                        }
                    }
                    State::Booted => s.booted += 1,
                    State::Failed => s.failed += 1,
                }
            }
            s
        })
        .collect()
}

enum State {
    Waiting,
    In(usize),
    Booted,
    Failed,
}

fn state_at(r: &NodeRecord, at: f64) -> State {
    if at < r.power_on {
        return State::Waiting;
    }
    if r.failure.as_ref().is_some_and(|f| f.at <= at) {
        return State::Failed;
    }
    let index_of = |stage: Stage| Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0);
    // The last stage started by `at`; before the first one starts the node is in DHCP.
    let Some(pos) = r.stages.iter().rposition(|(_, start, _)| *start <= at) else {
        return State::In(0);
    };
    let Some(&(stage, _, end)) = r.stages.get(pos) else {
        return State::In(0);
    };
    match end {
        Some(e) if e <= at => match r.stages.get(pos + 1) {
            // Between stages (e.g. the kernel "booting"): count it in the one it enters next.
            Some(next) => State::In(index_of(next.0)),
            None if r.completed => State::Booted,
            None => State::In(index_of(stage)),
        },
        Some(_) => State::In(index_of(stage)),
        None => State::In(index_of(stage)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.50), Some(50.0));
        assert_eq!(percentile(&v, 0.90), Some(90.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
        // Ten samples: p90 is the 9th, p99 the 10th.
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&ten, 0.9), Some(9.0));
        assert_eq!(percentile(&ten, 0.99), Some(10.0));
    }

    #[test]
    fn latency_sorts_its_samples() {
        let l = Latency::of(vec![3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((l.count, l.p50, l.max), (4, 2.0, 10.0));
        assert_eq!(l.p99, 10.0);
        assert!(Latency::of(Vec::new()).is_none());
    }

    fn record(power_on: f64, stages: &[(Stage, f64, Option<f64>)], fail: bool) -> NodeRecord {
        NodeRecord {
            power_on,
            stages: stages.to_vec(),
            failure: fail.then(|| Failure {
                stage: stages.last().unwrap().0,
                reason: "timeout".into(),
                at: 1.2,
            }),
            completed: !fail,
            ..Default::default()
        }
    }

    #[test]
    fn summary_counts_failures_and_the_timeline_places_nodes() {
        let ok = record(
            0.0,
            &[
                (Stage::Dhcp, 0.0, Some(1.2)),
                (Stage::Tftp, 1.2, Some(2.1)),
                (Stage::PhoneHome, 2.1, Some(2.2)),
            ],
            false,
        );
        let bad = record(1.0, &[(Stage::Dhcp, 1.0, None)], true);
        let s = Summary::of(&[ok, bad], Duration::from_secs_f64(3.5));
        assert_eq!((s.nodes, s.booted, s.failed), (2, 1, 1));
        assert_eq!(s.failures["dhcp"]["timeout"], 1);
        assert_eq!(s.latency["dhcp"].count, 1);
        assert_eq!(s.timeline.len(), 4);
        // t=0.5: one node in DHCP, one waiting.
        assert_eq!((s.timeline[0].waiting, s.timeline[0].stages[0]), (1, 1));
        // t=1.5: the first node in TFTP; the second has failed in DHCP.
        assert_eq!((s.timeline[1].stages[1], s.timeline[1].failed), (1, 1));
        // t=2.5: booted.
        assert_eq!(s.timeline[2].booted, 1);
    }

    #[test]
    fn a_node_between_stages_counts_in_the_stage_it_enters_next() {
        // SeaBIOS: no TFTP; DHCP ends at 0.2, the boot script starts at 0.8.
        let n = record(
            0.0,
            &[
                (Stage::Dhcp, 0.0, Some(0.2)),
                (Stage::Bootscript, 0.8, Some(0.9)),
            ],
            false,
        );
        let s = Summary::of(&[n], Duration::from_secs(1));
        let bootscript = Stage::ALL
            .iter()
            .position(|s| *s == Stage::Bootscript)
            .unwrap();
        assert_eq!(s.timeline[0].stages[bootscript], 1);
        assert_eq!(s.timeline[0].stages.iter().sum::<usize>(), 1);
    }
}
