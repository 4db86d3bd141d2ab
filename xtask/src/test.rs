//! `cargo xtask test`: everything CI runs, in order, failing fast with the stage named.

use std::process::Command;

use crate::run::{have, run};

pub fn run_all() -> anyhow::Result<()> {
    crate::deps::install()?;
    crate::image::node()?;
    crate::appliance::check_production_recipe()?;
    crate::appliance::appliance()?;
    let root = crate::root();
    // A CI run builds once from a clean clone: incremental state (a third of target/debug) only
    // costs disk there.
    let ci = std::env::var_os("CI").is_some_and(|v| v == "true");
    let cargo = || {
        let mut c = Command::new(env!("CARGO"));
        c.current_dir(&root);
        if ci {
            c.env("CARGO_INCREMENTAL", "0");
        }
        c
    };

    crate::stage("format");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;

    crate::stage("build");
    run(cargo().args(["build", "--workspace", "--all-targets"]))?;

    crate::stage("clippy");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;

    crate::stage("pxe-core without std (no allocator)");
    run(cargo().args(["build", "-p", "pxe-core", "--no-default-features"]))?;
    crate::stage("pxe-core embassy-net drivers (no_std, no allocator; rackboot-tiny runs them)");
    run(cargo().args([
        "clippy",
        "-p",
        "pxe-core",
        "--no-default-features",
        "--features",
        "embassy",
        "--",
        "-D",
        "warnings",
    ]))?;

    // The release (static binary, packages, OCI image, SBOMs, signatures) that
    // qemu-tests/tests/release.rs installs and runs, then the reproducibility proof: one more
    // release from a fresh clone of the same commit at another path, compared byte for byte
    // (diffoscope explains a difference). The second build shares the target dir, so only the
    // workspace crates compile again.
    crate::release::main(&[])?;
    crate::release::main(&[
        "--check-reproducible-against".to_owned(),
        root.join("dist").display().to_string(),
    ])?;

    crate::stage("duplicate dependencies");
    run(cargo().args(["tree", "-d", "-e", "normal", "-p", "appliance"]))?;
    run(cargo().args(["tree", "-d", "-e", "normal", "-p", "rackboot-tiny"]))?;

    crate::stage("tests (unit, property, differential, store, API, QEMU end-to-end)");
    if have("cargo-nextest") {
        // `--run-ignored all`: the power-cut loop too (ignored by plain `cargo test` for its
        // length; .config/nextest.toml starts it first).
        run(cargo().args([
            "nextest",
            "run",
            "--workspace",
            "--no-fail-fast",
            "--run-ignored",
            "all",
            "--test-threads",
            "8",
        ]))?;
    } else {
        run(cargo().args([
            "test",
            "--workspace",
            "--no-fail-fast",
            "--",
            "--include-ignored",
            "--test-threads=8",
        ]))?;
    }

    crate::stage("fuzz smoke (each target briefly)");
    fuzz_smoke(15)?;
    eprintln!("\nall stages passed");
    Ok(())
}

/// `cargo xtask test-long`: the appliance's power-cut loop alone (issue 15: 20 cuts, about 20
/// appliance boots under TCG). `cargo xtask test` runs it too, first, beside the rest.
pub fn run_long() -> anyhow::Result<()> {
    crate::deps::install()?;
    crate::appliance::appliance()?;
    let root = crate::root();
    crate::stage("power cuts of the appliance VM (qemu-tests/tests/power_cut.rs)");
    run(Command::new(env!("CARGO")).current_dir(&root).args([
        "nextest",
        "run",
        "-p",
        "qemu-tests",
        "--test",
        "power_cut",
        "--run-ignored",
        "only",
        "--no-capture",
    ]))?;
    eprintln!("\nall stages passed");
    Ok(())
}

/// Runs every cargo-fuzz target for `secs` seconds.
pub fn fuzz_smoke(secs: u32) -> anyhow::Result<()> {
    let root = crate::root();
    let fuzz = root.join("fuzz");
    let targets: Vec<String> = std::fs::read_dir(fuzz.join("fuzz_targets"))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.path()
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .collect();
    anyhow::ensure!(!targets.is_empty(), "no fuzz targets in fuzz/fuzz_targets");
    for t in targets {
        eprintln!("fuzzing {t} for {secs}s");
        run(Command::new("cargo")
            .current_dir(&root)
            .args([
                "+nightly",
                "fuzz",
                "run",
                // No sanitizer in the smoke: the targets that reach the appliance would build
                // SQLite and aws-lc under ASan, minutes the smoke cannot afford; a panic (what
                // the Rust parsers can do wrong) is caught either way.
                "--sanitizer",
                "none",
                &t,
                "--",
                &format!("-max_total_time={secs}"),
                "-rss_limit_mb=2048",
            ])
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO"))?;
    }
    Ok(())
}
