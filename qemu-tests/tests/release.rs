//! The release in `dist/` (`cargo xtask release`; `RACKBOOT_DIST` points elsewhere) as a
//! sysadmin receives it: the static binary alone in an empty root, the .deb in a clean Debian 12
//! root, the .rpm's metadata and rpmlint, the OCI image, the signatures, and `rackboot serve`
//! with the unit's user and capabilities booting a QEMU node.
//!
//! `cargo xtask test` builds the release before the tests run; without it these tests skip
//! loudly (and fail under `CI=true`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use qemu_tests::{Firmware, Netns, Qemu, Rackboot, field, preflight, root};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The release directory, or `None` (skip; a failure under CI) when it was not built.
fn dist() -> Option<PathBuf> {
    let d = std::env::var_os("RACKBOOT_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("dist"));
    if d.join("SHA256SUMS").exists() {
        return Some(d);
    }
    let msg = format!("no release in {} (run `cargo xtask release`)", d.display());
    assert!(!ci(), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

/// Whether `prog` is installed; under CI a missing tool fails the test.
fn need(prog: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {prog} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok || !ci(),
        "{prog} is missing (cargo xtask deps installs it)"
    );
    if !ok {
        eprintln!("SKIPPED: {prog} is missing");
    }
    ok
}

fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

fn sh(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// An empty root holding only what is named: the static binary and data files.
fn empty_root(dist: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::copy(dist.join("rackboot"), root.path().join("rackboot")).unwrap();
    root
}

/// The release binary has no interpreter and no shared libraries, and runs alone in an empty
/// root: `--version`, a `serve` that answers HTTP in a netns, and a name looked up through
/// /etc/hosts by static glibc's built-in `files` source (no NSS module on disk).
#[test]
fn static_binary_runs_alone_in_an_empty_root() {
    let Some(dist) = dist() else { return };
    if !preflight(false) || !need("readelf") {
        return;
    }
    let bin = dist.join("rackboot");
    let (_, headers) = sh(Command::new("readelf").args(["-l", "-d"]).arg(&bin));
    assert!(
        !headers.contains("INTERP") && !headers.contains("(NEEDED)"),
        "{headers}"
    );
    let root = empty_root(&dist);
    let (ok, v) = sh(Command::new("chroot")
        .arg(root.path())
        .args(["/rackboot", "--version"]));
    assert!(ok, "{v}");
    assert!(
        v.starts_with(&format!("rackboot {} (commit ", version())),
        "{v}"
    );
    // serve needs its iPXE files and a data dir, nothing else.
    std::fs::create_dir_all(root.path().join("ipxe")).unwrap();
    for f in ["undionly.kpxe", "snponly.efi"] {
        std::fs::copy(
            Path::new("/usr/lib/ipxe").join(f),
            root.path().join("ipxe").join(f),
        )
        .unwrap();
    }
    std::fs::create_dir_all(root.path().join("data")).unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(
        root.path().join("etc/hosts"),
        "192.0.2.1 rackboot.rack.test\n",
    )
    .unwrap();
    let ns = Netns::new("static").unwrap();
    let log = std::fs::File::create(root.path().join("serve.log")).unwrap();
    let mut child = ns
        .cmd("chroot")
        .arg(root.path())
        .args([
            "/rackboot",
            "serve",
            "--interface",
            "br0",
            "--data-dir",
            "/data",
        ])
        .args(["--ipxe-dir", "/ipxe"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let ready = wait_http(&ns, "http://192.0.2.1/boot/v1/service/status");
    let log_text = || std::fs::read_to_string(root.path().join("serve.log")).unwrap_or_default();
    assert!(ready.contains("running"), "{ready}\n{}", log_text());
    // The CLI reaches the server by name: /etc/hosts, read by glibc's built-in files source.
    let (ok, token) = sh(ns
        .cmd("chroot")
        .arg(root.path())
        .args([
            "/rackboot",
            "token",
            "create",
            "--scope",
            "status:read",
            "--ttl",
            "5m",
        ])
        .args(["--data-dir", "/data"]));
    assert!(ok, "{token}");
    let (ok, status) = sh(ns
        .cmd("chroot")
        .arg(root.path())
        .args(["/rackboot", "status", "-o", "json"])
        .env("RACKBOOT_URL", "http://rackboot.rack.test")
        .env("RACKBOOT_TOKEN", token.trim()));
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "{status}\n{}", log_text());
    assert!(status.contains("\"build\""), "{status}");
}

/// Polls `url` from inside `ns` until it answers 200 (the server's readiness), or 60 s pass.
fn wait_http(ns: &Netns, url: &str) -> String {
    for _ in 0..300 {
        let (ok, body) = sh(ns.cmd("curl").args(["-sf", "-m", "2", url]));
        if ok {
            return body;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    String::new()
}

/// The documented verify command accepts the release and refuses a tampered SHA256SUMS; the
/// provenance names every artifact with its digest and verifies on its own.
#[test]
fn signatures_and_provenance_verify_and_tampering_fails() {
    let Some(dist) = dist() else { return };
    if !need("ssh-keygen") || !need("sha256sum") {
        return;
    }
    let verify = |dir: &Path, file: &str| {
        sh(Command::new("sh").current_dir(dir).args([
            "-c",
            &format!(
                "ssh-keygen -Y verify -f allowed_signers -I release@rackboot -n rackboot-release \
                 -s {file}.sig < {file}"
            ),
        ]))
    };
    let (ok, out) = verify(&dist, "SHA256SUMS");
    assert!(ok, "{out}");
    let (ok, out) = sh(Command::new("sha256sum")
        .current_dir(&dist)
        .args(["--check", "SHA256SUMS"]));
    assert!(ok, "{out}");
    let v = version();
    let prov_name = format!("rackboot-{v}.provenance.json");
    let (ok, out) = verify(&dist, &prov_name);
    assert!(ok, "{out}");
    let prov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dist.join(&prov_name)).unwrap()).unwrap();
    assert_eq!(prov["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(prov["predicateType"], "https://slsa.dev/provenance/v1");
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    for name in [
        "rackboot".to_owned(),
        format!("rackboot_{v}_amd64.deb"),
        format!("rackboot-{v}-1.x86_64.rpm"),
        format!("rackboot-{v}-oci.tar"),
    ] {
        let subject = prov["subject"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} not in the provenance"));
        let line = format!("{}  {name}", subject["digest"]["sha256"].as_str().unwrap());
        assert!(sums.lines().any(|l| l == line), "{line} not in SHA256SUMS");
    }
    let deps = prov["predicate"]["buildDefinition"]["resolvedDependencies"].to_string();
    assert!(
        deps.contains("gitCommit") && deps.contains("Cargo.lock"),
        "{deps}"
    );
    // A tampered SHA256SUMS (one digest changed) fails the signature check.
    let tmp = tempfile::tempdir().unwrap();
    for f in ["SHA256SUMS", "SHA256SUMS.sig", "allowed_signers"] {
        std::fs::copy(dist.join(f), tmp.path().join(f)).unwrap();
    }
    let mut tampered = sums.clone().into_bytes();
    tampered[0] = if tampered[0] == b'0' { b'1' } else { b'0' };
    std::fs::write(tmp.path().join("SHA256SUMS"), tampered).unwrap();
    let (ok, out) = verify(tmp.path(), "SHA256SUMS");
    assert!(!ok, "a tampered SHA256SUMS verified: {out}");
}

/// Both SBOMs are CycloneDX 1.5 JSON naming what is really inside: the binary's the crates
/// linked in (with Cargo.lock hashes), the image's also Debian's iPXE and every file.
#[test]
fn sboms_name_the_crates_and_the_image_contents() {
    let Some(dist) = dist() else { return };
    let v = version();
    let read = |n: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dist.join(n)).unwrap()).unwrap()
    };
    let bin = read(&format!("rackboot-{v}.cdx.json"));
    assert_eq!(bin["bomFormat"], "CycloneDX");
    assert_eq!(bin["specVersion"], "1.5");
    let comps = bin["components"].as_array().unwrap();
    let has = |comps: &[serde_json::Value], name: &str| comps.iter().any(|c| c["name"] == name);
    for c in [
        "tokio",
        "rustls",
        "aws-lc-sys",
        "rusqlite",
        "libsqlite3-sys",
        "pxe-core",
        "redfish",
    ] {
        assert!(has(comps, c), "{c} missing from the binary's SBOM");
    }
    // Build-only crates ship nothing and are not listed.
    assert!(
        !has(comps, "cc") && !has(comps, "bindgen"),
        "build dependencies listed"
    );
    let tokio = comps.iter().find(|c| c["name"] == "tokio").unwrap();
    assert_eq!(tokio["hashes"][0]["alg"], "SHA-256", "{tokio}");
    assert!(
        !bin.to_string().contains(root().to_str().unwrap()),
        "a build path in the SBOM"
    );
    let binary_sha = std::fs::read_to_string(dist.join("SHA256SUMS"))
        .unwrap()
        .lines()
        .find(|l| l.ends_with("  rackboot"))
        .unwrap()[..64]
        .to_owned();
    assert_eq!(
        bin["metadata"]["component"]["hashes"][0]["content"],
        binary_sha.as_str()
    );
    let img = read(&format!("rackboot-{v}-oci.cdx.json"));
    assert_eq!(img["metadata"]["component"]["type"], "container");
    let icomps = img["components"].as_array().unwrap();
    assert!(has(icomps, "ipxe") && has(icomps, "rackboot") && has(icomps, "/usr/bin/rackboot"));
}

/// The .deb installs into a clean Debian 12 root (mmdebstrap, cached under
/// /var/cache/rackboot): the user exists, the config is a conffile, `systemd-analyze verify`
/// accepts the unit, man pages and completions are in place, `rackboot --version` runs.
#[test]
fn deb_installs_into_a_clean_debian_12_root() {
    let Some(dist) = dist() else { return };
    if !preflight(false) || !need("mmdebstrap") {
        return;
    }
    let tarball = debian_root_tarball();
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    let (ok, out) = sh(Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(r));
    assert!(ok, "{out}");
    let deb = format!("rackboot_{}_amd64.deb", version());
    std::fs::copy(dist.join(&deb), r.join("tmp").join(&deb)).unwrap();
    let chroot = |args: &[&str]| sh(Command::new("chroot").arg(r).args(args));
    let (ok, out) = chroot(&["dpkg", "-i", &format!("/tmp/{deb}")]);
    assert!(ok, "dpkg -i: {out}");
    let (ok, out) = chroot(&["/usr/bin/rackboot", "--version"]);
    assert!(ok && out.starts_with("rackboot "), "{out}");
    let (ok, out) = chroot(&["getent", "passwd", "rackboot"]);
    assert!(
        ok && out.contains("/var/lib/rackboot") && out.contains("nologin"),
        "{out}"
    );
    let (ok, out) = chroot(&["stat", "-c", "%U:%G %a", "/var/lib/rackboot"]);
    assert!(ok && out.trim() == "rackboot:rackboot 750", "{out}");
    let (ok, out) = chroot(&["dpkg-query", "-W", "-f=${Conffiles}", "rackboot"]);
    assert!(ok && out.contains("/etc/rackboot/config.toml"), "{out}");
    for f in [
        "/usr/share/man/man1/rackboot.1.gz",
        "/usr/share/man/man1/rackboot-serve.1.gz",
        "/usr/share/bash-completion/completions/rackboot",
        "/usr/share/zsh/vendor-completions/_rackboot",
    ] {
        assert!(
            r.join(f.trim_start_matches('/')).exists(),
            "{f} not installed"
        );
    }
    let (ok, out) = chroot(&[
        "systemd-analyze",
        "verify",
        "/usr/lib/systemd/system/rackboot.service",
    ]);
    assert!(ok, "systemd-analyze verify: {out}");
    // An edited config survives an upgrade (reinstall) of the package.
    std::fs::write(r.join("etc/rackboot/config.toml"), "interface = \"eth7\"\n").unwrap();
    let (ok, out) = chroot(&["dpkg", "-i", "--force-confold", &format!("/tmp/{deb}")]);
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read_to_string(r.join("etc/rackboot/config.toml")).unwrap(),
        "interface = \"eth7\"\n"
    );
}

/// A minimal Debian 12 root with systemd (for `systemd-analyze`), built once by mmdebstrap
/// from apt's own mirror and cached by its package list and the day.
fn debian_root_tarball() -> PathBuf {
    let packages = "systemd,passwd,man-db";
    let day = sh(Command::new("date").args(["-u", "+%Y%m%d"])).1;
    let cache = Path::new("/var/cache/rackboot");
    std::fs::create_dir_all(cache).unwrap();
    let tarball = cache.join(format!(
        "debian12-minbase-{}-{}.tar",
        packages.replace(',', "+"),
        day.trim()
    ));
    if tarball.exists() {
        return tarball;
    }
    let partial = tarball.with_extension("partial.tar");
    let _ = std::fs::remove_file(&partial);
    let (ok, out) = sh(Command::new("mmdebstrap")
        .args([
            "--variant=minbase",
            "--mode=root",
            "--format=tar",
            "--quiet",
        ])
        .arg(format!("--include={packages}"))
        .args(["bookworm"])
        .arg(&partial));
    assert!(ok, "mmdebstrap: {out}");
    std::fs::rename(&partial, &tarball).unwrap();
    tarball
}

/// The .rpm's metadata, file list, scripts and config files, and rpmlint without errors.
#[test]
fn rpm_metadata_files_and_rpmlint() {
    let Some(dist) = dist() else { return };
    if !need("rpm") || !need("rpmlint") {
        return;
    }
    let v = version();
    let rpm = dist.join(format!("rackboot-{v}-1.x86_64.rpm"));
    let q = |args: &[&str]| {
        let (ok, out) = sh(Command::new("rpm").args(args).arg(&rpm));
        assert!(ok, "rpm {args:?}: {out}");
        out
    };
    let info = q(&["-qip"]);
    for want in [
        "Name        : rackboot".to_owned(),
        format!("Version     : {v}"),
        "Release     : 1".to_owned(),
        "Architecture: x86_64".to_owned(),
        "License     : MIT OR Apache-2.0".to_owned(),
    ] {
        assert!(info.contains(&want), "{want} not in:\n{info}");
    }
    let files = q(&["-qlp"]);
    for f in [
        "/usr/bin/rackboot",
        "/usr/lib/systemd/system/rackboot.service",
        "/etc/rackboot/config.toml",
        "/var/lib/rackboot",
        "/usr/share/man/man1/rackboot.1.gz",
    ] {
        assert!(files.lines().any(|l| l == f), "{f} not in:\n{files}");
    }
    assert!(
        q(&["-qcp"])
            .lines()
            .any(|l| l == "/etc/rackboot/config.toml")
    );
    assert!(q(&["-qp", "--scripts"]).contains("useradd --system"));
    // The packaged binary is the released binary, byte for byte.
    let tmp = tempfile::tempdir().unwrap();
    let (ok, out) = sh(Command::new("sh").current_dir(tmp.path()).args([
        "-c",
        &format!(
            "rpm2cpio {} | cpio -idm --quiet ./usr/bin/rackboot",
            rpm.display()
        ),
    ]));
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read(tmp.path().join("usr/bin/rackboot")).unwrap(),
        std::fs::read(dist.join("rackboot")).unwrap()
    );
    // The filters name what is rackboot's design (a static binary, a 0750 data dir, release
    // signatures instead of rpm's own); every other error fails.
    let (_, lint) = sh(Command::new("rpmlint")
        .arg("-r")
        .arg(root().join("deploy/rpm/rackboot.rpmlintrc"))
        .arg(&rpm));
    let summary = lint
        .lines()
        .rev()
        .find(|l| l.contains("errors"))
        .unwrap_or("");
    assert!(
        summary.contains(" 0 errors"),
        "rpmlint found errors:\n{lint}"
    );
}

/// The OCI archive is a valid OCI layout (and Docker `manifest.json`): digests match the blobs,
/// the config runs `/usr/bin/rackboot`, the layers carry the released binary byte for byte and
/// Debian's iPXE. Then Podman loads it and runs it with `--network host` inside a netns, where
/// it serves `/boot/v1/service/status`.
#[test]
fn oci_image_loads_and_serves_under_podman_in_a_netns() {
    let Some(dist) = dist() else { return };
    if !preflight(false) || !need("podman") {
        return;
    }
    let v = version();
    let archive = dist.join(format!("rackboot-{v}-oci.tar"));
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    let (ok, out) = sh(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&x));
    assert!(ok, "{out}");
    let json = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let blob = |digest: &str| {
        x.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let sha = |p: &Path| sh(Command::new("sha256sum").arg(p)).1[..64].to_owned();
    let index = json(&x.join("index.json"));
    let mdigest = index["manifests"][0]["digest"].as_str().unwrap();
    assert_eq!(format!("sha256:{}", sha(&blob(mdigest))), mdigest);
    let manifest = json(&blob(mdigest));
    let cdigest = manifest["config"]["digest"].as_str().unwrap();
    assert_eq!(format!("sha256:{}", sha(&blob(cdigest))), cdigest);
    let config = json(&blob(cdigest));
    assert_eq!(config["config"]["Entrypoint"][0], "/usr/bin/rackboot");
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.version"],
        v.as_str()
    );
    let docker = json(&x.join("manifest.json"));
    assert!(
        docker[0]["RepoTags"]
            .to_string()
            .contains(&format!("localhost/rackboot:{v}"))
    );
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        assert_eq!(format!("sha256:{}", sha(&blob(d))), d);
        let (_, list) = sh(Command::new("tar").arg("-tvf").arg(blob(d)));
        assert!(
            list.lines().all(|l| l.contains(" 0/0 ")),
            "owner not 0/0:\n{list}"
        );
        let (ok, out) = sh(Command::new("tar")
            .arg("-xf")
            .arg(blob(d))
            .arg("-C")
            .arg(&rootfs));
        assert!(ok, "{out}");
    }
    assert_eq!(
        std::fs::read(rootfs.join("usr/bin/rackboot")).unwrap(),
        std::fs::read(dist.join("rackboot")).unwrap()
    );
    assert!(rootfs.join("usr/lib/ipxe/undionly.kpxe").exists());

    // Podman, rootful, with its own storage so nothing is left in the host's. Three things of
    // this machine (a container itself) are worked around, none of them about the image:
    // `ip netns exec` remounts /sys, hiding /sys/fs/cgroup from crun, so the namespace is
    // entered with `nsenter --net` only; the cgroups are mounted in hybrid mode (v1 controllers
    // plus /sys/fs/cgroup/unified), which crun refuses, so podman runs in a private mount
    // namespace without the unified hierarchy; and root lacks CAP_SYS_RESOURCE, so the
    // container's limits are set below the current hard limits instead of podman's defaults.
    let ns = Netns::new("oci").unwrap();
    let store = dir.path().join("podman");
    let script = format!(
        "umount /sys/fs/cgroup/unified 2>/dev/null; exec nsenter --net=/run/netns/{} podman \
         --root {root} --runroot {run} --storage-driver vfs --cgroup-manager cgroupfs \"$@\"",
        ns.name,
        root = store.join("root").display(),
        run = store.join("run").display(),
    );
    let podman = |args: &[&str]| {
        sh(Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
            .args(args))
    };
    let (ok, out) = podman(&["load", "-i", archive.to_str().unwrap()]);
    assert!(ok, "podman load: {out}");
    let name = format!("rbt-oci-{}", std::process::id());
    // Below this process's hard limits (crun can neither raise them nor set them equal here).
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let below_hard = |row: &str| {
        let hard: u64 = limits
            .lines()
            .find(|l| l.starts_with(row))
            .and_then(|l| l.get(26..))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|h| h.parse().ok())
            .unwrap_or(2048);
        (hard / 2).min(4096)
    };
    let nofile = format!("nofile={0}:{0}", below_hard("Max open files"));
    let nproc = format!("nproc={0}:{0}", below_hard("Max processes"));
    let (ok, out) = podman(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        "--cgroups=disabled",
        "--ulimit",
        &nofile,
        "--ulimit",
        &nproc,
        "-e",
        "RACKBOOT_INTERFACE=br0",
        &format!("localhost/rackboot:{v}"),
    ]);
    assert!(ok, "podman run: {out}");
    let body = wait_http(&ns, "http://192.0.2.1/boot/v1/service/status");
    let (_, logs) = podman(&["logs", &name]);
    let _ = podman(&["rm", "-f", "-t", "0", &name]);
    assert!(
        body.contains("running"),
        "no answer from the container: {body}\n{logs}"
    );
}

/// `rackboot serve` as the unit runs it — an unprivileged user, only CAP_NET_BIND_SERVICE and
/// CAP_NET_RAW, no new privileges (`setpriv`: this machine's PID 1 is not systemd, so
/// `systemd-run` cannot start the unit itself) — serves DHCP, TFTP and HTTP to a QEMU node
/// whose OVMF firmware PXE-boots natively (DHCP, TFTP of snponly.efi, then iPXE over HTTP).
#[test]
fn sandboxed_serve_boots_a_qemu_node_over_dhcp_tftp_and_http() {
    let Some(dist) = dist() else { return };
    if !preflight(true) || !need("setpriv") {
        return;
    }
    // A uid and gid no account uses, standing in for the package's `rackboot` system user.
    let (uid, gid) = ("64123", "64123");
    let bin = dist.join("rackboot");
    let data = tempfile::tempdir().unwrap();
    let log = tempfile::NamedTempFile::new()
        .unwrap()
        .into_temp_path()
        .to_path_buf();
    let (ok, out) = sh(Command::new("chown")
        .args([&format!("{uid}:{gid}")])
        .arg(data.path()));
    assert!(ok, "{out}");
    std::fs::set_permissions(
        data.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    let caps = "-all,+net_bind_service,+net_raw";
    let reuid = format!("--reuid={uid}");
    let regid = format!("--regid={gid}");
    let inh = format!("--inh-caps={caps}");
    let amb = format!("--ambient-caps={caps}");
    let bound = format!("--bounding-set={caps}");
    let wrapper = [
        "setpriv",
        &reuid,
        &regid,
        "--clear-groups",
        &inh,
        &amb,
        &bound,
        "--no-new-privs",
        "--",
    ];
    // The images go in as that user too, as `rackboot image import` would on the appliance.
    for (name, file) in [
        ("vmlinuz", "build/node/vmlinuz"),
        ("initrd.img", "build/node/initrd.img"),
    ] {
        let (ok, out) = sh(Command::new("setpriv")
            .args([&reuid, &regid, "--clear-groups", "--"])
            .arg(&bin)
            .args(["image", "import", "--data-dir"])
            .arg(data.path())
            .arg(name)
            .arg(root().join(file)));
        assert!(ok, "image import {name}: {out}");
    }
    let mut ns = Netns::new("sandbox").unwrap();
    let rb = Rackboot::start_wrapped(&ns, &wrapper, &bin, data, log).unwrap();
    // The server really runs as that user with only those capabilities.
    let (_, pids) = sh(Command::new("ip").args(["netns", "pids", &ns.name]));
    let status = pids
        .split_whitespace()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .find(|s| s.lines().next().is_some_and(|l| l.ends_with("rackboot")))
        .expect("the rackboot process");
    let line = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap()
            .to_owned()
    };
    assert!(
        line("Uid:").split_whitespace().skip(1).all(|u| u == uid),
        "{status}"
    );
    // CAP_NET_BIND_SERVICE (bit 10) and CAP_NET_RAW (bit 13): 0x2400.
    assert!(line("CapEff:").ends_with("0000000000002400"), "{status}");
    assert!(line("CapBnd:").ends_with("0000000000002400"), "{status}");
    assert!(line("NoNewPrivs:").ends_with('1'), "{status}");
    let (mac, ip, xname) = ("52:54:00:aa:16:01", "192.0.2.61", "x1000c0s16b0n0");
    rb.register_node(xname, 16, mac, ip).unwrap();
    let mut vm = Qemu::start(&mut ns, Firmware::OvmfPxe, mac).unwrap();
    let up = match vm.wait_for("RACKBOOT-NODE-UP", std::time::Duration::from_secs(400)) {
        Ok(l) => l,
        Err(e) => panic!("{e:#}\n---- rackboot log ----\n{}", rb.log_text()),
    };
    assert_eq!(field(&up, "ip"), Some(ip), "{up}");
    assert_eq!(field(&up, "xname"), Some(xname), "{up}");
    let log = rb.log_text();
    assert!(log.contains("TFTP transfer complete"), "no TFTP:\n{log}");
}
