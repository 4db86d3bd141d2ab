//! The update bundle: an uncompressed tar whose first member is `manifest.json`, whose second is
//! `manifest.json.sig` (a raw 64-byte Ed25519 signature of the manifest's exact bytes), followed
//! by the payload files the manifest names, each with its size and SHA-256.
//!
//! Reading is in two passes and writes nothing: [`open`] reads and verifies the manifest (the
//! signature against the keys baked into the running image, then the format and the board);
//! [`Bundle::check_payloads`] streams every payload through SHA-256 and compares it with the
//! signed manifest. Only a bundle that passed both is handed to the installer, which reads the
//! payloads a second time (from the same file, so a bundle swapped in between fails its hashes
//! again while being written; the installer checks them again as it writes).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{Context, SHA256};
use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The manifest's `format`: also the domain separation of the signature (a signature over
/// anything that is not a manifest of this format does not verify as one).
pub const FORMAT: &str = "rackboot-update/1";
/// The largest manifest read (it is small JSON; this bounds a hostile one).
const MANIFEST_MAX: u64 = 64 * 1024;
/// An Ed25519 SubjectPublicKeyInfo is this fixed DER prefix followed by the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// What a bundle holds, as signed by the release key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The board the image is for (`/etc/rackboot/board` on the appliance).
    pub board: String,
    /// The image's version (`rackboot --version` of the binary in it).
    pub version: String,
    /// The root slot's dm-verity root hash (also inside the signed UKIs' command lines).
    pub roothash: String,
    /// Every payload, in bundle order.
    pub files: Vec<FileEntry>,
}

/// One payload of the bundle.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    /// Lower-case hex SHA-256.
    pub sha256: String,
}

/// The payloads every bundle must carry: the root file system (squashfs + dm-verity hash tree)
/// and one signed UKI per slot (each UKI's signed command line names its slot).
pub const REQUIRED: [&str; 3] = ["root.img", "rackboot-a.efi", "rackboot-b.efi"];

/// Why a bundle was refused. Each is a refusal before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing {0}")]
    Write(String),
    #[error("not an update bundle: {0}")]
    Malformed(String),
    #[error("the bundle is truncated: {0}")]
    Truncated(String),
    #[error(
        "the bundle's signature does not verify against any of the {keys} trusted update key(s) in {dir}"
    )]
    BadSignature { keys: usize, dir: String },
    #[error("no trusted update keys in {0}: refusing every bundle")]
    NoKeys(String),
    #[error("the bundle is for board {bundle:?}, this appliance is {ours:?}")]
    WrongBoard { bundle: String, ours: String },
    #[error("payload {name} does not match the signed manifest: {why}")]
    PayloadMismatch { name: String, why: String },
}

/// A trusted update key: its file name (for messages) and the raw Ed25519 key.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    pub name: String,
    raw: [u8; 32],
}

/// Reads every `*.pub` in `dir`: PEM `PUBLIC KEY` (Ed25519 SubjectPublicKeyInfo, as
/// `openssl pkey -pubout` writes it). A file that is not such a key is an error, not skipped:
/// a typo in the trust store must not go unnoticed.
pub fn trusted_keys(dir: &Path) -> anyhow::Result<Vec<TrustedKey>> {
    let mut keys = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", dir.display())),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let raw =
            parse_public_key(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        keys.push(TrustedKey {
            name: path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            raw,
        });
    }
    Ok(keys)
}

/// The raw key of a PEM Ed25519 public key.
pub fn parse_public_key(pem: &str) -> anyhow::Result<[u8; 32]> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN PUBLIC KEY-----")
        .skip(1)
        .take_while(|l| *l != "-----END PUBLIC KEY-----")
        .collect();
    if body.is_empty() {
        anyhow::bail!("not a PEM PUBLIC KEY");
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| anyhow::anyhow!("bad base64 in the PEM: {e}"))?;
    match der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        Some(raw) if raw.len() == 32 => {
            let mut key = [0u8; 32];
            key.copy_from_slice(raw);
            Ok(key)
        }
        _ => anyhow::bail!("not an Ed25519 public key (only Ed25519 update keys are accepted)"),
    }
}

/// A bundle whose manifest verified.
#[derive(Debug)]
pub struct Bundle {
    path: PathBuf,
    pub manifest: Manifest,
    /// The trusted key that signed it.
    pub signed_by: String,
    /// Where each payload's bytes start in the file.
    offsets: BTreeMap<String, u64>,
}

/// Opens `path`, verifies its manifest's signature against `keys` (from `key_dir`, for
/// messages) and checks its format and board. Reads only the manifest and the tar headers.
pub fn open(
    path: &Path,
    keys: &[TrustedKey],
    key_dir: &Path,
    board: &str,
) -> Result<Bundle, Refused> {
    if keys.is_empty() {
        return Err(Refused::NoKeys(key_dir.display().to_string()));
    }
    let file_len = std::fs::metadata(path)?.len();
    let mut archive = tar::Archive::new(File::open(path)?);
    let mut entries = archive.entries_with_seek()?;
    let mut next = |want: &str| -> Result<(Vec<u8>, u64), Refused> {
        let mut entry = entries
            .next()
            .ok_or_else(|| Refused::Malformed(format!("no {want} member")))?
            .map_err(|e| Refused::Malformed(e.to_string()))?;
        let name = entry_name(&entry)?;
        if name != want {
            return Err(Refused::Malformed(format!(
                "member {name:?} where {want} must be"
            )));
        }
        if entry.size() > MANIFEST_MAX {
            return Err(Refused::Malformed(format!("{want} is too large")));
        }
        let mut bytes = Vec::new();
        entry
            .by_ref()
            .take(MANIFEST_MAX)
            .read_to_end(&mut bytes)
            .map_err(|e| Refused::Truncated(format!("{want}: {e}")))?;
        if bytes.len() as u64 != entry.size() {
            return Err(Refused::Truncated(format!("{want} ends early")));
        }
        Ok((bytes, entry.raw_file_position()))
    };
    let (manifest_bytes, _) = next("manifest.json")?;
    let (signature, _) = next("manifest.json.sig")?;
    let signed_by = keys
        .iter()
        .find(|k| {
            UnparsedPublicKey::new(&ED25519, &k.raw)
                .verify(&manifest_bytes, &signature)
                .is_ok()
        })
        .map(|k| k.name.clone())
        .ok_or_else(|| Refused::BadSignature {
            keys: keys.len(),
            dir: key_dir.display().to_string(),
        })?;
    // Signed by a key we trust: from here on the manifest is the release's word.
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| Refused::Malformed(format!("manifest.json: {e}")))?;
    if manifest.format != FORMAT {
        return Err(Refused::Malformed(format!(
            "format {:?}, this rackboot reads {FORMAT:?}",
            manifest.format
        )));
    }
    if manifest.board != board {
        return Err(Refused::WrongBoard {
            bundle: manifest.board,
            ours: board.to_owned(),
        });
    }
    let mut names = std::collections::BTreeSet::new();
    for f in &manifest.files {
        if !names.insert(f.name.as_str()) {
            return Err(Refused::Malformed(format!("{} is listed twice", f.name)));
        }
        if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Refused::Malformed(format!("{}: bad sha256", f.name)));
        }
    }
    if let Some(missing) = REQUIRED.iter().find(|r| !names.contains(**r)) {
        return Err(Refused::Malformed(format!("the manifest has no {missing}")));
    }
    // The payloads' positions, and that the file is long enough to hold them all (a truncated
    // download is refused here, before any byte is hashed or written).
    let mut offsets = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| Refused::Truncated(e.to_string()))?;
        let name = entry_name(&entry)?;
        let Some(listed) = manifest.files.iter().find(|f| f.name == name) else {
            return Err(Refused::Malformed(format!(
                "member {name:?} is not in the manifest"
            )));
        };
        if entry.size() != listed.size {
            return Err(Refused::PayloadMismatch {
                name,
                why: format!("{} bytes, the manifest says {}", entry.size(), listed.size),
            });
        }
        let start = entry.raw_file_position();
        if start + listed.size > file_len {
            return Err(Refused::Truncated(format!(
                "{name} needs bytes up to {}, the file has {file_len}",
                start + listed.size
            )));
        }
        if offsets.insert(name.clone(), start).is_some() {
            return Err(Refused::Malformed(format!("member {name:?} appears twice")));
        }
    }
    if let Some(missing) = manifest
        .files
        .iter()
        .find(|f| !offsets.contains_key(&f.name))
    {
        return Err(Refused::Truncated(format!(
            "{} is in the manifest but not in the bundle",
            missing.name
        )));
    }
    Ok(Bundle {
        path: path.to_owned(),
        manifest,
        signed_by,
        offsets,
    })
}

fn entry_name<R: Read>(entry: &tar::Entry<R>) -> Result<String, Refused> {
    let path = entry
        .path()
        .map_err(|e| Refused::Malformed(format!("member name: {e}")))?;
    let name = path.to_string_lossy().into_owned();
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(Refused::Malformed(format!("member name {name:?}")));
    }
    if entry.header().entry_type() != tar::EntryType::Regular {
        return Err(Refused::Malformed(format!(
            "member {name:?} is not a regular file"
        )));
    }
    Ok(name)
}

impl Bundle {
    /// The signed entry for `name`.
    pub fn entry(&self, name: &str) -> Option<&FileEntry> {
        self.manifest.files.iter().find(|f| f.name == name)
    }

    /// A reader of exactly payload `name`'s bytes (not yet checked against its hash: use
    /// [`HashCheck`] around it or [`Bundle::check_payloads`] first).
    pub fn payload(&self, name: &str) -> Result<impl Read + use<>, Refused> {
        let (Some(entry), Some(&start)) = (self.entry(name), self.offsets.get(name)) else {
            return Err(Refused::Malformed(format!("no payload {name}")));
        };
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(start))?;
        Ok(file.take(entry.size))
    }

    /// Streams every payload through SHA-256 and compares it with the signed manifest.
    /// `progress` is called with the bytes checked so far and the total.
    pub fn check_payloads(&self, mut progress: impl FnMut(u64, u64)) -> Result<(), Refused> {
        let total: u64 = self.manifest.files.iter().map(|f| f.size).sum();
        let mut done = 0;
        for f in &self.manifest.files {
            let mut check = HashCheck::new(self.payload(&f.name)?, f);
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = check.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                done += n as u64;
                progress(done, total);
            }
            check.finish()?;
        }
        Ok(())
    }
}

/// Hashes what is read through it; [`HashCheck::finish`] compares size and SHA-256 with the
/// signed entry.
pub struct HashCheck<'a, R> {
    inner: R,
    entry: &'a FileEntry,
    digest: Context,
    read: u64,
}

impl<'a, R: Read> HashCheck<'a, R> {
    pub fn new(inner: R, entry: &'a FileEntry) -> Self {
        HashCheck {
            inner,
            entry,
            digest: Context::new(&SHA256),
            read: 0,
        }
    }

    /// Size and hash match the manifest.
    pub fn finish(self) -> Result<(), Refused> {
        if self.read != self.entry.size {
            return Err(Refused::Truncated(format!(
                "{}: {} of {} bytes",
                self.entry.name, self.read, self.entry.size
            )));
        }
        let got = hex::encode(self.digest.finish());
        if !got.eq_ignore_ascii_case(&self.entry.sha256) {
            return Err(Refused::PayloadMismatch {
                name: self.entry.name.clone(),
                why: format!("sha256 {got}, the manifest says {}", self.entry.sha256),
            });
        }
        Ok(())
    }
}

impl<R: Read> Read for HashCheck<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(buf.get(..n).unwrap_or_default());
        self.read += n as u64;
        Ok(n)
    }
}
