//! The local token issuer: one ES256 (P-256) key in `<data-dir>/auth/issuer.pem`.
//!
//! The key is PKCS#8 PEM, created on first use with the directory at 0700 and the file at 0600:
//! whoever can read it can mint any token, so reading it is equivalent to `admin`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::AuthError;

/// `iss` and `aud` of every token the local issuer mints.
pub const LOCAL_ISSUER: &str = "rackboot";
pub const LOCAL_AUDIENCE: &str = "rackboot";

const KEY_FILE: &str = "issuer.pem";
const PEM_LABEL: &str = "PRIVATE KEY";

/// The local signing key with its public half, as a JWK and as a verification key.
#[derive(Clone)]
pub struct LocalIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: EcJwk,
}

impl std::fmt::Debug for LocalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("LocalIssuer")
            .field("kid", &self.jwk.kid)
            .finish_non_exhaustive()
    }
}

/// A public P-256 key in JWK form (RFC 7517 §4, RFC 7518 §6.2).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EcJwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub y: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

/// The claims the local issuer writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MintedClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub scope: String,
    pub jti: String,
}

impl LocalIssuer {
    /// The key file under `data_dir`.
    pub fn key_path(data_dir: &Path) -> PathBuf {
        data_dir.join("auth").join(KEY_FILE)
    }

    /// Loads the key, creating it (and `<data-dir>/auth`, 0700) if it does not exist yet.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, AuthError> {
        let path = Self::key_path(data_dir);
        match crate::seal::keyfile::read(&path) {
            Ok(pem) => Self::from_pem(&pem, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(&path),
            Err(e) => Err(AuthError::KeyIo(path, e)),
        }
    }

    /// Loads an existing key; `Ok(None)` if there is none or it is not readable by this user
    /// (the CLI then falls back to `--token`).
    pub fn open_existing(data_dir: &Path) -> Result<Option<Self>, AuthError> {
        let path = Self::key_path(data_dir);
        match crate::seal::keyfile::read(&path) {
            Ok(pem) => Self::from_pem(&pem, &path).map(Some),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(AuthError::KeyIo(path, e)),
        }
    }

    /// The key id: the RFC 7638 JWK thumbprint (what tokensmith uses too).
    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }

    pub fn jwk(&self) -> &EcJwk {
        &self.jwk
    }

    /// The public key set (RFC 7517 §5) served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.jwk] })
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// Mints a token for `subject` with `scopes`, valid from now for `ttl`.
    pub fn mint(
        &self,
        subject: &str,
        scopes: &[String],
        ttl: Duration,
    ) -> Result<String, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| AuthError::Crypto("random"))?;
        let claims = MintedClaims {
            iss: LOCAL_ISSUER.to_owned(),
            aud: LOCAL_AUDIENCE.to_owned(),
            sub: subject.to_owned(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl.as_secs()),
            scope: scopes.join(" "),
            jti: hex::encode(jti),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.jwk.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(AuthError::Sign)
    }

    /// Signs arbitrary claims with the local key (fuzz targets reach the claim checks with it).
    #[cfg(feature = "fuzzing")]
    pub fn sign_claims(&self, claims: &serde_json::Value) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.jwk.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(AuthError::Sign)
    }

    fn create(path: &Path) -> Result<Self, AuthError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir).map_err(|e| AuthError::KeyIo(dir.to_path_buf(), e))?;
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| AuthError::Crypto("P-256 key generation"))?;
        let pem = to_pem(pkcs8.as_ref());
        // create_new: if another process raced us, keep its key (read it back below).
        match crate::seal::keyfile::create_new(path, pem.as_bytes()) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "created the local token issuer key");
                Self::from_pem(pem.as_bytes(), path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let pem = crate::seal::keyfile::read(path)
                    .map_err(|e| AuthError::KeyIo(path.to_path_buf(), e))?;
                Self::from_pem(&pem, path)
            }
            Err(e) => Err(AuthError::KeyIo(path.to_path_buf(), e)),
        }
    }

    fn from_pem(pem: &[u8], path: &Path) -> Result<Self, AuthError> {
        let bad = || AuthError::BadKey(path.to_path_buf());
        let der = from_pem(pem).ok_or_else(bad)?;
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).map_err(|_| bad())?;
        // Uncompressed SEC1 point: 0x04 || x (32) || y (32).
        let point = pair.public_key().as_ref();
        let (x, y) = match point {
            [0x04, rest @ ..] if rest.len() == 64 => rest.split_at(32),
            _ => return Err(bad()),
        };
        let x = URL_SAFE_NO_PAD.encode(x);
        let y = URL_SAFE_NO_PAD.encode(y);
        let kid = thumbprint(&x, &y);
        Ok(Self {
            encoding: EncodingKey::from_ec_der(&der),
            decoding: DecodingKey::from_ec_der(point),
            jwk: EcJwk {
                kty: "EC".into(),
                crv: "P-256".into(),
                x,
                y,
                kid,
                alg: "ES256".into(),
                use_: "sig".into(),
            },
        })
    }
}

/// RFC 7638 §3.2: SHA-256 over the required members in lexicographic order, no whitespace.
fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn to_pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {PEM_LABEL}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {PEM_LABEL}-----\n"));
    out
}

fn from_pem(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let begin = format!("-----BEGIN {PEM_LABEL}-----");
    let end = format!("-----END {PEM_LABEL}-----");
    let start = text.find(&begin)?.checked_add(begin.len())?;
    let stop = start.checked_add(text.get(start..)?.find(&end)?)?;
    let body: String = text
        .get(start..stop)?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(body).ok()
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // An existing directory keeps its mode from `recursive`; tighten it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn key_is_created_private_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = LocalIssuer::load_or_create(dir.path()).unwrap();
        let b = LocalIssuer::load_or_create(dir.path()).unwrap();
        assert_eq!(a.kid(), b.kid());
        let path = LocalIssuer::key_path(dir.path());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
    }

    #[test]
    fn open_existing_without_key_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(LocalIssuer::open_existing(dir.path()).unwrap().is_none());
    }
}
