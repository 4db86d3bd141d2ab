//! Builds the version string: the package version, the git commit and whether the tree was
//! dirty. Nothing time-dependent goes in, so two builds of one commit embed the same bytes
//! (reproducible releases, docs/release-policy.md).
//!
//! Without git or a `.git` (a source tarball), `RACKBOOT_GIT_COMMIT` and `RACKBOOT_GIT_DIRTY`
//! (`true`/`false`) are used when set, else the commit is `unknown`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let workspace = manifest.parent().map(Path::to_path_buf).unwrap_or(manifest);
    println!("cargo:rerun-if-env-changed=RACKBOOT_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=RACKBOOT_GIT_DIRTY");

    let (commit, dirty) = match git(&workspace, &["rev-parse", "--verify", "HEAD"]) {
        Some(commit) if std::env::var_os("RACKBOOT_GIT_COMMIT").is_none() => {
            // Only tracked files count: build output and editor files do not make a tree dirty.
            let dirty = git(
                &workspace,
                &["status", "--porcelain", "--untracked-files=no"],
            )
            .is_none_or(|s| !s.is_empty());
            watch_git(&workspace);
            (commit, dirty)
        }
        _ => (
            std::env::var("RACKBOOT_GIT_COMMIT").unwrap_or_else(|_| "unknown".to_owned()),
            std::env::var("RACKBOOT_GIT_DIRTY").is_ok_and(|d| d == "true"),
        ),
    };
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let tree = if dirty { "dirty" } else { "clean" };
    let generated = format!(
        "pub const COMMIT: &str = {commit:?};\n\
         pub const DIRTY: bool = {dirty};\n\
         pub const LONG: &str = {long:?};\n",
        long = format!("{version} (commit {commit}, tree {tree})"),
    );
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("build_info.rs");
    if std::fs::read_to_string(&out).ok().as_deref() != Some(generated.as_str())
        && let Err(err) = std::fs::write(&out, generated)
    {
        panic!("cannot write {}: {err}", out.display());
    }
}

/// Re-runs this script when HEAD moves, the index changes or a source file of a workspace crate
/// the binary is built from changes (a file edited after the last commit makes the tree dirty).
fn watch_git(workspace: &Path) {
    for (args, file) in [
        (&["rev-parse", "--git-path", "HEAD"][..], None),
        (&["rev-parse", "--git-path", "index"][..], None),
        (&["rev-parse", "--symbolic-full-name", "HEAD"][..], Some(())),
    ] {
        let Some(out) = git(workspace, args) else {
            continue;
        };
        let path = if file.is_some() {
            // The branch HEAD points at: its loose ref (packed refs change the index anyway).
            match git(workspace, &["rev-parse", "--git-path", &out]) {
                Some(p) => p,
                None => continue,
            }
        } else {
            out
        };
        let path = workspace.join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    for dir in ["appliance/src", "pxe-core/src", "redfish/src", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
}
