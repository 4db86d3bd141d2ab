//! The package tree (binary, unit, config, man pages, completions, docs) and the .deb and .rpm
//! built from it with Debian's `dpkg-deb` and `rpmbuild`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::Source;
use crate::run::{output, run};

const SUMMARY: &str = "Per-rack boot appliance: DHCP, TFTP, HTTP iPXE, OpenCHAMI BSS/SMD APIs";
/// Lines of at most 79 columns (rpmlint's limit; a .deb indents each by one space).
const DESCRIPTION: &[&str] = &[
    "rackboot boots the nodes of one rack from its own inventory: DHCP with static",
    "leases from SMD EthernetInterfaces, TFTP for iPXE, HTTP boot scripts, kernels",
    "and initrds, cloud-init, Redfish discovery and power, mTLS node identity, and",
    "federation with an OpenCHAMI upstream, from one static binary.",
];
const PACKAGER: &str = "rackboot maintainers <rackboot@localhost>";

/// The user-creation snippet both packages run before files are unpacked (rpm %pre) or after
/// (deb postinst): a system user and group `rackboot`, home /var/lib/rackboot, no shell.
const ADD_USER: &str = r#"if ! getent group rackboot >/dev/null; then
    groupadd --system rackboot
fi
if ! getent passwd rackboot >/dev/null; then
    useradd --system --gid rackboot --home-dir /var/lib/rackboot --no-create-home \
        --shell /usr/sbin/nologin --comment "rackboot boot appliance" rackboot
fi
"#;

/// Sets mode and mtime (to the release epoch) of one file.
pub fn normalise(path: &Path, mode: u32, epoch: u64) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    run(Command::new("touch")
        .args(["-h", "-d", &format!("@{epoch}")])
        .arg(path))
}

/// Clamps every mtime under `dir` to `epoch` and sets modes to 0755 (dirs, executables) or
/// 0644, whatever the umask of the machine that checked the sources out.
fn normalise_tree(dir: &Path, epoch: u64) -> anyhow::Result<()> {
    run(Command::new("chmod").args(["-R", "u=rwX,go=rX"]).arg(dir))?;
    run(Command::new("find").arg(dir).args([
        "-exec",
        "touch",
        "-h",
        "-d",
        &format!("@{epoch}"),
        "{}",
        "+",
    ]))
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn gzip(path: &Path) -> anyhow::Result<()> {
    // -n: no name or time in the header, so the bytes depend on the content only.
    run(Command::new("gzip").args(["-n", "-9", "-f"]).arg(path))
}

/// The installed file tree, under `<work>/root`.
pub fn stage(src: &Source, bin: &Path, work: &Path) -> anyhow::Result<PathBuf> {
    let root = work.join("root");
    let deploy = src.root.join("deploy");
    std::fs::create_dir_all(root.join("usr/bin"))?;
    std::fs::copy(bin, root.join("usr/bin/rackboot"))?;
    let unit = root.join("usr/lib/systemd/system/rackboot.service");
    write(
        &unit,
        &std::fs::read_to_string(deploy.join("systemd/rackboot.service"))?,
    )?;
    write(
        &root.join("etc/rackboot/config.toml"),
        &std::fs::read_to_string(deploy.join("config.toml"))?,
    )?;
    // Man pages and completions come from the shipped binary itself.
    let man = root.join("usr/share/man/man1");
    run(Command::new(bin).args(["__generate", "man"]).arg(&man))?;
    for page in std::fs::read_dir(&man)? {
        gzip(&page?.path())?;
    }
    let comp = work.join("completions");
    run(Command::new(bin)
        .args(["__generate", "completions"])
        .arg(&comp))?;
    for (file, to) in [
        (
            "rackboot.bash",
            "usr/share/bash-completion/completions/rackboot",
        ),
        ("_rackboot", "usr/share/zsh/vendor-completions/_rackboot"),
        (
            "rackboot.fish",
            "usr/share/fish/vendor_completions.d/rackboot.fish",
        ),
    ] {
        let to = root.join(to);
        std::fs::create_dir_all(to.parent().context("completion dir")?)?;
        std::fs::copy(comp.join(file), to)?;
    }
    let doc = root.join("usr/share/doc/rackboot");
    std::fs::create_dir_all(&doc)?;
    for f in ["README.md", "CHANGELOG.md"] {
        std::fs::copy(src.root.join(f), doc.join(f))?;
    }
    write(&doc.join("copyright"), &copyright())?;
    std::fs::create_dir_all(root.join("var/lib/rackboot"))?;
    normalise_tree(&root, src.epoch)?;
    Ok(root)
}

fn copyright() -> String {
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
     Upstream-Name: rackboot\n\n\
     Files: *\n\
     License: MIT or Apache-2.0\n \
     The rackboot binary links Rust crates under their own licenses; the CycloneDX SBOM\n \
     shipped with each release (rackboot-VERSION.cdx.json) lists every one.\n"
        .to_owned()
}

/// `rackboot_<v>_amd64.deb`: conffile /etc/rackboot/config.toml, the user made in postinst.
pub fn deb(src: &Source, root: &Path, out: &Path) -> anyhow::Result<()> {
    crate::stage("deb");
    let tree = root.with_file_name("deb");
    run(Command::new("cp").args(["-a"]).arg(root).arg(&tree))?;
    let control = tree.join("DEBIAN");
    std::fs::create_dir_all(&control)?;
    let size_kib = du_kib(&tree)?;
    write(
        &control.join("control"),
        &format!(
            "Package: rackboot\nVersion: {v}\nArchitecture: amd64\nMaintainer: {PACKAGER}\n\
             Installed-Size: {size_kib}\nSection: net\nPriority: optional\nRecommends: ipxe\n\
             Description: {SUMMARY}\n {desc}\n",
            v = src.version,
            desc = DESCRIPTION.join("\n "),
        ),
    )?;
    write(&control.join("conffiles"), "/etc/rackboot/config.toml\n")?;
    write(
        &control.join("postinst"),
        &format!(
            "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n{ADD_USER}\
             chown rackboot:rackboot /var/lib/rackboot\n    chmod 0750 /var/lib/rackboot\n\
             if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi\nfi\n"
        ),
    )?;
    write(
        &control.join("postrm"),
        "#!/bin/sh\nset -e\nif [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi\n",
    )?;
    write(
        &control.join("prerm"),
        "#!/bin/sh\nset -e\nif [ \"$1\" = remove ] && [ -d /run/systemd/system ]; then\n    \
         systemctl stop rackboot.service || true\nfi\n",
    )?;
    let sums = output(
        Command::new("sh")
            .current_dir(&tree)
            .args(["-c", "find usr etc -type f | LC_ALL=C sort | xargs md5sum"]),
    )?;
    write(&control.join("md5sums"), &sums)?;
    normalise_tree(&control, src.epoch)?;
    for s in ["postinst", "postrm", "prerm"] {
        normalise(&control.join(s), 0o755, src.epoch)?;
    }
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "-z9", "--build"])
        .arg(&tree)
        .arg(out)
        .env("SOURCE_DATE_EPOCH", src.epoch.to_string()))?;
    Ok(())
}

fn du_kib(dir: &Path) -> anyhow::Result<u64> {
    let out = output(
        Command::new("du")
            .args(["-s", "-k", "--apparent-size"])
            .arg(dir),
    )?;
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("du")
}

/// `rackboot-<v>-1.x86_64.rpm`: %config(noreplace) config, the user made in %pre.
pub fn rpm(src: &Source, root: &Path, work: &Path, out: &Path) -> anyhow::Result<()> {
    crate::stage("rpm");
    let top = work.join("rpmbuild");
    std::fs::create_dir_all(top.join("SPECS"))?;
    let spec = top.join("SPECS/rackboot.spec");
    let files = output(
        Command::new("sh")
            .current_dir(root)
            .args(["-c", "find usr -type f | LC_ALL=C sort"]),
    )?;
    let files: String = files
        .lines()
        .map(|f| {
            if f.starts_with("usr/share/man/") {
                format!("%doc /{f}\n")
            } else {
                format!("/{f}\n")
            }
        })
        .collect();
    write(
        &spec,
        &format!(
            "Name: rackboot\nVersion: {v}\nRelease: 1\nSummary: {SUMMARY}\nLicense: MIT OR Apache-2.0\n\
             URL: https://github.com/rackboot/rackboot\nBuildArch: x86_64\nRequires(pre): shadow-utils\n\
             # Static: no library or loader requirement to generate.\nAutoReq: no\n\
             Recommends: ipxe-bootimgs-x86\n\n\
             Group: System Environment/Daemons\nPackager: {PACKAGER}\n\n\
             %description\n{desc}\n\n\
             %prep\n\n%build\n\n\
             %install\ncp -a {root}/. %{{buildroot}}/\n\n\
             %pre\n{ADD_USER}exit 0\n\n\
             %files\n{files}%dir /etc/rackboot\n%config(noreplace) /etc/rackboot/config.toml\n\
             %dir %attr(0750,rackboot,rackboot) /var/lib/rackboot\n\n\
             %changelog\n* {date} {PACKAGER} - {v}-1\n- See /usr/share/doc/rackboot/CHANGELOG.md\n",
            v = src.version,
            desc = DESCRIPTION.join("\n"),
            root = root.display(),
            date = rpm_date(src.epoch)?,
        ),
    )?;
    let define = |k: &str, v: &str| ["--define".to_owned(), format!("{k} {v}")];
    let mut cmd = Command::new("rpmbuild");
    cmd.arg("-bb")
        .args(define("_topdir", &top.display().to_string()))
        .args(define("_buildhost", "rackboot-release"))
        .args(define("use_source_date_epoch_as_buildtime", "1"))
        .args(define("clamp_mtime_to_source_date_epoch", "1"))
        .args(define("source_date_epoch_from_changelog", "0"))
        .args(define("_build_id_links", "none"))
        .args(define("debug_package", "%{nil}"))
        // No strip, no brp scripts: the packaged binary is byte for byte dist/rackboot.
        .args(define("__os_install_post", "%{nil}"))
        .args(define("_binary_payload", "w12.zstdio"))
        .arg(&spec)
        .env("SOURCE_DATE_EPOCH", src.epoch.to_string());
    run(&mut cmd)?;
    let built = top.join(format!("RPMS/x86_64/rackboot-{}-1.x86_64.rpm", src.version));
    std::fs::copy(&built, out).with_context(|| format!("no {}", built.display()))?;
    Ok(())
}

fn rpm_date(epoch: u64) -> anyhow::Result<String> {
    Ok(output(
        Command::new("date")
            .args(["-u", "-d", &format!("@{epoch}"), "+%a %b %d %Y"])
            .env("LC_ALL", "C"),
    )?
    .trim()
    .to_owned())
}
