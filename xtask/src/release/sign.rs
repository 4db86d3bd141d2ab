//! `SHA256SUMS`, the in-toto/SLSA provenance statement, and their `ssh-keygen -Y` signatures.
//!
//! The release key is an OpenSSH private key (ed25519) at `RACKBOOT_RELEASE_KEY`; its signer
//! name is `RACKBOOT_RELEASE_SIGNER` (default `release@rackboot`). Without a key, a throwaway
//! one is generated for this release and a warning says so: such a release verifies only
//! against the `allowed_signers` written beside it, which proves nothing about who built it.
//! Verify (README "Releases"):
//!
//! ```sh
//! ssh-keygen -Y verify -f allowed_signers -I release@rackboot -n rackboot-release \
//!     -s SHA256SUMS.sig < SHA256SUMS && sha256sum --check SHA256SUMS
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde_json::json;

use super::{Names, Source, sha256};
use crate::run::{output, run};

/// The `ssh-keygen -Y` namespace of release signatures: a signature made for anything else
/// (e.g. a git commit) does not verify as a release.
pub const NAMESPACE: &str = "rackboot-release";

pub fn rfc3339(epoch: u64) -> anyhow::Result<String> {
    Ok(output(
        Command::new("date")
            .args(["-u", "-d", &format!("@{epoch}"), "+%Y-%m-%dT%H:%M:%SZ"])
            .env("LC_ALL", "C"),
    )?
    .trim()
    .to_owned())
}

/// The release's files that SHA256SUMS and the provenance name (not the sums or signatures).
fn artifacts(out: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(out)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("SHA256SUMS") && !n.ends_with(".sig") && n != "allowed_signers")
        .collect();
    names.sort();
    Ok(names)
}

fn dpkg_version(pkg: &str) -> String {
    output(Command::new("dpkg-query").args(["-W", "-f=${Version}", pkg]))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|_| "not installed".into())
}

/// An in-toto v1 statement with a SLSA v1 provenance predicate: what was built (subjects:
/// every file in `out` so far), from what (the commit, Cargo.lock, the toolchain and the
/// Debian tools that shaped the bytes), by what. Nothing in it depends on the build host or
/// the time, so two builds of one commit write the same statement.
pub fn provenance(src: &Source, out: &Path, to: &Path) -> anyhow::Result<()> {
    crate::stage("provenance");
    let subjects: Vec<_> = artifacts(out)?
        .into_iter()
        .map(|n| Ok(json!({"name": n, "digest": {"sha256": sha256(&out.join(&n))?}})))
        .collect::<anyhow::Result<_>>()?;
    let rustc = output(Command::new("rustc").arg("-V"))?.trim().to_owned();
    let cargo = output(Command::new(env!("CARGO")).arg("-V"))?
        .trim()
        .to_owned();
    let mut deps = vec![
        json!({"uri": "git+rackboot", "digest": {"gitCommit": src.commit},
               "annotations": {"dirty": src.dirty}}),
        json!({"uri": "file:Cargo.lock", "digest": {"sha256": sha256(&src.root.join("Cargo.lock"))?}}),
        json!({"uri": format!("pkg:generic/rustc@{}", rustc.split_whitespace().nth(1).unwrap_or("?")),
               "annotations": {"version": rustc}}),
        json!({"uri": format!("pkg:generic/cargo@{}", cargo.split_whitespace().nth(1).unwrap_or("?")),
               "annotations": {"version": cargo}}),
    ];
    for pkg in [
        "libc6-dev",
        "gcc-12",
        "binutils",
        "dpkg",
        "rpm",
        "tar",
        "gzip",
        "ipxe",
    ] {
        deps.push(json!({"uri": format!("pkg:deb/debian/{pkg}@{}", dpkg_version(pkg))}));
    }
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subjects,
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://rackboot.invalid/release/xtask/v1",
                "externalParameters": {
                    "command": "cargo xtask release",
                    "source": {"commit": src.commit, "dirty": src.dirty},
                    "version": src.version,
                },
                "internalParameters": {
                    "SOURCE_DATE_EPOCH": src.epoch,
                    "target": super::TARGET,
                    "profile": "dist",
                    "rustflags": "-C target-feature=+crt-static --remap-path-prefix=<cargo home>=/cargo --remap-path-prefix=<target dir>=/target",
                },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": "https://rackboot.invalid/builder/cargo-xtask-release"},
                "metadata": {"invocationId": format!("{}@{}", src.commit, src.epoch),
                             "startedOn": rfc3339(src.epoch)?},
            },
        },
    });
    std::fs::write(to, serde_json::to_string_pretty(&statement)? + "\n")?;
    Ok(())
}

/// The release key: `RACKBOOT_RELEASE_KEY`, or a throwaway one (with a warning).
fn key(work: &Path) -> anyhow::Result<PathBuf> {
    if let Some(k) = std::env::var_os("RACKBOOT_RELEASE_KEY") {
        let k = PathBuf::from(k);
        anyhow::ensure!(
            k.exists(),
            "RACKBOOT_RELEASE_KEY={} does not exist",
            k.display()
        );
        return Ok(k);
    }
    eprintln!(
        "warning: RACKBOOT_RELEASE_KEY is not set: signing with a throwaway key; this release \
         verifies only against its own allowed_signers"
    );
    let k = work.join("release-key");
    run(Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "rackboot throwaway release key",
            "-f",
        ])
        .arg(&k))?;
    Ok(k)
}

pub fn signer() -> String {
    std::env::var("RACKBOOT_RELEASE_SIGNER").unwrap_or_else(|_| "release@rackboot".into())
}

fn sign(key: &Path, file: &Path) -> anyhow::Result<()> {
    let sig = PathBuf::from(format!("{}.sig", file.display()));
    let _ = std::fs::remove_file(&sig);
    run(Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", NAMESPACE, "-f"])
        .arg(key)
        .arg(file))
    .with_context(|| format!("cannot sign {}", file.display()))
}

/// Writes SHA256SUMS over every artifact (the provenance included), signs it and the
/// provenance, and writes `allowed_signers` with the key's public half.
pub fn sums_and_signatures(out: &Path, names: &Names) -> anyhow::Result<()> {
    crate::stage("SHA256SUMS and signatures");
    let mut sums = String::new();
    for n in artifacts(out)? {
        sums.push_str(&format!("{}  {n}\n", sha256(&out.join(&n))?));
    }
    let sums_file = out.join("SHA256SUMS");
    std::fs::write(&sums_file, sums)?;
    let work = tempfile::tempdir()?;
    let key = key(work.path())?;
    sign(&key, &sums_file)?;
    sign(&key, &out.join(&names.provenance))?;
    let public = output(Command::new("ssh-keygen").arg("-y").arg("-f").arg(&key))?;
    std::fs::write(
        out.join("allowed_signers"),
        format!(
            "{} namespaces=\"{NAMESPACE}\" {}\n",
            signer(),
            public.trim()
        ),
    )?;
    Ok(())
}
