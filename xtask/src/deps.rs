//! Installs what the tests and the demo need. Idempotent, non-interactive, works with CI=true.

use std::process::Command;

use crate::run::{have, output, run};

/// Debian packages the suite uses, and why.
pub const PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "QEMU for the end-to-end boots"),
    ("ipxe-qemu", "iPXE option ROMs for SeaBIOS NICs"),
    ("ipxe", "iPXE binaries rackboot serves (/usr/lib/ipxe)"),
    ("ovmf", "UEFI firmware for QEMU"),
    ("busybox-static", "the test node's userland"),
    ("udhcpc", "DHCP client peer"),
    (
        "kea-admin",
        "perfdhcp for the DHCP benchmark and the flood test",
    ),
    ("kea-dhcp4-server", "peer DHCP server for the benchmark"),
    ("tftp-hpa", "TFTP client peer"),
    ("curl", "HTTP/TFTP client peer"),
    (
        "python3",
        "raw-socket TFTP clients in qemu-tests/tests/tftp.rs (source ports, ERROR 5)",
    ),
    ("tcpdump", "packet captures"),
    (
        "nftables",
        "nft: drops half the TFTP ACKs in qemu-tests/tests/storm.rs",
    ),
    ("iproute2", "network namespaces, TAP, veth"),
    ("cpio", "initramfs packing"),
    ("kmod", "kernel module tools"),
    ("xz-utils", "compressed kernel modules"),
    ("openssl", "TLS peer"),
    (
        "libtss2-dev",
        "tss-esapi (appliance feature `tpm`, the node agent's TPM side): libtss2 and pkg-config files",
    ),
    ("pkg-config", "tss-esapi-sys finds libtss2"),
    (
        "swtpm",
        "software TPM 2.0 for the TPM enrollment tests (QEMU tpm-tis and the host agent)",
    ),
    (
        "swtpm-tools",
        "swtpm_setup and swtpm_localca: EK certificates from a test manufacturer CA",
    ),
    (
        "tpm2-tools",
        "independent TPM client: tpm2_activatecredential and tpm2_quote against rackboot's MakeCredential",
    ),
    ("nginx", "HTTP peer for the benchmark"),
    (
        "tftpd-hpa",
        "in.tftpd: TFTP peer of the storm and TFTP benchmarks (run in a netns, not the service)",
    ),
    (
        "linux-perf",
        "perf: profiles rackboot when a benchmark falls short (cargo xtask bench tftp)",
    ),
    ("wrk", "HTTP load for the benchmark"),
    (
        "dnsmasq-base",
        "DHCP/TFTP peer for the boot-time benchmark and the proxyDHCP test",
    ),
    (
        "python3-prometheus-client",
        "Prometheus text-format parser that checks /metrics",
    ),
    (
        "python3-venv",
        "a virtualenv for the PyPI test peers (sushy-tools)",
    ),
    (
        "libvirt-daemon",
        "libvirtd (qemu driver) holding the defined, never started domains behind \
         sushy-emulator's libvirt driver (firmware versions)",
    ),
    (
        "python3-libvirt",
        "libvirt's Python binding for sushy-emulator's libvirt driver (linked into build/venv)",
    ),
    // The appliance image (`cargo xtask image appliance`, buildroot/README.md) and its tests.
    (
        "build-essential",
        "Buildroot: make and Debian's gcc 12 (the offline external toolchain)",
    ),
    ("rsync", "Buildroot"),
    ("bc", "Buildroot"),
    ("file", "Buildroot"),
    ("unzip", "Buildroot"),
    ("patch", "Buildroot"),
    ("wget", "Buildroot's dependency check"),
    (
        "autoconf",
        "bootstrapping Debian's patchelf source for host-patchelf",
    ),
    (
        "automake",
        "bootstrapping Debian's patchelf source for host-patchelf",
    ),
    (
        "squashfs-tools",
        "the appliance's read-only root (mksquashfs)",
    ),
    (
        "cryptsetup-bin",
        "dm-verity hash trees (veritysetup), also in the appliance's initramfs",
    ),
    (
        "libcap2-bin",
        "setcap: rackboot's file capability in the appliance root",
    ),
    (
        "systemd-boot-efi",
        "the EFI stub the appliance's UKI is built on",
    ),
    ("sbsigntool", "signing the appliance's UKI for Secure Boot"),
    ("gdisk", "the appliance's GPT disk image (sgdisk)"),
    ("dosfstools", "the appliance's EFI system partition"),
    ("mtools", "writing files into the appliance's ESP"),
    (
        "e2fsprogs",
        "mke2fs/resize2fs copied into the offline appliance image",
    ),
    ("nmap", "port scan of the appliance from the rack network"),
    // Releases (`cargo xtask release`, qemu-tests/tests/release.rs).
    (
        "rpm",
        "rpmbuild for the release .rpm; rpm -qip/-qlp and rpm2cpio in its tests",
    ),
    ("rpmlint", "lints the release .rpm"),
    (
        "binutils",
        "readelf: the release binary has no interpreter and no shared libraries",
    ),
    (
        "mmdebstrap",
        "a clean Debian 12 root (from apt's mirror, cached) the release .deb installs into",
    ),
    (
        "podman",
        "loads and runs the release OCI image with --network host in a netns",
    ),
    (
        "diffoscope-minimal",
        "explains a difference found by cargo xtask release --check-reproducible",
    ),
    (
        "openssh-client",
        "ssh-keygen -Y sign/verify: release signatures; ssh for ansible in qemu-tests/tests/ansible.rs",
    ),
    (
        "dropbear-bin",
        "the SSH server copied into the test node's initrd (qemu-tests/tests/ansible.rs; binaries only, no service)",
    ),
    (
        "util-linux",
        "setpriv: rackboot serve with the unit's user and capabilities",
    ),
    (
        "bind9-dnsutils",
        "dig: DNS queries, AXFR and TCP fallback against rackboot's DNS",
    ),
    (
        "knot-dnsutils",
        "kdig: DNS peer client (TCP, AXFR, malformed-query tests)",
    ),
    (
        "bind9",
        "named as the secondary that transfers rackboot's zone (AXFR, NOTIFY, TSIG)",
    ),
    (
        "dnsperf",
        "DNS load for the benchmark (rackboot vs dnsmasq)",
    ),
];

/// Where Debian's python3-libvirt puts its modules.
const DIST_PACKAGES: &str = "/usr/lib/python3/dist-packages";

/// PyPI test peers, installed into `build/venv`.
pub const PYPI: &[(&str, &str)] = &[
    (
        "sushy-tools",
        "Redfish BMC emulator (sushy-emulator: fake driver for discovery and power, libvirt driver for firmware)",
    ),
    (
        "virt-firmware",
        "virt-fw-vars: enrols the appliance's Secure Boot keys into OVMF variable stores",
    ),
    (
        "jsonschema",
        "validates rackboot's SMD/BSS answers against the contract schemas (appliance/tests/openchami_contract/)",
    ),
    (
        "ansible-core",
        "ansible-inventory runs `rackboot-ansible-inventory` as a dynamic inventory script (qemu-tests/tests/ansible.rs)",
    ),
];

pub fn install() -> anyhow::Result<()> {
    crate::stage("dependencies");
    let missing: Vec<&str> = PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        eprintln!("all Debian packages present");
    } else {
        eprintln!("installing: {}", missing.join(" "));
        run(Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        // Packages such as kea-dhcp4-server and nginx start their daemon on install, which would
        // answer on the host's :67/:80. Debian's policy-rc.d protocol (exit 101 = "do not start")
        // keeps them stopped, so nothing has to be killed afterwards; an existing policy is kept.
        let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
        let ours = !policy.exists();
        if ours {
            std::fs::write(
                policy,
                "#!/bin/sh\n# written by cargo xtask deps during its install\nexit 101\n",
            )?;
            std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        }
        let installed = run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"));
        if ours {
            let _ = std::fs::remove_file(policy);
        }
        installed?;
    }
    let venv = crate::root().join("build/venv");
    let has_jsonschema = Command::new(venv.join("bin/python3"))
        .args(["-c", "import jsonschema"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !venv.join("bin/sushy-emulator").exists()
        || !venv.join("bin/virt-fw-vars").exists()
        || !has_jsonschema
        || !venv.join("bin/ansible-inventory").exists()
    {
        eprintln!("installing PyPI test peers into {}", venv.display());
        run(Command::new("/usr/bin/python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv))?;
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(PYPI.iter().map(|(p, _)| *p)))?;
    }
    link_libvirt_binding(&venv)?;
    if !have("cargo-fuzz") {
        eprintln!("installing cargo-fuzz");
        run(Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]))?;
    }
    let _ = output(Command::new("rustup").args(["toolchain", "list"]));
    Ok(())
}

/// Makes Debian's libvirt binding importable in the venv: symlinks of its modules only (no
/// `--system-site-packages`, so the venv sees nothing else of the system's). Skipped when the
/// venv already imports `libvirt`.
fn link_libvirt_binding(venv: &std::path::Path) -> anyhow::Result<()> {
    let py = venv.join("bin/python3");
    let imports = |py: &std::path::Path| {
        Command::new(py)
            .args(["-c", "import libvirt"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if imports(&py) {
        return Ok(());
    }
    let site = output(Command::new(&py).args([
        "-c",
        "import sysconfig; print(sysconfig.get_path('purelib'))",
    ]))?;
    let site = std::path::PathBuf::from(site.trim());
    eprintln!("linking python3-libvirt into {}", site.display());
    for entry in std::fs::read_dir(DIST_PACKAGES)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with("libvirt") && (name.ends_with(".py") || name.ends_with(".so")) {
            let link = site.join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&path, &link)?;
        }
    }
    if !imports(&py) {
        anyhow::bail!(
            "build/venv cannot import libvirt after linking python3-libvirt from {DIST_PACKAGES}"
        );
    }
    Ok(())
}
