//! The OCI image: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) plus
//! Docker's `manifest.json`, in one tar, so `podman load` and `docker load` both read it. Built
//! here without a registry or a container runtime, from the release's own binary and Debian's
//! iPXE binaries (the `ipxe` package, needed by `rackboot serve`): two uncompressed layers
//! (iPXE, then rackboot, so an upgrade reuses the first), every tar written by GNU tar with
//! sorted names, owner 0:0 and mtimes at the release epoch.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use serde_json::json;

use super::{Source, sha256};
use crate::run::{output, run};

/// The iPXE files the image carries (from Debian's `ipxe`), and where they come from.
pub const IPXE_FILES: &[&str] = &["undionly.kpxe", "snponly.efi", "ipxe.efi"];
const IPXE_DIR: &str = "/usr/lib/ipxe";

/// What went into the image, for its SBOM.
pub struct Image {
    /// Debian's `ipxe` package version.
    pub ipxe_version: String,
    /// `(path in the image, sha256)` of every file.
    pub files: Vec<(String, String)>,
    /// The manifest's digest (`sha256:…`).
    pub manifest_digest: String,
}

/// Writes a tar of `dir`'s entries, normalised.
fn tar(dir: &Path, out: &Path, epoch: u64) -> anyhow::Result<()> {
    let mut entries: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--format=gnu",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
        ])
        .arg(format!("--mtime=@{epoch}"))
        .args(["-cf"])
        .arg(out)
        .arg("-C")
        .arg(dir)
        .args(&entries)
        .env("LC_ALL", "C"))
}

fn put_file(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to.parent().context("no parent")?)?;
    std::fs::copy(from, to).with_context(|| format!("cannot copy {}", from.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Moves `file` into `blobs/sha256/` of `layout`; returns (digest hex, size).
fn blob(layout: &Path, file: &Path) -> anyhow::Result<(String, u64)> {
    let hex = sha256(file)?;
    let size = std::fs::metadata(file)?.len();
    let to = layout.join("blobs/sha256").join(&hex);
    std::fs::create_dir_all(to.parent().context("blobs")?)?;
    std::fs::rename(file, &to)?;
    Ok((hex, size))
}

fn json_blob(layout: &Path, work: &Path, v: &serde_json::Value) -> anyhow::Result<(String, u64)> {
    let f = work.join("blob.json");
    std::fs::write(&f, serde_json::to_vec(v)?)?;
    blob(layout, &f)
}

pub fn build(src: &Source, bin: &Path, work: &Path, out: &Path) -> anyhow::Result<Image> {
    crate::stage("OCI image");
    let work = work.join("oci");
    let layout = work.join("layout");
    std::fs::create_dir_all(&layout)?;
    let created = super::sign::rfc3339(src.epoch)?;
    let ipxe_version = output(Command::new("dpkg-query").args(["-W", "-f=${Version}", "ipxe"]))
        .context("Debian's ipxe package (the image's iPXE binaries) is not installed")?;
    let mut files = Vec::new();

    // Layer 1: iPXE. Layer 2: rackboot, its config and its data dir.
    let l1 = work.join("l1");
    for f in IPXE_FILES {
        let to = l1.join("usr/lib/ipxe").join(f);
        put_file(&Path::new(IPXE_DIR).join(f), &to, 0o644)?;
        files.push((format!("/usr/lib/ipxe/{f}"), sha256(&to)?));
    }
    put_file(
        Path::new("/usr/share/doc/ipxe/copyright"),
        &l1.join("usr/share/doc/ipxe/copyright"),
        0o644,
    )?;
    let l2 = work.join("l2");
    put_file(bin, &l2.join("usr/bin/rackboot"), 0o755)?;
    files.push(("/usr/bin/rackboot".into(), sha256(bin)?));
    put_file(
        &src.root.join("deploy/config.toml"),
        &l2.join("etc/rackboot/config.toml"),
        0o644,
    )?;
    std::fs::create_dir_all(l2.join("var/lib/rackboot"))?;
    std::fs::create_dir_all(l2.join("tmp"))?;
    run(Command::new("chmod")
        .args(["-R", "u=rwX,go=rX"])
        .arg(&l1)
        .arg(&l2))?;
    run(Command::new("chmod").arg("1777").arg(l2.join("tmp")))?;

    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, dir) in [&l1, &l2].into_iter().enumerate() {
        let t = work.join(format!("layer{i}.tar"));
        tar(dir, &t, src.epoch)?;
        let (hex, size) = blob(&layout, &t)?;
        diff_ids.push(format!("sha256:{hex}"));
        layers.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{hex}"),
            "size": size,
        }));
    }
    let labels = json!({
        "org.opencontainers.image.title": "rackboot",
        "org.opencontainers.image.description": "per-rack boot appliance: DHCP, TFTP, HTTP iPXE, OpenCHAMI BSS/SMD APIs",
        "org.opencontainers.image.version": src.version,
        "org.opencontainers.image.revision": src.commit,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.licenses": "MIT OR Apache-2.0",
    });
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "Entrypoint": ["/usr/bin/rackboot"],
            "Cmd": ["serve", "--config", "/etc/rackboot/config.toml"],
            "Env": [
                "PATH=/usr/bin",
                "RACKBOOT_DATA_DIR=/var/lib/rackboot",
                "RACKBOOT_IPXE_DIR=/usr/lib/ipxe",
            ],
            "Volumes": {"/var/lib/rackboot": {}},
            "WorkingDir": "/var/lib/rackboot",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": created, "created_by": format!("Debian ipxe {ipxe_version}: {IPXE_DIR}")},
            {"created": created, "created_by": format!("cargo xtask release (commit {})", src.commit)},
        ],
    });
    let (config_hex, config_size) = json_blob(&layout, &work, &config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_hex}"),
            "size": config_size,
        },
        "layers": layers,
        "annotations": labels,
    });
    let (manifest_hex, manifest_size) = json_blob(&layout, &work, &manifest)?;
    let tags = [
        format!("localhost/rackboot:{}", src.version),
        "localhost/rackboot:latest".to_owned(),
    ];
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_hex}"),
            "size": manifest_size,
            "annotations": {
                "io.containerd.image.name": tags[0],
                "org.opencontainers.image.ref.name": tags[0],
            },
        }],
    });
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(
        layout.join("oci-layout"),
        serde_json::to_vec(&json!({"imageLayoutVersion": "1.0.0"}))?,
    )?;
    // Docker's own `docker save` format since Docker 25: the same layout plus manifest.json.
    let docker = json!([{
        "Config": format!("blobs/sha256/{config_hex}"),
        "RepoTags": tags,
        "Layers": diff_ids.iter().map(|d| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"))).collect::<Vec<_>>(),
    }]);
    std::fs::write(layout.join("manifest.json"), serde_json::to_vec(&docker)?)?;
    run(Command::new("chmod")
        .args(["-R", "u=rwX,go=rX"])
        .arg(&layout))?;
    tar(&layout, out, src.epoch)?;
    Ok(Image {
        ipxe_version: ipxe_version.trim().to_owned(),
        files,
        manifest_digest: format!("sha256:{manifest_hex}"),
    })
}
