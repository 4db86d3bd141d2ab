//! `cargo xtask`: the project's own commands.
//!
//! - `demo`  — install what it needs, boot one QEMU node from rackboot in a netns, show what happened
//! - `test`  — install the test dependencies, build, run the whole suite (QEMU e2e included)
//! - `bench` — benchmarks (criterion + peer comparisons, Redfish discovery, identity
//!   enrollment), written to docs/benchmarks.md; `bench http|boot|redfish|identity|federation|flood|tiny|dns|storm|tftp`
//!   run one part
//! - `release` — dist/: static binary, .deb, .rpm, OCI image, SBOMs, signed sums and provenance
//! - `deps`, `image node`, `image appliance` — the individual steps

mod appliance;
mod bench;
mod demo;
mod deps;
mod image;
mod release;
mod run;
mod test;
mod vectors;

use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("deps") => deps::install(),
        Some("image") => match args.get(1).map(String::as_str) {
            Some("node") | None => image::node().map(|_| ()),
            Some("appliance") => appliance::appliance().map(|_| ()),
            Some("appliance-recipe") => appliance::check_production_recipe(),
            Some(other) => Err(anyhow::anyhow!(
                "unknown image {other:?}; known: node, appliance, appliance-recipe"
            )),
        },
        Some("test") => test::run_all(),
        Some("test-long") => test::run_long(),
        Some("demo") => match args.get(1).map(String::as_str) {
            None => demo::run_demo(),
            Some("appliance") => appliance::demo(),
            Some(other) => Err(anyhow::anyhow!("unknown demo {other:?}; known: appliance")),
        },
        Some("bench") => match args.get(1).map(String::as_str) {
            None => bench::run_bench(),
            Some("http") => bench::run_http_only(),
            Some("dhcp") => bench::run_dhcp_only(),
            Some("boot") => bench::run_boot_only(),
            Some("redfish") => bench::run_redfish_only(),
            Some("identity") => bench::run_identity_only(),
            Some("federation") => bench::run_federation_only(),
            Some("flood") => bench::run_flood_only(),
            Some("tiny") => bench::run_tiny_only(),
            Some("dns") => bench::run_dns_only(),
            Some("storm") => match args.get(2).map(String::as_str) {
                None => bench::run_storm_only(),
                Some("rackboot") => bench::run_storm_rackboot(args.get(3..).unwrap_or_default()),
                Some(other) => Err(anyhow::anyhow!(
                    "unknown storm target {other:?}; known: rackboot (then node counts)"
                )),
            },
            Some("tftp") => bench::run_tftp_only(),
            Some("appliance") => appliance::bench(),
            Some(other) => Err(anyhow::anyhow!(
                "unknown bench {other:?}; known: dhcp, http, boot, redfish, identity, federation, flood, tiny, dns, storm, tftp, appliance"
            )),
        },
        Some("capture-vectors") => vectors::capture(),
        Some("release") => release::main(args.get(1..).unwrap_or_default()),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 demo        install what is needed, then PXE-boot a QEMU node from rackboot and show it\n  \
                 demo appliance  boot the appliance image under Secure Boot and PXE-boot a node from it\n  \
                 test        install test dependencies, build, run the whole suite (QEMU end-to-end included)\n  \
                 test-long   the appliance's power-cut loop: 20 SIGKILLs of the appliance VM under load, each checked (about 20 boots)\n  \
                 bench       run the benchmarks and write docs/benchmarks.md\n  \
                 bench dhcp  only DHCP, sustained DORA/s over 6 s steps (perfdhcp relay mode), rackboot vs Kea; updates its section of docs/benchmarks.md\n  \
                 bench http  only the wrk comparison with nginx (prints, writes nothing)\n  \
                 bench boot  only the QEMU boot-time comparison with dnsmasq + nginx (prints)\n  \
                 bench redfish  only Redfish discovery (silent /20, 64/128/256 fixture BMCs); updates its section of docs/benchmarks.md\n  \
                 bench identity  only node enrollment (4,000 nodes, 200 in flight, vs openssl ECDSA P-256 sign/s); updates its section of docs/benchmarks.md\n  \
                 bench federation  only federation (first sync of 10,000 nodes scoped to 64, steady state, 10,000-event outbox drain); updates its section of docs/benchmarks.md\n  \
                 bench flood  only the DHCP flood (300,000 random MACs) on a federated rack: upstream lookups, RSS, tasks; updates its section of docs/benchmarks.md\n  \
                 bench dns  only DNS (dnsperf, 10,000 names, rackboot vs dnsmasq); updates its section of docs/benchmarks.md\n  \
                 bench storm  only the boot storm (100/500/1,000 nodes in 10 s) against rackboot, dnsmasq + nginx, Kea + tftpd-hpa + nginx; updates its section of docs/benchmarks.md\n  \
                 bench storm rackboot [N…]  storms against rackboot alone (default 1,000 nodes), printed only: a before/after check of a change (RACKBOOT_BENCH_BIN picks the binary)\n  \
                 bench tftp  only TFTP (200 concurrent downloads of ipxe.efi and undionly.kpxe), rackboot vs tftpd-hpa; updates its section of docs/benchmarks.md\n  \
                 bench appliance  only the appliance image's boot to ready (median of 3); updates its section of docs/benchmarks.md\n  \
                 deps        install the Debian packages and tools the tests need\n  \
                 image node  build the QEMU node kernel + initramfs into build/node/\n  \
                 image appliance  build the Buildroot appliance disk image (offline variant) into build/appliance/\n  \
                 image appliance-recipe  check the production defconfig with Buildroot (make show-info; downloads nothing)\n  \
                 release     build dist/: static binary, .deb, .rpm, OCI image, SBOMs, SHA256SUMS, signed provenance\n  \
                 release --check-reproducible  build twice from two clean clones and compare byte for byte\n  \
                 release --check-reproducible-against DIR  one more release from a clean clone elsewhere, compared with DIR (cargo xtask test runs it)\n  \
                 capture-vectors  record real firmware DHCP messages into pxe-core/tests/vectors/"
            );
            std::process::exit(2);
        }
    };
    if let Err(err) = result {
        eprintln!("\nxtask: error: {err:#}");
        std::process::exit(1);
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// Prints a stage banner.
pub fn stage(name: &str) {
    eprintln!("\n==> {name}");
}
