//! Secrets sealed at rest: AES-256-GCM with a key file in the data dir (created 0600 on first
//! use). The secret's name is the associated data, so a sealed value cannot be moved to another
//! row. Discovery seals BMC passwords (`<data-dir>/bmc-credentials.key`), identity seals node
//! secrets (`<data-dir>/identity/secrets.key`). The key files themselves, and every other
//! private key file of the data dir, are kept by `keyfile`: plain, or sealed to the TPM.
//!
//! Owns: AES-256-GCM sealing keys in the data dir, private key files at rest (plain or sealed to
//! the TPM under a PCR 7 policy). May call: nothing of ours.

use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

pub mod keyfile;
#[cfg(feature = "tpm")]
mod tpm;

/// The sealing key.
pub struct Sealer(LessSafeKey);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// Loads the key from `data_dir`, creating it (0600) if there is none.
    pub fn open(data_dir: &Path) -> anyhow::Result<Sealer> {
        Self::open_file(&data_dir.join("bmc-credentials.key"), "BMC credentials")
    }

    /// Loads the key at `path` (for sealing `what`), creating it (0600) if there is none.
    pub fn open_file(path: &Path, what: &str) -> anyhow::Result<Sealer> {
        let bytes = match keyfile::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                aws_lc_rs::rand::fill(&mut key)
                    .map_err(|_| anyhow::anyhow!("no randomness for the {what} key"))?;
                match keyfile::create_new(path, &key) {
                    Ok(()) => key.to_vec(),
                    // Another process made it first: use its key.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => keyfile::read(path)?,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        };
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key", path.display()))?;
        Ok(Sealer(LessSafeKey::new(key)))
    }

    /// nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, target: &str, secret: &str) -> anyhow::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| anyhow::anyhow!("no randomness"))?;
        let mut data = secret.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(target.as_bytes()),
                &mut data,
            )
            .map_err(|_| anyhow::anyhow!("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(out)
    }

    pub fn open_sealed(&self, target: &str, sealed: &[u8]) -> anyhow::Result<String> {
        let (nonce, rest) = sealed
            .split_at_checked(NONCE_LEN)
            .ok_or_else(|| anyhow::anyhow!("sealed credential too short"))?;
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow::anyhow!("bad nonce"))?;
        let mut data = rest.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(target.as_bytes()), &mut data)
            .map_err(|_| {
                anyhow::anyhow!(
                    "sealed data for {target} does not decrypt (key changed or data corrupt)"
                )
            })?;
        Ok(String::from_utf8(plain.to_vec())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_key_is_private_and_bound_to_target() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sealer::open(dir.path()).unwrap();
        let sealed = s.seal("10.0.0.5", "hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(s.open_sealed("10.0.0.5", &sealed).unwrap(), "hunter2");
        assert!(
            s.open_sealed("10.0.0.6", &sealed).is_err(),
            "bound to its target"
        );
        let again = Sealer::open(dir.path()).unwrap();
        assert_eq!(again.open_sealed("10.0.0.5", &sealed).unwrap(), "hunter2");
        let mode = std::fs::metadata(dir.path().join("bmc-credentials.key"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}
