//! `cargo xtask bench`: criterion benchmarks and peer comparisons → docs/benchmarks.md.

pub fn run() -> anyhow::Result<()> {
    anyhow::bail!("benchmarks are being added; run `cargo bench -p pxe-core` meanwhile")
}
