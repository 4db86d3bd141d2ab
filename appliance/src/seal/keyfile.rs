//! Private key files at rest: plain files (0600), or sealed to the machine's TPM.
//!
//! `RACKBOOT_TPM` decides how keys are written: `off` (the default outside the appliance:
//! plain files), `auto` (the appliance: sealed when the machine has a TPM, plain when it has
//! none), `required` (refuse to write a key without a TPM). Reading does not depend on it: a
//! sealed file is recognised by its header and always unsealed through the TPM.
//!
//! A sealed file holds a random 256-bit data key sealed to the TPM under a PCR 7 policy
//! (`tpm.rs`), and the key file's bytes encrypted with it (AES-256-GCM, the file's name as
//! associated data, so sealed files cannot be swapped). A copy of the data partition is
//! useless without that TPM in that Secure Boot state.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// The private key files of a data dir, relative, with what each is.
pub const KEY_FILES: &[(&str, &str)] = &[
    ("identity/ca.key", "rack CA key"),
    (
        "identity/ca-pending.key",
        "pending CA key (from `rackboot ca csr`)",
    ),
    ("identity/secrets.key", "node secrets sealing key"),
    ("bmc-credentials.key", "BMC credentials sealing key"),
    ("auth/issuer.pem", "token issuer key"),
];

const MAGIC: &[u8] = b"RACKBOOT-TPM-SEALED/1\n";

/// How keys are written (`RACKBOOT_TPM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TpmUse {
    Off,
    Auto,
    Required,
}

impl TpmUse {
    pub fn from_env() -> std::io::Result<TpmUse> {
        match std::env::var("RACKBOOT_TPM").unwrap_or_default().as_str() {
            "" | "off" => Ok(TpmUse::Off),
            "auto" => Ok(TpmUse::Auto),
            "required" => Ok(TpmUse::Required),
            other => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("RACKBOOT_TPM={other:?}: expected off, auto or required"),
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            TpmUse::Off => "off",
            TpmUse::Auto => "auto",
            TpmUse::Required => "required",
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope {
    /// What the data key is sealed under (`tpm.rs` POLICY).
    policy: String,
    public: String,
    private: String,
    nonce: String,
    ciphertext: String,
}

fn other(msg: String) -> std::io::Error {
    std::io::Error::other(msg)
}

/// Whether these bytes are a sealed key file.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

fn aad(path: &Path) -> Vec<u8> {
    let mut a = MAGIC.to_vec();
    a.extend_from_slice(path.file_name().map_or(&[][..], |n| n.as_encoded_bytes()));
    a
}

fn aead(key: &[u8]) -> std::io::Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| other("the unsealed data key is not 256 bits".into()))
}

fn seal_bytes(path: &Path, plain: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut key = [0u8; 32];
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| other("no randomness".into()))?;
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| other("no randomness".into()))?;
    let (public, private) = tpm::seal(&key)
        .map_err(|e| other(format!("cannot seal {} to the TPM: {e:#}", path.display())))?;
    let mut data = plain.to_vec();
    aead(&key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(path)),
            &mut data,
        )
        .map_err(|_| other("encryption failed".into()))?;
    let env = Envelope {
        policy: tpm::POLICY.into(),
        public: B64.encode(public),
        private: B64.encode(private),
        nonce: B64.encode(nonce),
        ciphertext: B64.encode(data),
    };
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&serde_json::to_vec(&env).map_err(|e| other(e.to_string()))?);
    out.push(b'\n');
    Ok(out)
}

fn unseal_bytes(path: &Path, sealed: &[u8]) -> std::io::Result<Vec<u8>> {
    let bad = |what: &str| {
        other(format!(
            "{} is a damaged sealed key file: {what}",
            path.display()
        ))
    };
    let body = sealed.get(MAGIC.len()..).unwrap_or_default();
    let env: Envelope = serde_json::from_slice(body).map_err(|e| bad(&e.to_string()))?;
    let field = |s: &str| B64.decode(s).map_err(|_| bad("bad base64"));
    let key = tpm::unseal(&field(&env.public)?, &field(&env.private)?).map_err(|e| {
        other(format!(
            "cannot unseal {} (policy {}): {e:#}. Restore the data partition's keys from a backup (docs/runbook-backup.md)",
            path.display(),
            env.policy
        ))
    })?;
    let nonce = Nonce::try_assume_unique_for_key(&field(&env.nonce)?).map_err(|_| bad("nonce"))?;
    let mut data = field(&env.ciphertext)?;
    let plain = aead(&key)?
        .open_in_place(nonce, Aad::from(aad(path)), &mut data)
        .map_err(|_| bad("it does not decrypt with its sealed key"))?;
    Ok(plain.to_vec())
}

/// Reads a private key file: its bytes, unsealed through the TPM when the file is sealed.
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let bytes = std::fs::read(path)?;
    if is_sealed(&bytes) {
        unseal_bytes(path, &bytes)
    } else {
        Ok(bytes)
    }
}

/// Whether a new key file is sealed under the current `RACKBOOT_TPM`.
fn sealing() -> std::io::Result<bool> {
    match TpmUse::from_env()? {
        TpmUse::Off => Ok(false),
        TpmUse::Auto => Ok(tpm::device().is_some()),
        TpmUse::Required => Ok(true),
    }
}

fn encode(path: &Path, plain: &[u8]) -> std::io::Result<Vec<u8>> {
    if sealing()? {
        seal_bytes(path, plain)
    } else {
        Ok(plain.to_vec())
    }
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Creates a key file (0600); fails with `AlreadyExists` if there is one (a racing process
/// keeps its key).
pub fn create_new(path: &Path, plain: &[u8]) -> std::io::Result<()> {
    write_file(path, &encode(path, plain)?)?;
    sync_parent(path)
}

/// Writes a key file in place of any earlier one: a temporary file, fsync, rename, fsync of the
/// directory, so a power cut leaves the old key or the new one.
pub fn replace(path: &Path, plain: &[u8]) -> std::io::Result<()> {
    let bytes = encode(path, plain)?;
    let tmp = path.with_extension("key-tmp");
    let _ = std::fs::remove_file(&tmp);
    write_file(&tmp, &bytes)?;
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// How a data dir's keys are kept.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// `RACKBOOT_TPM` as this process sees it.
    pub setting: String,
    /// The TPM this process would use, if any.
    pub tpm: Option<String>,
    pub sealed: Vec<String>,
    pub plain: Vec<String>,
}

impl Status {
    /// One line for `rackboot appliance status`.
    pub fn summary(&self) -> String {
        if self.plain.is_empty() && self.sealed.is_empty() {
            return "no keys yet".into();
        }
        if self.plain.is_empty() {
            return format!(
                "sealed to the TPM (policy {}): {}",
                tpm::POLICY,
                self.sealed.join(", ")
            );
        }
        let why = match (self.setting.as_str(), &self.tpm) {
            ("off", _) => "RACKBOOT_TPM=off".to_owned(),
            (_, None) => "this machine has no TPM".to_owned(),
            (_, Some(t)) => format!("a TPM is present ({t}) but rackboot has not sealed them yet"),
        };
        format!(
            "not sealed ({why}); plain files on the data partition: {}",
            self.plain.join(", ")
        )
    }
}

/// Which of `data_dir`'s key files are sealed (reads only their headers; needs no TPM).
pub fn status(data_dir: &Path) -> Status {
    let (mut sealed, mut plain) = (Vec::new(), Vec::new());
    for (rel, _) in KEY_FILES {
        let mut head = [0u8; MAGIC.len()];
        let Ok(mut f) = std::fs::File::open(data_dir.join(rel)) else {
            continue;
        };
        let n = std::io::Read::read(&mut f, &mut head).unwrap_or(0);
        if is_sealed(head.get(..n).unwrap_or_default()) {
            sealed.push((*rel).to_owned());
        } else {
            plain.push((*rel).to_owned());
        }
    }
    Status {
        setting: TpmUse::from_env().map_or_else(|_| "invalid".into(), |u| u.name().into()),
        tpm: tpm::device(),
        sealed,
        plain,
    }
}

/// At start: with `RACKBOOT_TPM` auto (and a TPM) or required, seals every key file that is
/// still plain (each replaced atomically), so a data dir made before the TPM was in use, or
/// restored from a backup, ends up sealed.
pub fn seal_existing(data_dir: &Path) -> anyhow::Result<Status> {
    let use_ = TpmUse::from_env()?;
    if use_ == TpmUse::Required && tpm::device().is_none() {
        anyhow::bail!(
            "RACKBOOT_TPM=required but this machine has no TPM (/dev/tpmrm0, /dev/tpm0; RACKBOOT_TPM_TCTI)"
        );
    }
    if sealing()? {
        for rel in status(data_dir).plain {
            let path = data_dir.join(&rel);
            let plain = std::fs::read(&path)?;
            replace(&path, &plain)?;
            tracing::info!(path = %path.display(), policy = tpm::POLICY, "sealed the key file to the TPM");
        }
    }
    Ok(status(data_dir))
}

/// Without the `tpm` feature: no TPM is ever found, and sealed files cannot be read.
#[cfg(not(feature = "tpm"))]
mod tpm {
    pub const POLICY: &str = "sha256:7";
    const WHY: &str = "this rackboot was built without TPM support (feature `tpm`)";

    pub fn device() -> Option<String> {
        None
    }

    pub fn seal(_: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        anyhow::bail!(WHY)
    }

    pub fn unseal(_: &[u8], _: &[u8]) -> anyhow::Result<Vec<u8>> {
        anyhow::bail!(WHY)
    }
}

#[cfg(feature = "tpm")]
use super::tpm;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn plain_files_round_trip_private_and_are_reported_not_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bmc-credentials.key");
        create_new(&p, b"k1").unwrap();
        assert_eq!(
            create_new(&p, b"k2").unwrap_err().kind(),
            std::io::ErrorKind::AlreadyExists
        );
        assert_eq!(read(&p).unwrap(), b"k1");
        replace(&p, b"k3").unwrap();
        assert_eq!(read(&p).unwrap(), b"k3");
        let mode = std::fs::metadata(&p).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let st = status(dir.path());
        assert_eq!(st.plain, ["bmc-credentials.key"]);
        assert!(st.summary().starts_with("not sealed"), "{}", st.summary());
    }

    #[test]
    fn a_damaged_sealed_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.key");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(b"{not json");
        std::fs::write(&p, bytes).unwrap();
        let err = read(&p).unwrap_err().to_string();
        assert!(err.contains("ca.key"), "{err}");
        assert!(err.contains("damaged sealed key file"), "{err}");
    }
}
