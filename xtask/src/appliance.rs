//! `cargo xtask image appliance`: the Buildroot appliance image, offline variant, into
//! build/appliance/.
//!
//! Inputs, from the environment (`.ci/run` points them at `../shared/buildroot/`):
//! - `RACKBOOT_BUILDROOT_TARBALL`: the Buildroot release tarball; without it the pinned release
//!   is downloaded from buildroot.org, as on any connected machine;
//! - `RACKBOOT_BUILDROOT_DL`: a download cache to seed Buildroot's `BR2_DL_DIR` with (copied:
//!   the given directory may be read-only);
//! - `RACKBOOT_BUILDROOT_SRC`: Debian source tarballs of host-tar and host-patchelf, used through
//!   `local.mk` overrides because Buildroot's pinned ones cannot be fetched offline;
//! - `RACKBOOT_CACHE`: where the Buildroot tree, its output, the cargo target directory of the
//!   appliance's rackboot build and the Secure Boot test keys live (default
//!   `/var/cache/rackboot`), outside the clone so warm builds only redo what changed.
//!
//! The Buildroot output directory is keyed by a hash of the tarball and of the parts of
//! `buildroot/` that change what Buildroot compiles (defconfigs, package, busybox fragment,
//! toolchain script). Overlay, init and image scripts are reapplied by every `make`, and the
//! rackboot package is rebuilt on every run (cargo recompiles only what changed).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::run::{output, run};

/// The Buildroot release the tree is written for.
pub const BUILDROOT_VERSION: &str = "2026.05.1";
const OFFLINE_DEFCONFIG: &str = "rackboot_x86_64_offline_defconfig";
const PRODUCTION_DEFCONFIG: &str = "rackboot_x86_64_defconfig";

/// Builds the image; returns build/appliance/.
pub fn appliance() -> anyhow::Result<PathBuf> {
    crate::stage("appliance image (Buildroot, offline variant)");
    let started = std::time::Instant::now();
    let root = crate::root();
    let cache = cache_dir();
    fs::create_dir_all(&cache)?;
    let tarball = buildroot_tarball(&cache)?;
    let key = cache_key(&root, &tarball)?;
    let work = cache.join(format!("buildroot-{key}"));
    let tree = work.join(format!("buildroot-{BUILDROOT_VERSION}"));
    let out = work.join("out");
    let dl = work.join("dl");
    fs::create_dir_all(&out)?;
    fs::create_dir_all(&dl)?;
    eprintln!("buildroot cache: {}", work.display());
    // One build per output directory at a time: the cache is shared by every clone on the
    // machine (CI and people), and two makes in one output directory corrupt it.
    let lock = fs::File::create(work.join(".lock"))?;
    lock.lock()
        .with_context(|| format!("locking {}", work.display()))?;

    if !tree.join("Makefile").exists() {
        run(Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(&work))?;
    }
    if let Ok(seed) = std::env::var("RACKBOOT_BUILDROOT_DL") {
        // `cp -rn`: the seed is read-only and Buildroot must be able to add to its copy.
        run(Command::new("cp")
            .arg("-rn")
            .arg(format!("{seed}/."))
            .arg(&dl))?;
        run(Command::new("chmod").arg("-R").arg("u+w").arg(&dl))?;
    }
    write_local_mk(&work, &out)?;
    let toolchain = out.join("debian-toolchain");
    if !toolchain.join("bin/x86_64-linux-gnu-gcc").exists() {
        run(
            Command::new(root.join("buildroot/board/rackboot/offline/debian-toolchain.sh"))
                .arg(&toolchain),
        )?;
    }
    let kernel = debian_kernel(&cache)?;
    // Buildroot builds rackboot from an rsync of the tree without `.git`: the version string
    // (`rackboot --version`, the update bundle's manifest) gets the commit from here.
    let src = crate::release::Source::of(&root)?;

    // BR2_EXTERNAL on every call: the output directory outlives the clone that made it, and
    // Buildroot would otherwise keep using the path saved by the first run.
    let external = format!("BR2_EXTERNAL={}", root.join("buildroot").display());
    let make = |args: &[&str]| -> anyhow::Result<()> {
        let mut c = Command::new("make");
        c.current_dir(&tree)
            .arg(format!("O={}", out.display()))
            .arg(&external)
            .args(args)
            .env("FORCE_UNSAFE_CONFIGURE", "1")
            .env("BR2_DL_DIR", &dl)
            .env("RACKBOOT_KERNEL_ROOT", &kernel)
            .env("RACKBOOT_SB_DIR", cache.join("secureboot-keys"))
            .env(
                "RACKBOOT_HOST_TOOLS",
                "/sbin/mke2fs /sbin/e2fsck /sbin/resize2fs /sbin/sgdisk /usr/bin/resizepart",
            )
            .env("RACKBOOT_CARGO_TARGET_DIR", cache.join("cargo-target"))
            // Also a bundle whose rackboot cannot run, for the update tests' failed trial.
            .env("RACKBOOT_TEST_BUNDLES", "1")
            .env("RACKBOOT_GIT_COMMIT", &src.commit)
            .env("RACKBOOT_GIT_DIRTY", src.dirty.to_string())
            // Set by `cargo xtask`; they would point the inner cargo at this workspace's paths.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_MANIFEST_DIR")
            .env_remove("CARGO_PKG_NAME");
        run(&mut c)
    };
    if !out.join(".config").exists() {
        make(&[OFFLINE_DEFCONFIG])?;
    }
    // rackboot's sources are the working tree: rsync them again and let cargo decide.
    make(&["rackboot-rebuild"])?;
    make(&[])?;

    let images = out.join("images");
    let dest = root.join("build/appliance");
    let _ = fs::remove_dir_all(&dest);
    fs::create_dir_all(dest.join("secureboot"))?;
    for f in [
        "rackboot-appliance.img",
        "rackboot-a.efi",
        "rackboot-b.efi",
        "rackboot-a.unsigned.efi",
        "rackboot-update.rbu",
        "rackboot-update-broken.rbu",
        "update-key.pub",
        "root.img",
        "initramfs.cpio.gz",
        "cmdline",
        "appliance.env",
    ] {
        fs::copy(images.join(f), dest.join(f))
            .with_context(|| format!("no {f} in {}", images.display()))?;
    }
    for f in ["PK.crt", "KEK.crt", "db.crt", "owner.guid"] {
        fs::copy(
            images.join("secureboot").join(f),
            dest.join("secureboot").join(f),
        )?;
    }
    eprintln!(
        "built {} in {}s",
        dest.display(),
        started.elapsed().as_secs()
    );
    eprintln!("{}", fs::read_to_string(dest.join("appliance.env"))?);
    Ok(dest)
}

/// `make show-info` on the production defconfig, in a throwaway output directory, and a check
/// that Kconfig kept every line of it (a renamed or dropped option would otherwise vanish
/// silently). Keeps the connected-machine recipe from rotting; downloads nothing.
pub fn check_production_recipe() -> anyhow::Result<()> {
    crate::stage("appliance: production defconfig (show-info)");
    let root = crate::root();
    let cache = cache_dir();
    let tarball = buildroot_tarball(&cache)?;
    let key = cache_key(&root, &tarball)?;
    let work = cache.join(format!("buildroot-{key}"));
    let tree = work.join(format!("buildroot-{BUILDROOT_VERSION}"));
    if !tree.join("Makefile").exists() {
        fs::create_dir_all(&work)?;
        run(Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(&work))?;
    }
    let out = tempfile::tempdir()?;
    let make = |args: &[&str]| {
        output(
            Command::new("make")
                .current_dir(&tree)
                .arg(format!("O={}", out.path().display()))
                .args(args)
                .env("FORCE_UNSAFE_CONFIGURE", "1"),
        )
    };
    make(&[
        &format!("BR2_EXTERNAL={}", root.join("buildroot").display()),
        PRODUCTION_DEFCONFIG,
    ])?;
    let info = make(&["show-info"])?;
    let parsed: serde_json::Value =
        serde_json::from_str(&info).context("make show-info printed no JSON")?;
    for pkg in ["rackboot", "linux", "cryptsetup", "nftables", "busybox"] {
        if parsed.get(pkg).is_none() {
            bail!("the production defconfig does not build {pkg}");
        }
    }
    let config = fs::read_to_string(out.path().join(".config"))?;
    let defconfig = fs::read_to_string(root.join("buildroot/configs").join(PRODUCTION_DEFCONFIG))?;
    for line in defconfig.lines().filter(|l| l.starts_with("BR2_")) {
        if !config.lines().any(|c| c == line) {
            bail!(
                "Kconfig dropped `{line}` of {PRODUCTION_DEFCONFIG}: renamed or unmet dependency"
            );
        }
    }
    eprintln!(
        "production defconfig resolves ({} packages)",
        parsed.as_object().map_or(0, |o| o.len())
    );
    Ok(())
}

fn cache_dir() -> PathBuf {
    std::env::var_os("RACKBOOT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/rackboot"))
}

/// The Buildroot tarball: `$RACKBOOT_BUILDROOT_TARBALL`, or the release downloaded once into
/// the cache.
fn buildroot_tarball(cache: &Path) -> anyhow::Result<PathBuf> {
    if let Some(t) = std::env::var_os("RACKBOOT_BUILDROOT_TARBALL") {
        let t = PathBuf::from(t);
        if !t.exists() {
            bail!("RACKBOOT_BUILDROOT_TARBALL={} does not exist", t.display());
        }
        return Ok(t);
    }
    let name = format!("buildroot-{BUILDROOT_VERSION}.tar.xz");
    let dest = cache.join(&name);
    if !dest.exists() {
        let partial = cache.join(format!("{name}.part"));
        run(Command::new("curl")
            .args(["-fL", "--retry", "3", "-o"])
            .arg(&partial)
            .arg(format!("https://buildroot.org/downloads/{name}")))
        .context("downloading Buildroot (set RACKBOOT_BUILDROOT_TARBALL on an offline machine)")?;
        fs::rename(&partial, &dest)?;
    }
    Ok(dest)
}

/// A short hash of the tarball and of what in buildroot/ changes Buildroot's own builds.
fn cache_key(root: &Path, tarball: &Path) -> anyhow::Result<String> {
    let br = root.join("buildroot");
    let mut inputs = vec![
        tarball.to_path_buf(),
        br.join("configs").join(OFFLINE_DEFCONFIG),
    ];
    // Not rackboot.mk: rackboot is rebuilt on every run, with the .mk as it is then.
    let mut toolchain: Vec<PathBuf> = fs::read_dir(br.join("board/rackboot/offline"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    toolchain.sort();
    inputs.extend(toolchain);
    inputs.extend(
        [
            "external.desc",
            "Config.in",
            "external.mk",
            "package/rackboot/Config.in",
            "board/rackboot/busybox.fragment",
        ]
        .iter()
        .map(|f| br.join(f)),
    );
    let mut cmd = Command::new("sha256sum");
    cmd.args(&inputs);
    let sums = output(&mut cmd)?;
    // Hash the per-file hashes without their absolute paths, so clones at other paths share.
    let lines: String = sums
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin.write_all(lines.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let hex = String::from_utf8_lossy(&out.stdout);
    Ok(hex.chars().take(16).collect())
}

/// `local.mk` in the output directory: host-tar and host-patchelf from Debian's sources when
/// `RACKBOOT_BUILDROOT_SRC` is set (without it, Buildroot downloads its pinned ones).
fn write_local_mk(work: &Path, out: &Path) -> anyhow::Result<()> {
    let Ok(src) = std::env::var("RACKBOOT_BUILDROOT_SRC") else {
        let _ = fs::remove_file(out.join("local.mk"));
        return Ok(());
    };
    let dir = work.join("src");
    fs::create_dir_all(&dir)?;
    let mut mk = String::new();
    for (var, prefix) in [
        ("HOST_TAR_OVERRIDE_SRCDIR", "tar_"),
        ("HOST_PATCHELF_OVERRIDE_SRCDIR", "patchelf_"),
    ] {
        let tarball = fs::read_dir(&src)
            .with_context(|| format!("RACKBOOT_BUILDROOT_SRC={src}"))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .with_context(|| format!("no {prefix}*.orig.tar.* in {src}"))?;
        let stem = prefix.trim_end_matches('_');
        let unpacked = dir.join(stem);
        if !unpacked.join("configure").exists() {
            let _ = fs::remove_dir_all(&unpacked);
            fs::create_dir_all(&unpacked)?;
            run(Command::new("tar")
                .arg("-xf")
                .arg(&tarball)
                .arg("-C")
                .arg(&unpacked)
                .arg("--strip-components=1"))?;
            if unpacked.join("bootstrap.sh").exists() && !unpacked.join("configure").exists() {
                // patchelf's orig tarball is a git snapshot: autotools make its configure.
                run(Command::new("./bootstrap.sh").current_dir(&unpacked))?;
            }
        }
        mk.push_str(&format!("{var} = {}\n", unpacked.display()));
    }
    fs::write(out.join("local.mk"), mk)?;
    Ok(())
}

/// Debian's kernel (the package behind linux-image-amd64), unpacked once into the cache.
fn debian_kernel(cache: &Path) -> anyhow::Result<PathBuf> {
    let deps = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    let pkg = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .context("apt-cache depends linux-image-amd64 names no kernel package (apt-get update?)")?
        .to_owned();
    let dir = cache.join(format!("kernel-{pkg}"));
    let unpacked = dir.join("root");
    if unpacked.join("boot").exists() {
        return Ok(unpacked);
    }
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    if run(Command::new("apt-get")
        .args(["download", &pkg])
        .current_dir(&dir))
    .is_err()
    {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        run(Command::new("apt-get")
            .args(["download", &pkg])
            .current_dir(&dir))?;
    }
    let deb = fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download produced no .deb")?;
    let tmp = dir.join("root.tmp");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
    fs::rename(&tmp, &unpacked)?;
    let _ = fs::remove_file(&deb);
    Ok(unpacked)
}

/// `cargo xtask demo appliance`: boots the appliance image under OVMF Secure Boot in a network
/// namespace (rack bridge + management bridge), registers a node through the admin API on the
/// management network, PXE-boots it from the appliance and shows its timeline.
pub fn demo() -> anyhow::Result<()> {
    use qemu_tests::{Firmware, Qemu, field};
    use std::time::{Duration, Instant};

    crate::deps::install()?;
    crate::image::node()?;
    let image = appliance()?;
    crate::stage("build the rackboot CLI (host side)");
    run(Command::new(env!("CARGO"))
        .current_dir(crate::root())
        .args(["build", "-p", "appliance", "--bin", "rackboot"]))?;

    crate::stage(
        "power on the appliance (OVMF Secure Boot with this build's keys, 256 MiB, TCG), NIC 1 \
         on the rack bridge (192.0.2.0/24), NIC 2 on the management bridge (198.51.100.0/24)",
    );
    let (mut ns, _dir, console, mut vm) = start_vm("demoappl", &image)?;
    let started = Instant::now();
    let text = loop {
        let text = String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
        if text.contains("rackboot-appliance: ready") {
            break text;
        }
        if vm.try_wait()?.is_some() || started.elapsed() > Duration::from_secs(600) {
            let _ = vm.kill();
            bail!("the appliance did not come up; console:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "ready after {:.0} s (power-on to rackboot answering, TCG)",
        started.elapsed().as_secs_f64()
    );
    for line in text.lines() {
        if line.contains("Secure boot enabled")
            || line.contains("rackboot-appliance: report")
            || line.contains("rackboot ready")
        {
            eprintln!("  console: {}", line.trim());
        }
    }
    let token = text
        .lines()
        .find_map(|l| l.split("rackboot-appliance: admin token").nth(1))
        .and_then(|rest| rest.rsplit(' ').next())
        .map(|t| t.trim().to_owned())
        .context("no admin token on the console")?;
    eprintln!("  console: admin token printed once (used below over the management network)");

    let api = |method: &str, path: &str, body: &[u8]| -> anyhow::Result<String> {
        let tmp = tempfile::NamedTempFile::new()?;
        fs::write(tmp.path(), body)?;
        let mut c = ns.cmd("curl");
        c.args(["-sf", "-m", "120", "-X", method, "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg("--data-binary")
            .arg(format!("@{}", tmp.path().display()));
        if body.first() == Some(&b'{') {
            c.args(["-H", "Content-Type: application/json"]);
        }
        c.arg(format!("http://198.51.100.2{path}"));
        output(&mut c).with_context(|| format!("{method} {path}"))
    };
    crate::stage(
        "register a node and import its kernel/initrd through the admin API (management NIC)",
    );
    let (mac, ip, xname) = ("52:54:00:de:00:01", "192.0.2.50", "x1000c0s0b0n0");
    for (name, file) in [
        ("vmlinuz", "build/node/vmlinuz"),
        ("initrd.img", "build/node/initrd.img"),
    ] {
        api(
            "PUT",
            &format!("/rackboot/v1/images/{name}"),
            &fs::read(crate::root().join(file))?,
        )?;
    }
    api("POST", "/hsm/v2/State/Components", format!(r#"{{"Components":[{{"ID":"{xname}","Type":"Node","State":"Ready","Enabled":true,"NID":1,"Arch":"X86","Role":"Compute"}}]}}"#).as_bytes())?;
    api("POST", "/hsm/v2/Inventory/EthernetInterfaces", format!(r#"{{"MACAddress":"{mac}","IPAddresses":[{{"IPAddress":"{ip}"}}],"ComponentID":"{xname}","Type":"Node"}}"#).as_bytes())?;
    api("PUT", "/boot/v1/bootparameters", format!(r#"{{"macs":["{mac}"],"kernel":"http://192.0.2.1/images/vmlinuz","initrd":"http://192.0.2.1/images/initrd.img","params":"console=ttyS0 quiet"}}"#).as_bytes())?;
    eprintln!(
        "node {xname}: MAC {mac} → {ip}; kernel and initrd on the appliance's data partition"
    );

    crate::stage(
        "power on the node on the rack network (SeaBIOS + iPXE), PXE boot from the appliance",
    );
    let mut node = Qemu::start(&mut ns, Firmware::SeaBiosIpxe, mac)?;
    let line = node.wait_for("RACKBOOT-NODE-UP", Duration::from_secs(600))?;
    node.wait_for("RACKBOOT-PHONED-HOME", Duration::from_secs(120))?;
    eprintln!("  node: {line}");

    crate::stage(
        "what the appliance saw: the node's boot timeline (rackboot timeline, over the management NIC)",
    );
    let bin = crate::root().join("target/debug/rackboot");
    let out = ns
        .cmd(bin.to_str().context("binary path")?)
        .args(["timeline", xname])
        .env("RACKBOOT_URL", "http://198.51.100.2")
        .env("RACKBOOT_TOKEN", &token)
        .output()?;
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!(
        "\nThe node booted from the appliance with its inventory address {} as {}.",
        field(&line, "ip").unwrap_or("?"),
        field(&line, "xname").unwrap_or("?")
    );
    let _ = vm.kill();
    let _ = vm.wait();
    Ok(())
}

/// A namespace with the rack bridge `br0` (host side 192.0.2.254) and the management bridge
/// `brm` (198.51.100.1), and the appliance VM booting a private copy of the image (management
/// address 198.51.100.2) under OVMF Secure Boot with the build's keys enrolled. Returns the
/// namespace, the directory holding the copy, the console file and the QEMU process.
fn start_vm(
    tag: &str,
    image: &Path,
) -> anyhow::Result<(
    qemu_tests::Netns,
    tempfile::TempDir,
    PathBuf,
    std::process::Child,
)> {
    let ns = qemu_tests::Netns::with_address(tag, "192.0.2.254/24")?;
    ns.ip(&["link", "add", "brm", "type", "bridge"])?;
    ns.ip(&["addr", "add", "198.51.100.1/24", "dev", "brm"])?;
    ns.ip(&["link", "set", "brm", "up"])?;
    for (tap, bridge) in [("tapr", "br0"), ("tapm", "brm")] {
        ns.ip(&["tuntap", "add", tap, "mode", "tap"])?;
        ns.ip(&["link", "set", tap, "master", bridge])?;
        ns.ip(&["link", "set", tap, "up"])?;
    }
    let dir = tempfile::tempdir()?;
    let disk = dir.path().join("disk.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(image.join("rackboot-appliance.img"))
        .arg(&disk))?;
    let conf = dir.path().join("rackboot.toml");
    fs::write(
        &conf,
        "[appliance]\nmanagement_interface = \"eth1\"\nmanagement_address = \"198.51.100.2/24\"\n",
    )?;
    run(Command::new("mcopy")
        .args(["-o", "-i"])
        .arg(format!("{}@@{}", disk.display(), 2048 * 512))
        .arg(&conf)
        .arg("::/rackboot.toml"))?;
    let sb = image.join("secureboot");
    let guid = fs::read_to_string(sb.join("owner.guid"))?.trim().to_owned();
    let vars = dir.path().join("vars.fd");
    run(
        Command::new(crate::root().join("build/venv/bin/virt-fw-vars"))
            .args(["-i", "/usr/share/OVMF/OVMF_VARS_4M.fd", "-o"])
            .arg(&vars)
            .arg("--set-pk")
            .arg(&guid)
            .arg(sb.join("PK.crt"))
            .arg("--add-kek")
            .arg(&guid)
            .arg(sb.join("KEK.crt"))
            .arg("--add-db")
            .arg(&guid)
            .arg(sb.join("db.crt"))
            .arg("--secure-boot")
            .stdout(std::process::Stdio::null()),
    )?;
    let console = dir.path().join("console.log");
    let mut qemu = ns.cmd("qemu-system-x86_64");
    qemu.args([
        "-accel",
        "tcg",
        "-m",
        "256",
        "-machine",
        "q35,smm=on",
        "-global",
        "driver=cfi.pflash01,property=secure,value=on",
        "-drive",
        "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-netdev",
        "tap,id=rack,ifname=tapr,script=no,downscript=no",
        "-device",
        "virtio-net-pci,netdev=rack,addr=0x10,romfile=",
        "-netdev",
        "tap,id=mgmt,ifname=tapm,script=no,downscript=no",
        "-device",
        "virtio-net-pci,netdev=mgmt,addr=0x11,romfile=",
    ]);
    qemu.arg("-drive").arg(format!(
        "if=pflash,format=raw,unit=1,file={}",
        vars.display()
    ));
    qemu.arg("-drive")
        .arg(format!("if=virtio,format=raw,file={}", disk.display()));
    qemu.arg("-serial")
        .arg(format!("file:{}", console.display()));
    let vm = qemu
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    Ok((ns, dir, console, vm))
}

/// `cargo xtask bench appliance`: kernel start to ready (rackboot answering
/// `/boot/v1/service/status` on the management NIC, from the host side), and power-on to ready,
/// median of three boots of the built image; rewrites its section of docs/benchmarks.md.
pub fn bench() -> anyhow::Result<()> {
    use std::time::{Duration, Instant};
    const RUNS: usize = 3;
    let image = appliance()?;
    let mut from_kernel = Vec::new();
    let mut from_power = Vec::new();
    for run_no in 1..=RUNS {
        crate::stage(&format!("appliance boot {run_no}/{RUNS}"));
        let (ns, _dir, console, mut vm) = start_vm("benchappl", &image)?;
        let powered = Instant::now();
        let mut kernel = None;
        let ready = loop {
            let text =
                String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
            if kernel.is_none() && text.contains("Linux version") {
                kernel = Some(Instant::now());
            }
            // rackboot logs "rackboot ready" once bound; only then is an HTTP probe worth its
            // cost (each one is a process competing with the TCG guest for the CPU).
            if kernel.is_some() && text.contains("rackboot ready") {
                let ok = Command::new("ip")
                    .args(["netns", "exec", &ns.name, "curl", "-sf", "-m", "1"])
                    .arg("http://198.51.100.2/boot/v1/service/status")
                    .stdout(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    break Instant::now();
                }
            }
            if vm.try_wait()?.is_some() || powered.elapsed() > Duration::from_secs(900) {
                let _ = vm.kill();
                bail!("the appliance did not come up; console:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let _ = vm.kill();
        let _ = vm.wait();
        let k = kernel.map_or(0.0, |k| ready.duration_since(k).as_secs_f64());
        let p = ready.duration_since(powered).as_secs_f64();
        eprintln!("kernel start → ready {k:.1} s; power-on → ready {p:.1} s");
        from_kernel.push(k);
        from_power.push(p);
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let heading = "## Appliance: boot to ready (QEMU TCG, OVMF Secure Boot, 256 MiB)";
    let section = format!(
        "{heading}\n\n\
         From `cargo xtask bench appliance`: the image of `cargo xtask image appliance`, booted \
         as the e2e tests boot it. Ready = rackboot answering `GET /boot/v1/service/status` on \
         the management NIC from the host side (probed every 0.1 s once rackboot logs that it \
         is ready).\n\n\
         | interval | median of {RUNS} (s) | runs (s) |\n|---|---|---|\n\
         | kernel start (\"Linux version\" on the serial console) → ready | {:.1} | {} |\n\
         | power-on (QEMU started; OVMF, Secure Boot checks, UKI load) → ready | {:.1} | {} |\n\n\
         Anchor on this machine: a test node's power-on to userspace over PXE is in the Boot \
         section above (same TCG, same Debian kernel). Kernel time includes waiting for the \
         kernel's entropy pool before rackboot's first key (no RNG device in the VM).\n",
        median(&from_kernel),
        list(&from_kernel),
        median(&from_power),
        list(&from_power)
    );
    eprintln!("\n{section}");
    let path = crate::root().join("docs/benchmarks.md");
    let doc = fs::read_to_string(&path)?;
    fs::write(&path, replace_section(&doc, heading, &section))?;
    eprintln!("updated {}", path.display());
    Ok(())
}

/// `doc` with the `## …` section titled `heading` replaced by `section` (appended if absent).
fn replace_section(doc: &str, heading: &str, section: &str) -> String {
    let lines: Vec<&str> = doc.lines().collect();
    let Some(start) = lines.iter().position(|l| l.trim_end() == heading) else {
        return format!("{}\n\n{}\n", doc.trim_end(), section.trim_end());
    };
    let end = lines
        .iter()
        .enumerate()
        .skip(start + 1)
        .find(|(_, l)| l.starts_with("## "))
        .map_or(lines.len(), |(i, _)| i);
    let before = lines.get(..start).unwrap_or_default().join("\n");
    let after = lines.get(end..).unwrap_or_default().join("\n");
    let mut out = format!("{}\n\n{}\n", before.trim_end(), section.trim_end());
    if !after.trim().is_empty() {
        out.push('\n');
        out.push_str(after.trim_end());
        out.push('\n');
    }
    out
}
