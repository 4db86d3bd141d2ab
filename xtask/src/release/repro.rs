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

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::{Names, Source, release, target_dir};
use crate::run::{have, run};

pub fn check() -> anyhow::Result<()> {
    let root = crate::root();
    let tmp = tempfile::Builder::new()
        .prefix("rackboot-repro-")
        .tempdir()?;
    // One commit for both clones, whatever is committed while the first one builds.
    let src = Source::of(&root)?;
    let a = build_clone(&root, &src.commit, &tmp.path().join("a/rackboot"))?;
    let b = build_clone(
        &root,
        &src.commit,
        &tmp.path().join("b/second-checkout/src/rackboot-release"),
    )?;
    compare(&src.version, &a, &b, tmp)
}

/// The check `cargo xtask test` runs: the release just built in `dist` from this checkout
/// against one more, built from a fresh clone of the same commit at another path (a path of
/// another length, so a leaked build path changes offsets too). Half the cost of [`check`]:
/// one extra release build instead of two.
pub fn check_against(dist: &Path) -> anyhow::Result<()> {
    let root = crate::root();
    let src = Source::of(&root)?;
    // The commit the release in `dist` was built from, as its provenance names it: the clone
    // must be of that commit, whatever HEAD is now.
    let provenance = dist.join(Names::of(&src.version).provenance);
    let stmt: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&provenance).with_context(|| format!("no release in {}", dist.display()))?,
    )
    .with_context(|| format!("{} is not JSON", provenance.display()))?;
    let source = &stmt["predicate"]["buildDefinition"]["externalParameters"]["source"];
    let commit = source["commit"]
        .as_str()
        .with_context(|| format!("{} names no source commit", provenance.display()))?
        .to_owned();
    if source["dirty"].as_bool() != Some(false) {
        let why = format!(
            "the release in {} was built from a tree with uncommitted changes, so it is not \
             its commit's and cannot be compared with a clean clone of it",
            dist.display()
        );
        if crate::run::in_ci() {
            bail!("reproducibility check: {why}");
        }
        eprintln!("reproducibility check NOT RUN: {why} (commit, release, then run it again)");
        return Ok(());
    }
    let tmp = tempfile::Builder::new()
        .prefix("rackboot-repro-")
        .tempdir()?;
    let b = build_clone(
        &root,
        &commit,
        &tmp.path().join("elsewhere/second-build/rackboot"),
    )?;
    compare(&src.version, dist, &b, tmp)
}

/// Clones `commit` of `root` into `dir` and builds its release into `<dir>/dist`.
fn build_clone(root: &Path, commit: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    crate::stage(&format!(
        "reproducibility: clone {commit} into {}",
        dir.display()
    ));
    run(Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(root)
        .arg(dir))?;
    run(Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["checkout", "--quiet", "--detach", commit]))?;
    let src = Source::of(dir)?;
    let out = dir.join("dist");
    release(&src, &target_dir(), &out, false)?;
    Ok(out)
}

/// Compares the two releases file by file; a difference is explained with diffoscope and
/// fails, keeping both releases (`tmp`) for a closer look.
fn compare(version: &str, a: &Path, b: &Path, tmp: tempfile::TempDir) -> anyhow::Result<()> {
    let names = Names::of(version);
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
            "reproducible: {} are byte-identical in {} and {}",
            compared.join(", "),
            a.display(),
            b.display()
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
