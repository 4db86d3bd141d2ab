//! CycloneDX 1.5 JSON SBOMs, written here with serde_json rather than by `cargo-cyclonedx`
//! (a `cargo install` of ~200 crates at test time, and its output names the build's absolute
//! paths). The crate list is `cargo tree -e normal` of `appliance` for the release target:
//! exactly the crates and features linked into the binary (build scripts and proc-macros,
//! which ship nothing, are left out). Hashes are Cargo.lock's `.crate` checksums. Keys are
//! sorted and nothing depends on the time or the checkout, so the SBOM is reproducible too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::Context;
use serde_json::{Value, json};

use super::oci::Image;
use super::{Source, sha256};
use crate::run::output;

#[derive(Debug, Clone)]
struct Crate {
    name: String,
    version: String,
    license: String,
    repository: String,
    workspace: bool,
}

impl Crate {
    fn bom_ref(&self) -> String {
        format!("pkg:cargo/{}@{}", self.name, self.version)
    }
}

/// `(name, version) → sha256` from Cargo.lock (registry crates only).
fn checksums(lock: &str) -> BTreeMap<(String, String), String> {
    let mut map = BTreeMap::new();
    for block in lock.split("[[package]]") {
        let field = |k: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k} = \"")))
                .map(|v| v.trim_end_matches('"').to_owned())
        };
        if let (Some(n), Some(v), Some(c)) = (field("name"), field("version"), field("checksum")) {
            map.insert((n, v), c);
        }
    }
    map
}

/// Who depends on whom, by bom-ref.
type Edges = BTreeMap<String, BTreeSet<String>>;

/// The crates linked into the binary and who depends on whom.
fn tree(src: &Source) -> anyhow::Result<(Vec<Crate>, Edges)> {
    let text = output(
        Command::new(env!("CARGO"))
            .current_dir(&src.root)
            .args(["tree", "--locked", "-p", "appliance", "-e", "normal"])
            .args([
                "--target",
                super::TARGET,
                "--prefix",
                "depth",
                "--charset",
                "ascii",
            ])
            .args(["--format", "{p}\t{l}\t{r}"]),
    )?;
    let mut crates: BTreeMap<String, Crate> = BTreeMap::new();
    let mut edges = Edges::new();
    let mut stack: Vec<String> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let digits = line.chars().take_while(char::is_ascii_digit).count();
        let depth: usize = line.get(..digits).unwrap_or("0").parse().unwrap_or(0);
        let rest = line.get(digits..).unwrap_or("").trim_end_matches(" (*)");
        let mut cols = rest.split('\t');
        let pkg = cols.next().unwrap_or("");
        let license = cols.next().unwrap_or("").trim().to_owned();
        let repository = cols.next().unwrap_or("").trim().to_owned();
        let mut words = pkg.split_whitespace();
        let name = words
            .next()
            .context("cargo tree line without a name")?
            .to_owned();
        let version = words
            .next()
            .context("cargo tree line without a version")?
            .trim_start_matches('v')
            .to_owned();
        // A local path after the version marks a workspace crate; the path itself is left out.
        let workspace = words.next().is_some_and(|w| w.starts_with("(/"));
        let c = Crate {
            name,
            version,
            license,
            repository,
            workspace,
        };
        let r = c.bom_ref();
        stack.truncate(depth);
        if let Some(parent) = stack.last() {
            edges.entry(parent.clone()).or_default().insert(r.clone());
        }
        edges.entry(r.clone()).or_default();
        stack.push(r.clone());
        crates.entry(r).or_insert(c);
    }
    Ok((crates.into_values().collect(), edges))
}

fn component(c: &Crate, sums: &BTreeMap<(String, String), String>) -> Value {
    let mut v = json!({
        "type": "library",
        "bom-ref": c.bom_ref(),
        "name": c.name,
        "version": c.version,
        "purl": c.bom_ref(),
    });
    if !c.license.is_empty() {
        v["licenses"] = json!([{"expression": c.license}]);
    }
    if let Some(sum) = sums.get(&(c.name.clone(), c.version.clone())) {
        v["hashes"] = json!([{"alg": "SHA-256", "content": sum}]);
    }
    if !c.repository.is_empty() {
        v["externalReferences"] = json!([{"type": "vcs", "url": c.repository}]);
    }
    if c.workspace {
        v["description"] = json!("part of rackboot's own workspace");
    }
    v
}

/// A UUID (v4 layout) from the first 32 hex digits of `seed` (a sha256): the same release
/// always gets the same serial number.
fn serial(seed: &str) -> String {
    let hex: String = seed
        .chars()
        .filter(char::is_ascii_hexdigit)
        .chain(std::iter::repeat('0'))
        .take(32)
        .collect();
    let part = |a: usize, b: usize| hex.get(a..b).unwrap_or("0");
    format!(
        "urn:uuid:{}-{}-4{}-8{}-{}",
        part(0, 8),
        part(8, 12),
        part(13, 16),
        part(17, 20),
        part(20, 32)
    )
}

fn bom(
    src: &Source,
    seed: &str,
    root: Value,
    components: Vec<Value>,
    deps: Vec<Value>,
) -> anyhow::Result<Value> {
    Ok(json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial(seed),
        "version": 1,
        "metadata": {
            "timestamp": super::sign::rfc3339(src.epoch)?,
            "tools": {"components": [{"type": "application", "name": "cargo xtask release",
                                      "version": src.version}]},
            "component": root,
        },
        "components": components,
        "dependencies": deps,
    }))
}

fn rackboot_component(src: &Source, bin: &Path) -> anyhow::Result<Value> {
    Ok(json!({
        "type": "application",
        "bom-ref": format!("pkg:cargo/appliance@{}", src.version),
        "name": "rackboot",
        "version": src.version,
        "purl": format!("pkg:cargo/appliance@{}", src.version),
        "licenses": [{"expression": "MIT OR Apache-2.0"}],
        "hashes": [{"alg": "SHA-256", "content": sha256(bin)?}],
        "properties": [
            {"name": "rackboot:git-commit", "value": src.commit},
            {"name": "rackboot:tree-dirty", "value": src.dirty.to_string()},
        ],
    }))
}

fn crate_parts(src: &Source) -> anyhow::Result<(Vec<Value>, Vec<Value>)> {
    let (crates, edges) = tree(src)?;
    let lock = std::fs::read_to_string(src.root.join("Cargo.lock"))?;
    let sums = checksums(&lock);
    let root_ref = format!("pkg:cargo/appliance@{}", src.version);
    let components = crates
        .iter()
        .filter(|c| c.bom_ref() != root_ref)
        .map(|c| component(c, &sums))
        .collect();
    let deps = edges
        .into_iter()
        .map(|(r, on)| json!({"ref": r, "dependsOn": on}))
        .collect();
    Ok((components, deps))
}

/// The binary's SBOM: rackboot and every crate linked into it.
pub fn binary(src: &Source, bin: &Path, to: &Path) -> anyhow::Result<()> {
    crate::stage("SBOM (binary)");
    let root = rackboot_component(src, bin)?;
    let (components, deps) = crate_parts(src)?;
    let seed = sha256(bin)?;
    std::fs::write(
        to,
        serde_json::to_string_pretty(&bom(src, &seed, root, components, deps)?)? + "\n",
    )?;
    Ok(())
}

/// The image's SBOM: the image (its manifest digest), rackboot with its crates, Debian's iPXE,
/// and every file's hash.
pub fn image(src: &Source, bin: &Path, image: &Image, to: &Path) -> anyhow::Result<()> {
    crate::stage("SBOM (OCI image)");
    let image_ref = format!(
        "pkg:oci/rackboot@{}",
        image.manifest_digest.replace(':', "%3A")
    );
    let root = json!({
        "type": "container",
        "bom-ref": image_ref,
        "name": "rackboot",
        "version": src.version,
        "purl": image_ref,
        "hashes": [{"alg": "SHA-256", "content": image.manifest_digest.trim_start_matches("sha256:")}],
    });
    let rackboot = rackboot_component(src, bin)?;
    let ipxe_ref = format!("pkg:deb/debian/ipxe@{}?arch=all", image.ipxe_version);
    let ipxe = json!({
        "type": "firmware",
        "bom-ref": ipxe_ref,
        "name": "ipxe",
        "version": image.ipxe_version,
        "purl": ipxe_ref,
        "supplier": {"name": "Debian"},
        "licenses": [{"expression": "GPL-2.0-or-later"}],
    });
    let files: Vec<Value> = image
        .files
        .iter()
        .map(|(path, sum)| {
            json!({
                "type": "file",
                "bom-ref": format!("file:{path}"),
                "name": path,
                "hashes": [{"alg": "SHA-256", "content": sum}],
            })
        })
        .collect();
    let (mut components, mut deps) = crate_parts(src)?;
    components.insert(0, ipxe);
    components.insert(0, rackboot);
    components.extend(files);
    deps.push(json!({"ref": image_ref, "dependsOn": [format!("pkg:cargo/appliance@{}", src.version), ipxe_ref]}));
    let seed = image
        .manifest_digest
        .trim_start_matches("sha256:")
        .to_owned();
    std::fs::write(
        to,
        serde_json::to_string_pretty(&bom(src, &seed, root, components, deps)?)? + "\n",
    )?;
    Ok(())
}
