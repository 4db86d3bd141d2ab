//! `cargo xtask release --check-reproducible`: two releases of HEAD from two fresh clones at
//! different paths (and different path lengths), compared file by file; a difference is
//! explained with Debian's `diffoscope` and fails the check.
//!
//! Cost: both clones build with this checkout's target dir, so the registry crates (the bulk
//! of a release build) compile at most once and are shared; each clone recompiles only the
//! workspace crates (pxe-core, redfish, appliance) and relinks with thin LTO, a few minutes
//! each on 2 cores. Sharing is sound because nothing of the checkout's path reaches the
//! outputs (the target dir and cargo home are remapped to fixed names, workspace sources are
//! passed by relative path) — which is exactly what the comparison then shows.

use std::path::Path;
use std::process::Command;

use anyhow::bail;

use super::{Names, Source, release, target_dir};
use crate::run::{have, run};

pub fn check() -> anyhow::Result<()> {
    let root = crate::root();
    let tmp = tempfile::Builder::new()
        .prefix("rackboot-repro-")
        .tempdir()?;
    let dirs = [
        tmp.path().join("a/rackboot"),
        tmp.path().join("b/second-checkout/src/rackboot-release"),
    ];
    // One commit for both clones, whatever is committed while the first one builds.
    let commit = Source::of(&root)?.commit;
    let mut outs = Vec::new();
    for dir in &dirs {
        crate::stage(&format!(
            "reproducibility: clone {commit} into {}",
            dir.display()
        ));
        run(Command::new("git")
            .args(["clone", "--quiet", "--no-hardlinks"])
            .arg(&root)
            .arg(dir))?;
        run(Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["checkout", "--quiet", "--detach", &commit]))?;
        let src = Source::of(dir)?;
        let out = dir.join("dist");
        release(&src, &target_dir(), &out, false)?;
        outs.push((src, out));
    }
    let [(src, a), (_, b)] = &outs[..] else {
        bail!("two releases expected");
    };
    let names = Names::of(&src.version);
    let compared = [
        "rackboot".to_owned(),
        names.deb,
        names.rpm,
        names.oci,
        names.sbom,
        names.oci_sbom,
        names.provenance,
        "SHA256SUMS".to_owned(),
    ];
    let mut differ = Vec::new();
    for f in &compared {
        if !same(&a.join(f), &b.join(f))? {
            differ.push(f.clone());
        }
    }
    if differ.is_empty() {
        eprintln!(
            "reproducible: {} are byte-identical across {} and {}",
            compared.join(", "),
            dirs[0].display(),
            dirs[1].display()
        );
        return Ok(());
    }
    let report_dir = target_dir().join("repro-diffoscope");
    std::fs::create_dir_all(&report_dir)?;
    for f in &differ {
        let report = report_dir.join(format!("{f}.txt"));
        if have("diffoscope") {
            let _ = Command::new("diffoscope")
                .arg("--text")
                .arg(&report)
                .arg(a.join(f))
                .arg(b.join(f))
                .status();
            let text = std::fs::read_to_string(&report).unwrap_or_default();
            eprintln!(
                "--- diffoscope {f} (first 60 lines; all in {}):",
                report.display()
            );
            for l in text.lines().take(60) {
                eprintln!("{l}");
            }
        }
    }
    // Keep the two releases for a closer look.
    let kept = tmp.keep();
    bail!(
        "not reproducible: {} differ between {} and {} (kept under {})",
        differ.join(", "),
        a.display(),
        b.display(),
        kept.display()
    )
}

fn same(a: &Path, b: &Path) -> anyhow::Result<bool> {
    Ok(std::fs::read(a)? == std::fs::read(b)?)
}
