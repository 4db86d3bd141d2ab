//! The archive: a tar stream inside an age file.
//!
//! Members, in order: `store/rackboot.db` (the snapshot), `data/<path>` (every other file of the
//! data dir: keys, the CA chain), `config/<name>` (the config file, if one was in use), and last
//! `manifest.json`, which lists every other member with its size, mode and SHA-256. With only
//! `age -d` and `tar x` a person can still get at everything (docs/runbook-backup.md).
//!
//! Reading treats the file as hostile: age authenticates every 64 KiB chunk and the end of the
//! stream (so a flipped bit or a truncation is an error, not a shorter archive), the tar
//! entries must be regular files with plain relative names under those three prefixes, each
//! at most once, and each must match the manifest's size and hash.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use age::secrecy::SecretString;
use anyhow::{Context, bail};
use aws_lc_rs::digest;

use super::{FORMAT, FORMAT_VERSION, Manifest, Member};

/// How an archive is encrypted.
pub enum Seal {
    Passphrase(SecretString),
    Recipients(Vec<age::x25519::Recipient>),
}

/// How an archive is decrypted.
pub enum Unseal {
    Passphrase(SecretString),
    Identities(Vec<age::x25519::Identity>),
}

/// Largest `manifest.json` accepted (it lists files, not data).
const MAX_MANIFEST: u64 = 16 << 20;

/// Writes members into an encrypted tar stream; the manifest goes last.
pub struct Writer {
    tar: tar::Builder<age::stream::StreamWriter<BufWriter<File>>>,
    members: Vec<Member>,
    mtime: u64,
}

impl Writer {
    pub fn new(file: File, seal: &Seal, mtime: u64) -> anyhow::Result<Writer> {
        let encryptor = match seal {
            Seal::Passphrase(p) => age::Encryptor::with_user_passphrase(p.clone()),
            Seal::Recipients(r) => {
                age::Encryptor::with_recipients(r.iter().map(|r| r as &dyn age::Recipient))
                    .map_err(|e| anyhow::anyhow!("cannot encrypt to these recipients: {e}"))?
            }
        };
        let stream = encryptor
            .wrap_output(BufWriter::with_capacity(1 << 20, file))
            .context("cannot write the archive header")?;
        let mut tar = tar::Builder::new(stream);
        tar.mode(tar::HeaderMode::Deterministic);
        Ok(Writer {
            tar,
            members: Vec::new(),
            mtime,
        })
    }

    /// Appends `size` bytes from `data` as `path`, hashing them on the way.
    pub fn add(&mut self, path: &str, mode: u32, size: u64, data: impl Read) -> anyhow::Result<()> {
        check_member_path(path)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(mode & 0o777);
        header.set_mtime(self.mtime);
        header.set_entry_type(tar::EntryType::Regular);
        let mut hashing = HashingReader::new(data.take(size));
        self.tar
            .append_data(&mut header, path, &mut hashing)
            .with_context(|| format!("cannot write {path} into the archive"))?;
        let (sha256, read) = hashing.finish();
        if read != size {
            bail!("{path} changed size while it was being backed up");
        }
        self.members.push(Member {
            path: path.to_owned(),
            mode: mode & 0o777,
            size,
            sha256,
        });
        Ok(())
    }

    /// Appends the manifest (with every member written so far), ends the tar and age streams
    /// and syncs the file.
    pub fn finish(mut self, mut manifest: Manifest) -> anyhow::Result<Manifest> {
        manifest.members = std::mem::take(&mut self.members);
        let json = serde_json::to_vec_pretty(&manifest)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(json.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(self.mtime);
        header.set_entry_type(tar::EntryType::Regular);
        self.tar
            .append_data(&mut header, "manifest.json", json.as_slice())?;
        let stream = self.tar.into_inner()?;
        let buffered = stream.finish().context("cannot end the age stream")?;
        let file = buffered
            .into_inner()
            .map_err(|e| anyhow::anyhow!("cannot write the archive: {}", e.error()))?;
        file.sync_all().context("cannot sync the archive")?;
        Ok(manifest)
    }
}

/// An archive read and checked: its manifest, and where each member was written.
pub struct Unpacked {
    pub manifest: Manifest,
    /// Archive path → file under the staging dir.
    pub files: BTreeMap<String, PathBuf>,
}

/// Decrypts `archive` and writes every member under `staging` (at its archive path), checking
/// each against the manifest. On error, files already written under `staging` are the
/// caller's to remove.
pub fn unpack(archive: &Path, unseal: &Unseal, staging: &Path) -> anyhow::Result<Unpacked> {
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let decryptor = age::Decryptor::new_buffered(BufReader::with_capacity(1 << 20, file))
        .map_err(|e| header_error(archive, e))?;
    let reader = match unseal {
        Unseal::Passphrase(p) => {
            if !decryptor.is_scrypt() {
                bail!(
                    "{} is encrypted to an age recipient, not a passphrase: pass --identity FILE",
                    archive.display()
                );
            }
            let id = age::scrypt::Identity::new(p.clone());
            decryptor.decrypt(std::iter::once(&id as &dyn age::Identity))
        }
        Unseal::Identities(ids) => {
            if decryptor.is_scrypt() {
                bail!(
                    "{} is encrypted to a passphrase, not a recipient: give the passphrase instead of --identity",
                    archive.display()
                );
            }
            decryptor.decrypt(ids.iter().map(|i| i as &dyn age::Identity))
        }
    }
    .map_err(|e| key_error(archive, e))?;
    let mut reader = reader;
    let mut seen: BTreeMap<String, (PathBuf, u64, String, u32)> = BTreeMap::new();
    let mut manifest_bytes: Option<Vec<u8>> = None;
    {
        let mut tar = tar::Archive::new(&mut reader);
        for entry in tar.entries().map_err(damaged)? {
            let mut entry = entry.map_err(damaged)?;
            let kind = entry.header().entry_type();
            let name = String::from_utf8(entry.path_bytes().into_owned())
                .map_err(|_| anyhow::anyhow!("the archive has a member whose name is not UTF-8"))?;
            if kind != tar::EntryType::Regular {
                bail!("the archive member {name:?} is not a regular file");
            }
            if name != "manifest.json" {
                check_member_path(&name)?;
            }
            if seen.contains_key(&name) || (name == "manifest.json" && manifest_bytes.is_some()) {
                bail!("the archive holds {name:?} twice");
            }
            let size = entry.header().size().map_err(damaged)?;
            let mode = entry.header().mode().map_err(damaged)? & 0o777;
            if name == "manifest.json" {
                if size > MAX_MANIFEST {
                    bail!("the archive's manifest is {size} bytes, more than a manifest can be");
                }
                let mut buf = Vec::new();
                entry.read_to_end(&mut buf).map_err(damaged)?;
                manifest_bytes = Some(buf);
                continue;
            }
            let dest = staging.join(&name);
            if let Some(parent) = dest.parent() {
                create_private_dir_all(parent)?;
            }
            let (sha256, written) = write_file(&dest, mode, &mut entry).map_err(|e| match e
                .downcast::<io::Error>(
            ) {
                Ok(io) => damaged(io),
                Err(other) => other,
            })?;
            if written != size {
                bail!("the archive is damaged: {name} is shorter than its header says");
            }
            seen.insert(name, (dest, size, sha256, mode));
        }
    }
    // The tar stream ends with zero blocks; age's last chunk (and its authentication) may
    // still be unread. Reading to the end is what proves the file was not cut short.
    io::copy(&mut reader, &mut io::sink()).map_err(damaged)?;
    let manifest_bytes = manifest_bytes.ok_or_else(|| {
        anyhow::anyhow!("the archive has no manifest.json: not a rackboot backup")
    })?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| anyhow::anyhow!("the archive's manifest.json does not parse: {e}"))?;
    if manifest.format != FORMAT {
        bail!("not a rackboot backup (format {:?})", manifest.format);
    }
    if manifest.format_version > FORMAT_VERSION {
        bail!(
            "the backup has format version {}, newer than this rackboot understands ({FORMAT_VERSION}): \
             restore it with rackboot {} or later",
            manifest.format_version,
            manifest.rackboot_version
        );
    }
    let mut files = BTreeMap::new();
    for m in &manifest.members {
        let Some((path, size, sha256, _mode)) = seen.remove(&m.path) else {
            bail!("the archive is missing {} (listed in its manifest)", m.path);
        };
        if size != m.size || sha256 != m.sha256 {
            bail!(
                "the archive is damaged: {} does not match its manifest (sha256 {sha256}, manifest {})",
                m.path,
                m.sha256
            );
        }
        files.insert(m.path.clone(), path);
    }
    if let Some(extra) = seen.keys().next() {
        bail!("the archive holds {extra}, which its manifest does not list");
    }
    Ok(Unpacked { manifest, files })
}

/// A member name: relative, `/`-separated, plain components, under one of our prefixes.
pub fn check_member_path(path: &str) -> anyhow::Result<()> {
    let ok_prefix = path == "store/rackboot.db"
        || path.starts_with("data/")
        || (path.starts_with("config/") && path.matches('/').count() == 1);
    let ok_parts = path.len() < 4096
        && path.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
        });
    if !ok_prefix || !ok_parts {
        bail!("the archive has a member with a name rackboot never writes: {path:?}");
    }
    Ok(())
}

/// Creates `dest` (0600 while written, then `mode`), copies `data` into it and syncs it.
/// Returns the hex SHA-256 and byte count.
pub fn write_file(dest: &Path, mode: u32, data: &mut impl Read) -> anyhow::Result<(String, u64)> {
    use std::os::unix::fs::PermissionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .with_context(|| format!("cannot create {}", dest.display()))?;
    let mut hashing = HashingReader::new(data);
    io::copy(&mut hashing, &mut f)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))?;
    f.sync_all()
        .with_context(|| format!("cannot sync {}", dest.display()))?;
    Ok(hashing.finish())
}

/// `create_dir_all` with every created directory at 0700.
pub fn create_private_dir_all(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Syncs a directory, so the names created in it are durable.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync the directory {}", dir.display()))
}

/// Hex SHA-256 of everything read through it.
pub struct HashingReader<R> {
    inner: R,
    ctx: digest::Context,
    n: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            ctx: digest::Context::new(&digest::SHA256),
            n: 0,
        }
    }

    pub fn finish(self) -> (String, u64) {
        (hex::encode(self.ctx.finish()), self.n)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(chunk) = buf.get(..n) {
            self.ctx.update(chunk);
        }
        self.n += n as u64;
        Ok(n)
    }
}

fn damaged(e: io::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "the archive is damaged or truncated: it fails age's authentication or its tar framing ({e}); \
         nothing was restored from it"
    )
}

fn header_error(archive: &Path, e: age::DecryptError) -> anyhow::Error {
    match e {
        age::DecryptError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => anyhow::anyhow!(
            "{} is truncated: it ends inside the age header",
            archive.display()
        ),
        other => anyhow::anyhow!(
            "{} is not a readable age file ({other}): not a rackboot backup, or damaged",
            archive.display()
        ),
    }
}

fn key_error(archive: &Path, e: age::DecryptError) -> anyhow::Error {
    match e {
        age::DecryptError::DecryptionFailed
        | age::DecryptError::KeyDecryptionFailed
        | age::DecryptError::NoMatchingKeys => anyhow::anyhow!(
            "cannot decrypt {}: wrong passphrase, or not encrypted to this identity",
            archive.display()
        ),
        age::DecryptError::InvalidMac => anyhow::anyhow!(
            "cannot decrypt {}: its header fails authentication (damaged or tampered with, or the wrong passphrase)",
            archive.display()
        ),
        age::DecryptError::ExcessiveWork { required, target } => anyhow::anyhow!(
            "{} asks for scrypt work factor {required}, more than this machine accepts ({target})",
            archive.display()
        ),
        other => anyhow::anyhow!("cannot decrypt {}: {other}", archive.display()),
    }
}
