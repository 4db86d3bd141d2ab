//! Backup and recovery: `rackboot backup create/verify/restore` and the scheduled backups of
//! `[backup]`.
//!
//! A backup *target* is a directory shared by many backups:
//!
//! ```text
//! TARGET/rackboot-20261202T104134Z.tar.age        one encrypted archive per backup
//! TARGET/rackboot-20261202T104134Z.tar.age.blobs  the image blobs it needs (plain list of hashes)
//! TARGET/blobs/sha256/<hex>                       image blobs, by content hash, shared
//! ```
//!
//! The archive (`archive.rs`) is a tar stream encrypted with age to a passphrase (scrypt) or to
//! age X25519 recipients. It holds a consistent snapshot of the store (`store::backup`,
//! `VACUUM INTO` beside a running server), every other file of the data dir (the rack CA key
//! and chain, the token issuer key, the sealing keys), the config file, and a manifest with
//! every member's SHA-256 and every blob's hash. Blobs are written once: a second backup to
//! the same target copies only blobs it does not hold yet. They are not encrypted: they are
//! the kernels and initrds served without authentication at `/images/*`; the encrypted
//! manifest pins their hashes, so restore notices a swapped or damaged blob.
//!
//! `create` opens the data dir directly rather than asking the server: the snapshot is one
//! SQLite read transaction from its own connection, which WAL lets run beside the server's
//! writer without stopping it; the key files are written once by rename, so reading them is
//! safe; and a backup works the same whether or not `rackboot serve` is running (a dead
//! appliance's disk can still be backed up).
//!
//! Owns: `rackboot backup`, the `[backup]` schedule task. May call: `auth`, `client`, `config`,
//! `metrics`, `output`, `seal`, `store`.

mod archive;
pub mod cli;
mod create;
mod restore;
pub mod schedule;
mod secret;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use archive::{Seal, Unseal};
pub use create::{CreateOptions, Created, create};
pub use restore::{Inspected, RestoreOptions, Restored, restore, verify};

/// `manifest.json`'s `format`.
pub const FORMAT: &str = "rackboot-backup";
/// The archive layout this rackboot writes; it reads this one and older.
pub const FORMAT_VERSION: u32 = 1;

/// What an archive holds (`manifest.json`, its last member).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    /// When the store snapshot was taken (RFC 3339, UTC).
    pub created: String,
    pub created_ms: i64,
    pub rackboot_version: String,
    pub source_data_dir: String,
    /// The config file backed up (its path on the appliance), if one was in use.
    pub config_file: Option<String>,
    /// `PRAGMA user_version` of the store snapshot.
    pub schema_version: i64,
    /// Every other member of the archive.
    pub members: Vec<Member>,
    /// The image blobs the store refers to, kept in the target's `blobs/sha256/`.
    pub blobs: Vec<Blob>,
}

/// One archive member.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub path: String,
    pub mode: u32,
    pub size: u64,
    pub sha256: String,
}

/// One image blob.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Blob {
    pub sha256: String,
    pub size: u64,
}

/// A key file of the data dir and its fingerprint, as `verify` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyInfo {
    pub path: String,
    pub what: String,
    pub fingerprint: String,
}

/// The archive's blob store: `blobs/` beside the archive.
pub fn default_blobs_dir(archive: &Path) -> std::path::PathBuf {
    archive
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("blobs")
}

/// Whether `s` is a lowercase hex SHA-256 (a blob's file name).
fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The key files of a data dir (a live one, or one unpacked from an archive) with fingerprints:
/// the rack CA's certificate fingerprint (as `rackboot ca show` prints it), the token issuer's
/// key id (the `kid` of every token it minted), and a hash of each sealing key.
pub fn describe_keys(root: &Path) -> Vec<KeyInfo> {
    let mut out = Vec::new();
    let sha = |bytes: &[u8]| {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
        format!("sha256:{}", hex::encode(d.as_ref()))
    };
    if let Ok(pem) = std::fs::read(root.join("identity/ca.pem")) {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let fp = CertificateDer::pem_slice_iter(&pem)
            .next()
            .and_then(Result::ok)
            .map(|der| sha(&der))
            .unwrap_or_else(|| "unreadable".into());
        out.push(KeyInfo {
            path: "identity/ca.pem".into(),
            what: "rack CA certificate".into(),
            fingerprint: fp,
        });
    }
    // The issuer key is described by its key id below.
    for (path, what) in crate::seal::keyfile::KEY_FILES
        .iter()
        .filter(|(p, _)| *p != "auth/issuer.pem")
    {
        // Unsealed when sealed: the hash is of the key, the same in a backup and on a TPM.
        if let Ok(bytes) = crate::seal::keyfile::read(&root.join(path)) {
            out.push(KeyInfo {
                path: (*path).into(),
                what: (*what).into(),
                // A hash of a key file reveals nothing of the key, and tells two keys apart.
                fingerprint: sha(&bytes),
            });
        }
    }
    if let Ok(Some(issuer)) = crate::auth::issuer::LocalIssuer::open_existing(root) {
        out.push(KeyInfo {
            path: "auth/issuer.pem".into(),
            what: "token issuer key (kid)".into(),
            fingerprint: issuer.kid().to_owned(),
        });
    }
    out
}

/// `20261202T104134Z` for a time in milliseconds since the epoch.
fn stamp(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace(['-', ':'], "")
}

#[cfg(test)]
mod tests;
