//! `cargo xtask release`: a versioned, signed, reproducible release in `dist/`
//! (docs/release-policy.md, README "Releases").
//!
//! - `rackboot` — the static binary (profile `dist`, `+crt-static` on x86_64-unknown-linux-gnu);
//! - `rackboot_<v>_amd64.deb`, `rackboot-<v>-1.x86_64.rpm` — binary, systemd unit, config file,
//!   man pages, shell completions, a `rackboot` system user (`package.rs`);
//! - `rackboot-<v>-oci.tar` — an OCI image layout that `podman load` / `docker load` read
//!   (`oci.rs`);
//! - `rackboot-<v>.cdx.json`, `rackboot-<v>-oci.cdx.json` — CycloneDX 1.5 SBOMs (`sbom.rs`);
//! - `rackboot-<v>.provenance.json` — an in-toto statement with a SLSA v1 provenance predicate;
//! - `SHA256SUMS`, `SHA256SUMS.sig`, `rackboot-<v>.provenance.json.sig`, `allowed_signers` —
//!   `ssh-keygen -Y` signatures by the release key (`sign.rs`).
//!
//! Flags: `--out DIR` (default `dist/`), `--with-appliance` (copy the cached appliance disk
//! image), `--check-reproducible` (build twice from two clean clones and compare, `repro.rs`),
//! `--check-reproducible-against DIR` (a release of this clean checkout in DIR against one more
//! from a clean clone elsewhere: what `cargo xtask test` runs).
//!
//! Reproducible by construction: `SOURCE_DATE_EPOCH` is the commit's time, the cargo home and
//! the target dir are remapped (`--remap-path-prefix`, `-ffile-prefix-map`; cargo passes
//! workspace sources by relative path), every archive is written with sorted entries, owner
//! 0:0 and mtimes clamped to that epoch, and nothing records the build host or the time.

mod oci;
mod package;
mod repro;
mod sbom;
mod sign;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::run::{output, run};

pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// What a release is built from.
#[derive(Debug, Clone)]
pub struct Source {
    pub root: PathBuf,
    pub version: String,
    pub commit: String,
    pub dirty: bool,
    /// Seconds since the epoch of the commit (`SOURCE_DATE_EPOCH`).
    pub epoch: u64,
}

impl Source {
    pub fn of(root: &Path) -> anyhow::Result<Self> {
        let git = |args: &[&str]| output(Command::new("git").arg("-C").arg(root).args(args));
        let commit = git(&["rev-parse", "HEAD"])?.trim().to_owned();
        let dirty = !git(&["status", "--porcelain", "--untracked-files=no"])?
            .trim()
            .is_empty();
        let epoch = git(&["log", "-1", "--format=%ct", "HEAD"])?
            .trim()
            .parse()
            .context("commit time")?;
        let meta: serde_json::Value = serde_json::from_str(&output(
            Command::new(env!("CARGO")).current_dir(root).args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
            ]),
        )?)?;
        let version = meta["packages"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "appliance"))
            .and_then(|p| p["version"].as_str())
            .context("no appliance package in cargo metadata")?
            .to_owned();
        Ok(Self {
            root: root.to_path_buf(),
            version,
            commit,
            dirty,
            epoch,
        })
    }
}

/// The names of the release's files.
pub struct Names {
    pub deb: String,
    pub rpm: String,
    pub oci: String,
    pub sbom: String,
    pub oci_sbom: String,
    pub provenance: String,
}

impl Names {
    pub fn of(version: &str) -> Self {
        Self {
            deb: format!("rackboot_{version}_amd64.deb"),
            rpm: format!("rackboot-{version}-1.x86_64.rpm"),
            oci: format!("rackboot-{version}-oci.tar"),
            sbom: format!("rackboot-{version}.cdx.json"),
            oci_sbom: format!("rackboot-{version}-oci.cdx.json"),
            provenance: format!("rackboot-{version}.provenance.json"),
        }
    }
}

/// `cargo xtask release [--out DIR] [--with-appliance] [--check-reproducible]`.
pub fn main(args: &[String]) -> anyhow::Result<()> {
    let mut out = crate::root().join("dist");
    let mut appliance = false;
    let mut check = false;
    let mut against = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = PathBuf::from(it.next().context("--out needs a directory")?),
            "--with-appliance" => appliance = true,
            "--check-reproducible" => check = true,
            "--check-reproducible-against" => {
                against = Some(PathBuf::from(
                    it.next()
                        .context("--check-reproducible-against needs a release directory")?,
                ));
            }
            other => bail!(
                "unknown release flag {other:?}; known: --out DIR, --with-appliance, \
                 --check-reproducible, --check-reproducible-against DIR"
            ),
        }
    }
    if check {
        return repro::check();
    }
    if let Some(dist) = against {
        return repro::check_against(&dist);
    }
    let src = Source::of(&crate::root())?;
    if src.dirty {
        eprintln!(
            "warning: the tree has uncommitted changes: the binary says `tree dirty` and the \
             release is not reproducible from its commit"
        );
    }
    release(&src, &target_dir(), &out, appliance)
}

/// The cargo target dir of this checkout (`CARGO_TARGET_DIR` or `<root>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target"))
}

/// Builds everything of one release from `src` into `out` (emptied first).
pub fn release(src: &Source, target: &Path, out: &Path, appliance: bool) -> anyhow::Result<()> {
    crate::stage(&format!(
        "release {} (commit {}{}) into {}",
        src.version,
        src.commit,
        if src.dirty { ", dirty" } else { "" },
        out.display()
    ));
    let bin = build(src, target)?;
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("cannot empty {}", out.display()))?;
    }
    std::fs::create_dir_all(out)?;
    let names = Names::of(&src.version);
    let work = tempfile::tempdir()?;
    let dist_bin = out.join("rackboot");
    std::fs::copy(&bin, &dist_bin)?;
    package::normalise(&dist_bin, 0o755, src.epoch)?;
    let stage = package::stage(src, &dist_bin, work.path())?;
    package::deb(src, &stage, &out.join(&names.deb))?;
    package::rpm(src, &stage, work.path(), &out.join(&names.rpm))?;
    let image = oci::build(src, &dist_bin, work.path(), &out.join(&names.oci))?;
    sbom::binary(src, &dist_bin, &out.join(&names.sbom))?;
    sbom::image(src, &dist_bin, &image, &out.join(&names.oci_sbom))?;
    if appliance {
        copy_appliance(out)?;
    }
    sign::provenance(src, out, &out.join(&names.provenance))?;
    sign::sums_and_signatures(out, &names)?;
    eprintln!("release written to {}", out.display());
    Ok(())
}

/// The environment every release build runs with: the same in every checkout that shares
/// `target`, so a second checkout reuses the compiled registry crates.
pub fn build_env(src: &Source, target: &Path) -> Vec<(String, String)> {
    let cargo_home = std::env::var("CARGO_HOME").unwrap_or_else(|_| {
        format!(
            "{}/.cargo",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into())
        )
    });
    let target = target.display().to_string();
    let rustflags = [
        "-C target-feature=+crt-static".to_owned(),
        format!("--remap-path-prefix={cargo_home}=/cargo"),
        format!("--remap-path-prefix={target}=/target"),
    ]
    .join(" ");
    let cflags =
        format!("-ffile-prefix-map={cargo_home}=/cargo -ffile-prefix-map={target}=/target");
    vec![
        ("SOURCE_DATE_EPOCH".into(), src.epoch.to_string()),
        ("CARGO_TARGET_DIR".into(), target),
        ("RUSTFLAGS".into(), rustflags),
        ("CFLAGS_x86_64_unknown_linux_gnu".into(), cflags.clone()),
        ("CXXFLAGS_x86_64_unknown_linux_gnu".into(), cflags),
        ("TZ".into(), "UTC".into()),
        ("LC_ALL".into(), "C".into()),
    ]
}

/// Builds the static `rackboot` of `src` and returns its path.
fn build(src: &Source, target: &Path) -> anyhow::Result<PathBuf> {
    crate::stage("release build (profile dist, static, remapped paths)");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(&src.root)
        .args(["build", "--locked", "-p", "appliance", "--bin", "rackboot"])
        .args(["--profile", "dist", "--target", TARGET])
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .envs(build_env(src, target));
    run(&mut cmd)?;
    let bin = target.join(TARGET).join("dist/rackboot");
    check_static(&bin)?;
    Ok(bin)
}

/// Fails unless `bin` is a static executable: no program interpreter, no shared libraries.
fn check_static(bin: &Path) -> anyhow::Result<()> {
    let headers = output(Command::new("readelf").args(["-l", "-d"]).arg(bin))?;
    if headers.contains("INTERP") || headers.contains("(NEEDED)") {
        bail!(
            "{} is dynamically linked (readelf shows INTERP/NEEDED)",
            bin.display()
        );
    }
    Ok(())
}

/// Copies the appliance disk image built by `cargo xtask image appliance`, when it exists.
fn copy_appliance(out: &Path) -> anyhow::Result<()> {
    let disk = crate::root().join("build/appliance/rackboot-appliance.img");
    if !disk.exists() {
        bail!(
            "no {}: run `cargo xtask image appliance` first",
            disk.display()
        );
    }
    std::fs::copy(&disk, out.join("rackboot-appliance.img"))?;
    Ok(())
}

/// `sha256sum` of one file, as lowercase hex.
pub fn sha256(path: &Path) -> anyhow::Result<String> {
    let out = output(Command::new("sha256sum").arg(path))?;
    out.split_whitespace()
        .next()
        .map(str::to_owned)
        .context("sha256sum printed nothing")
}
