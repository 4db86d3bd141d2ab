//! The storm's report: a terminal table, JSON, and a hand-written SVG chart of nodes per
//! stage over time.

use std::fmt::Write as _;

use serde_json::json;

use super::stats::{NodeRecord, Stage, Summary};

/// Short column names for the timeline table, in [`Stage::ALL`] order.
const SHORT: [&str; 9] = [
    "dhcp", "tftp", "ipxe", "script", "kernel", "initrd", "osdhcp", "cinit", "phone",
];

/// The human report.
pub fn table(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "storm: {} nodes, {} booted, {} failed, in {:.1} s",
        s.nodes, s.booted, s.failed, s.duration_s
    );
    let _ = writeln!(
        o,
        "\nlatency (s)   {:>6} {:>8} {:>8} {:>8} {:>8}",
        "nodes", "p50", "p90", "p99", "max"
    );
    for stage in Stage::ALL {
        if let Some(l) = s.latency.get(stage.as_str()) {
            let _ = writeln!(
                o,
                "  {:<11} {:>6} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
                stage.as_str(),
                l.count,
                l.p50,
                l.p90,
                l.p99,
                l.max
            );
        }
    }
    let _ = writeln!(
        o,
        "\nserved: TFTP {} bytes, HTTP {} bytes",
        s.tftp_bytes, s.http_bytes
    );
    let _ = writeln!(
        o,
        "retransmissions: DHCP {}, TFTP {}; HTTP retries {}",
        s.dhcp_retransmits, s.tftp_retransmits, s.http_retries
    );
    let _ = writeln!(
        o,
        "images: {} sha256 verified, {} unchecked",
        s.sha256_verified, s.sha256_unchecked
    );
    if !s.failures.is_empty() {
        let _ = writeln!(o, "\nfailures (stage: reason × nodes):");
        for (stage, reasons) in &s.failures {
            for (reason, n) in reasons {
                let _ = writeln!(o, "  {stage}: {reason} × {n}");
            }
        }
    }
    let _ = write!(
        o,
        "\ntimeline (nodes in each stage, per second)\n{:>5} {:>5}",
        "t", "wait"
    );
    for c in SHORT {
        let _ = write!(o, " {c:>6}");
    }
    let _ = writeln!(o, " {:>6} {:>6}", "booted", "failed");
    for sec in &s.timeline {
        let _ = write!(o, "{:>5} {:>5}", sec.t, sec.waiting);
        for n in &sec.stages {
            let _ = write!(o, " {n:>6}");
        }
        let _ = writeln!(o, " {:>6} {:>6}", sec.booted, sec.failed);
    }
    o
}

/// One line per failure stage for the exit error: "tftp: timeout … (3 nodes)".
pub fn failure_line(s: &Summary) -> String {
    let mut parts = Vec::new();
    for (stage, reasons) in &s.failures {
        for (reason, n) in reasons {
            parts.push(format!("{stage}: {reason} ({n} nodes)"));
        }
    }
    parts.join("; ")
}

/// The JSON report: the summary, the stage order of the timeline's `stages` arrays, and
/// every node's record.
pub fn json(s: &Summary, nodes: &[NodeRecord]) -> serde_json::Value {
    json!({
        "stages": Stage::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "summary": s,
        "nodes": nodes,
    })
}

const W: f64 = 960.0;
const H: f64 = 480.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// Layers of the stacked area chart, bottom to top: done first, not started last.
fn layers(s: &Summary) -> Vec<(&'static str, &'static str, Vec<usize>)> {
    let colors = [
        "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f7f7f",
        "#d62728",
    ];
    let mut l = vec![
        (
            "failed",
            "#000000",
            s.timeline.iter().map(|t| t.failed).collect(),
        ),
        (
            "booted",
            "#2ca02c",
            s.timeline.iter().map(|t| t.booted).collect(),
        ),
    ];
    for (i, stage) in Stage::ALL.iter().enumerate().rev() {
        let v: Vec<usize> = s
            .timeline
            .iter()
            .map(|t| t.stages.get(i).copied().unwrap_or(0))
            .collect();
        l.push((
            stage.as_str(),
            colors.get(i).copied().unwrap_or("#7f7f7f"),
            v,
        ));
    }
    l.push((
        "waiting",
        "#e0e0e0",
        s.timeline.iter().map(|t| t.waiting).collect(),
    ));
    l
}

/// A stacked area chart (nodes per stage, per second), as a standalone SVG document.
pub fn svg(s: &Summary) -> String {
    let secs = s.timeline.len().max(1) as f64;
    let n = s.nodes.max(1) as f64;
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |t: f64| LEFT + t / secs * pw;
    let y = |v: f64| TOP + ph - v / n * ph;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">Boot storm: {} nodes, {} booted, {} failed, {:.1} s</text>"#,
        s.nodes, s.booted, s.failed, s.duration_s
    );
    let mut below = vec![0usize; s.timeline.len()];
    for (i, (name, color, values)) in layers(s).into_iter().enumerate() {
        let mut top = Vec::new();
        let mut bottom = Vec::new();
        for ((t, v), under) in values.iter().enumerate().zip(below.iter_mut()) {
            let (b, u) = (*under as f64, (*under + v) as f64);
            for edge in [t as f64, t as f64 + 1.0] {
                top.push(format!("{:.1},{:.1}", x(edge), y(u)));
                bottom.push(format!("{:.1},{:.1}", x(edge), y(b)));
            }
            *under += v;
        }
        bottom.reverse();
        if values.iter().any(|v| *v > 0) {
            let _ = writeln!(
                o,
                r#"<polygon points="{} {}" fill="{color}" fill-opacity="0.85" stroke="none"><title>{name}</title></polygon>"#,
                top.join(" "),
                bottom.join(" ")
            );
        }
        let ly = TOP + 14.0 + i as f64 * 18.0;
        let lx = W - RIGHT + 15.0;
        let _ = writeln!(
            o,
            r#"<rect x="{lx}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            ly - 10.0,
            lx + 18.0,
            ly
        );
    }
    // Axes and ticks.
    let _ = writeln!(
        o,
        r#"<path d="M{LEFT},{TOP} V{:.1} H{:.1}" fill="none" stroke="black"/>"#,
        TOP + ph,
        LEFT + pw
    );
    for i in 0..=5 {
        let v = (n * f64::from(i) / 5.0).round();
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{v}</text><line x1="{:.1}" x2="{LEFT}" y1="{:.1}" y2="{:.1}" stroke="black"/>"#,
            LEFT - 6.0,
            y(v) + 4.0,
            LEFT - 3.0,
            y(v),
            y(v)
        );
    }
    let step = nice_step(secs);
    let mut t = 0.0;
    while t <= secs {
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t}</text><line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="black"/>"#,
            x(t),
            TOP + ph + 18.0,
            x(t),
            x(t),
            TOP + ph,
            TOP + ph + 4.0
        );
        t += step;
    }
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since the storm began</text>"#,
        LEFT + pw / 2.0,
        H - 10.0
    );
    let _ = writeln!(
        o,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">nodes</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    o.push_str("</svg>\n");
    o
}

/// A tick spacing of 1, 2 or 5 × 10ⁿ seconds giving at most ~10 ticks.
fn nice_step(span: f64) -> f64 {
    let mut step = 1.0;
    loop {
        for m in [1.0, 2.0, 5.0] {
            if span / (step * m) <= 10.0 {
                return step * m;
            }
        }
        step *= 10.0;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::storm::stats::{Failure, NodeRecord};
    use std::time::Duration;

    #[test]
    fn reports_show_failures_and_draw_every_layer() {
        let ok = NodeRecord {
            stages: vec![
                (Stage::Dhcp, 0.0, Some(0.5)),
                (Stage::PhoneHome, 0.5, Some(0.9)),
            ],
            completed: true,
            ..Default::default()
        };
        let bad = NodeRecord {
            stages: vec![(Stage::Tftp, 0.2, None)],
            failure: Some(Failure {
                stage: Stage::Tftp,
                reason: "timeout".into(),
                at: 0.5,
            }),
            ..Default::default()
        };
        let s = Summary::of(&[ok.clone(), bad], Duration::from_secs(2));
        let t = table(&s);
        assert!(t.contains("tftp: timeout × 1"), "{t}");
        assert_eq!(failure_line(&s), "tftp: timeout (1 nodes)");
        let svg = svg(&s);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("<title>booted</title>") && svg.contains("<title>failed</title>"));
        let j = json(&s, &[ok]);
        assert_eq!(j["summary"]["booted"], 1);
        assert_eq!(j["stages"][0], "dhcp");
        assert_eq!(nice_step(7.0), 1.0);
        assert_eq!(nice_step(95.0), 10.0);
        assert_eq!(nice_step(150.0), 20.0);
    }
}
