//! The server's half of TPM 2.0 attestation, with aws-lc-rs primitives only: the EK certificate
//! checked against the manufacturer CA bundle, TPM2_MakeCredential (TPM 2.0 Part 1 §24), and
//! the parsers and checks for an AK public area and a TPM2_Quote. Every input is hostile: the
//! parsers are bounds-checked readers that return errors, never panic.

use aws_lc_rs::{cipher, digest, hmac, kdf, rand, rsa, signature};
use x509_parser::prelude::{FromDer, X509Certificate};

/// TPM_ALG_* and TPM_ST_* values (TPM 2.0 Part 2 §6).
const ALG_RSA: u16 = 0x0001;
const ALG_SHA256: u16 = 0x000B;
const ALG_NULL: u16 = 0x0010;
const ALG_RSASSA: u16 = 0x0014;
const GENERATED_VALUE: u32 = 0xff54_4347;
const ST_ATTEST_QUOTE: u16 = 0x8018;

// TPMA_OBJECT bits an attestation key must have (Part 2 §8.3).
const FIXED_TPM: u32 = 1 << 1;
const FIXED_PARENT: u32 = 1 << 4;
const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
const RESTRICTED: u32 = 1 << 16;
const DECRYPT: u32 = 1 << 17;
const SIGN: u32 = 1 << 18;

/// The PCRs a quote covers: 0–7 of the SHA-256 bank (firmware, boot loader, their config).
pub const QUOTED_PCRS: std::ops::Range<usize> = 0..8;

/// A bounds-checked big-endian reader over TPM marshalled bytes.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!("{} is truncated", self.what));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let b = self.take(N)?;
        <[u8; N]>::try_from(b).map_err(|_| format!("{} is truncated", self.what))
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A TPM2B: a u16 size, then that many bytes.
    fn sized(&mut self) -> Result<&'a [u8], String> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    fn done(&self) -> Result<(), String> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} has {} trailing bytes",
                self.what,
                self.buf.len()
            ))
        }
    }
}

fn tpm2b(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 2);
    v.extend_from_slice(&u16::try_from(data.len()).unwrap_or(u16::MAX).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, data).as_ref().to_vec()
}

/// An attestation key's public area (a marshalled TPMT_PUBLIC), checked to be what an AK must
/// be: an RSA restricted signing key (RSASSA, SHA-256) created inside a TPM that cannot leave it.
#[derive(Debug, Clone)]
pub struct AkPublic {
    /// The TPM name: nameAlg (SHA-256) then the digest of the public area.
    pub name: Vec<u8>,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl AkPublic {
    /// Parses a TPMT_PUBLIC (without the TPM2B size; one with a size that matches is accepted).
    pub fn parse(bytes: &[u8]) -> Result<AkPublic, String> {
        let bytes = match bytes {
            [a, b, rest @ ..] if usize::from(u16::from_be_bytes([*a, *b])) == rest.len() => rest,
            _ => bytes,
        };
        let mut r = Reader::new(bytes, "the AK public area");
        if r.u16()? != ALG_RSA {
            return Err("the AK is not an RSA key (only RSA-2048 AKs are accepted)".into());
        }
        if r.u16()? != ALG_SHA256 {
            return Err("the AK's name algorithm is not SHA-256".into());
        }
        let attrs = r.u32()?;
        let need = FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | RESTRICTED | SIGN;
        if attrs & need != need || attrs & DECRYPT != 0 {
            return Err(format!(
                "the AK's attributes {attrs:#010x} are not those of an attestation key \
                 (fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign; not decrypt)"
            ));
        }
        let _policy = r.sized()?;
        if r.u16()? != ALG_NULL {
            return Err("the AK has a symmetric algorithm: it is a storage key, not an AK".into());
        }
        let scheme = r.u16()?;
        if scheme != ALG_RSASSA || r.u16()? != ALG_SHA256 {
            return Err("the AK's signing scheme is not RSASSA with SHA-256".into());
        }
        let bits = r.u16()?;
        if bits != 2048 {
            return Err(format!("the AK has {bits} bits; 2048 are expected"));
        }
        let exp = r.u32()?;
        let n = r.sized()?.to_vec();
        r.done()?;
        if n.len() != 256 {
            return Err("the AK's modulus is not 2048 bits".into());
        }
        let exp = if exp == 0 { 65_537 } else { exp };
        let e = exp
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        let mut name = ALG_SHA256.to_be_bytes().to_vec();
        name.extend(sha256(bytes));
        Ok(AkPublic { name, n, e })
    }

    /// Checks `sig` (a marshalled TPMT_SIGNATURE) over `message` with this key.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> Result<(), String> {
        let mut r = Reader::new(sig, "the quote signature");
        if r.u16()? != ALG_RSASSA || r.u16()? != ALG_SHA256 {
            return Err("the quote signature is not RSASSA with SHA-256".into());
        }
        let s = r.sized()?;
        r.done()?;
        let key = signature::RsaPublicKeyComponents {
            n: &self.n,
            e: &self.e,
        };
        key.verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, s)
            .map_err(|_| "the quote signature does not verify with the AK".to_owned())
    }
}

/// What a verified quote says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// The PCR values 0–7 (SHA-256 bank), as the node reported them and the quote covers.
    pub pcrs: Vec<Vec<u8>>,
}

/// Checks a TPM2_Quote: `attest` (a marshalled TPMS_ATTEST) is signed by `ak`, carries
/// `extra_data` (the server nonce bound to the CSR), selects exactly PCRs 0–7 of the SHA-256
/// bank, and its PCR digest is the digest of the `pcrs` the node reported.
pub fn verify_quote(
    ak: &AkPublic,
    attest: &[u8],
    sig: &[u8],
    extra_data: &[u8],
    pcrs: &[Vec<u8>],
) -> Result<Quote, String> {
    ak.verify(attest, sig)?;
    let mut r = Reader::new(attest, "the quote");
    if r.u32()? != GENERATED_VALUE {
        return Err("the quote was not generated by a TPM (magic)".into());
    }
    if r.u16()? != ST_ATTEST_QUOTE {
        return Err("the attestation is not a quote".into());
    }
    let _signer = r.sized()?;
    if r.sized()? != extra_data {
        return Err(
            "the quote does not cover this challenge's nonce and CSR (a replayed quote, or a CSR \
             that was swapped)"
                .into(),
        );
    }
    // TPMS_CLOCK_INFO (clock u64, resetCount u32, restartCount u32, safe u8) and firmwareVersion.
    r.take(17 + 8)?;
    if r.u32()? != 1 {
        return Err("the quote must select one PCR bank (SHA-256)".into());
    }
    if r.u16()? != ALG_SHA256 {
        return Err("the quote's PCR bank is not SHA-256".into());
    }
    let size = r.u8()?;
    let select = r.take(usize::from(size))?;
    if select.first() != Some(&0xff) || select.iter().skip(1).any(|b| *b != 0) {
        return Err("the quote must select exactly PCRs 0-7".into());
    }
    let digest = r.sized()?;
    r.done()?;
    if pcrs.len() != QUOTED_PCRS.len() || pcrs.iter().any(|p| p.len() != 32) {
        return Err("give the eight SHA-256 values of PCRs 0-7".into());
    }
    if sha256(&pcrs.concat()) != digest {
        return Err("the reported PCR values are not the ones the quote covers".into());
    }
    Ok(Quote {
        pcrs: pcrs.to_vec(),
    })
}

/// `Label || 0 || ContextU || ContextV || [bits]` and SP 800-108 counter-mode HMAC-SHA256:
/// the TPM's KDFa (Part 1 §11.4.10.2).
fn kdfa(key: &[u8], label: &str, context_u: &[u8], bits: u32) -> Result<Vec<u8>, String> {
    let mut info = label.as_bytes().to_vec();
    info.push(0);
    info.extend_from_slice(context_u);
    info.extend_from_slice(&bits.to_be_bytes());
    let mut out = vec![0u8; usize::try_from(bits / 8).unwrap_or(0)];
    let alg = kdf::get_kbkdf_ctr_hmac_algorithm(kdf::KbkdfCtrHmacAlgorithmId::Sha256)
        .ok_or("no KBKDF")?;
    kdf::kbkdf_ctr_hmac(alg, key, &info, &mut out).map_err(|_| "KDFa failed")?;
    Ok(out)
}

/// The output of TPM2_MakeCredential.
#[derive(Debug, Clone)]
pub struct Credential {
    /// TPM2B_ID_OBJECT.
    pub blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET.
    pub secret: Vec<u8>,
}

/// TPM2_MakeCredential for an RSA EK with the default EK template (name algorithm SHA-256,
/// AES-128-CFB): only the TPM holding that EK, with an object named `ak_name` loaded, can
/// recover `credential` (TPM2_ActivateCredential).
pub fn make_credential(
    ek_spki_der: &[u8],
    ak_name: &[u8],
    credential: &[u8],
) -> Result<Credential, String> {
    if credential.is_empty() || credential.len() > 32 {
        return Err("a credential is 1-32 bytes".into());
    }
    let mut seed = [0u8; 32];
    rand::fill(&mut seed).map_err(|_| "no randomness")?;
    // The seed goes to the EK with RSA-OAEP-SHA256, label "IDENTITY" with its NUL (§24.4).
    let ek = rsa::PublicEncryptingKey::from_der(ek_spki_der)
        .map_err(|e| format!("the EK is not a usable RSA key: {e}"))?;
    let ek = rsa::OaepPublicEncryptingKey::new(ek).map_err(|_| "the EK is not an RSA key")?;
    let mut enc = vec![0u8; ek.ciphertext_size()];
    let enc = ek
        .encrypt(
            &rsa::OAEP_SHA256_MGF1SHA256,
            &seed,
            &mut enc,
            Some(b"IDENTITY\0"),
        )
        .map_err(|_| "RSA-OAEP encryption to the EK failed")?
        .to_vec();
    // §24.4: symKey = KDFa(seed, "STORAGE", name), the credential (a TPM2B) encrypted with
    // AES-128-CFB and a zero IV, then an HMAC over it and the name with KDFa(seed, "INTEGRITY").
    let sym = kdfa(&seed, "STORAGE", ak_name, 128)?;
    let mut enc_identity = tpm2b(credential);
    let key = cipher::UnboundCipherKey::new(&cipher::AES_128, &sym).map_err(|_| "AES key")?;
    cipher::EncryptingKey::cfb128(key)
        .map_err(|_| "AES-CFB")?
        .less_safe_encrypt(
            &mut enc_identity,
            cipher::EncryptionContext::Iv128(aws_lc_rs::iv::FixedLength::from([0u8; 16])),
        )
        .map_err(|_| "AES-CFB encryption failed")?;
    let hkey = kdfa(&seed, "INTEGRITY", &[], 256)?;
    let mut mac = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, &hkey));
    mac.update(&enc_identity);
    mac.update(ak_name);
    let mut id_object = tpm2b(mac.sign().as_ref());
    id_object.extend_from_slice(&enc_identity);
    Ok(Credential {
        blob: tpm2b(&id_object),
        secret: tpm2b(&enc),
    })
}

/// `sha256:<hex>` of a public key's SubjectPublicKeyInfo (DER): how an EK is named in the
/// inventory (`openssl x509 -pubkey -noout -in ek.pem | openssl pkey -pubin -outform DER |
/// sha256sum`).
pub fn ek_hash(spki_der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha256(spki_der)))
}

/// An EK certificate that chains to the manufacturer CA bundle.
#[derive(Debug, Clone)]
pub struct EkCert {
    /// The EK's SubjectPublicKeyInfo (DER).
    pub spki: Vec<u8>,
    /// [`ek_hash`] of it.
    pub hash: String,
    /// The issuer that signed it (its subject, for the audit).
    pub issuer: String,
}

/// Checks an EK certificate against the manufacturer CA bundle (PEM). Every certificate in the
/// bundle is a trust anchor; the EK certificate must be signed by one of them whose subject is
/// its issuer, that is a CA and valid now. EK certificates carry extensions that general-purpose
/// path builders refuse (an empty subject with a critical SubjectAltName of TPM attributes), so
/// the one link is checked here: the signature over the TBS bytes with aws-lc-rs and the
/// issuer's key, for the signature algorithms EK CAs use.
pub fn check_ek_cert(der: &[u8], bundle_pem: &str) -> Result<EkCert, String> {
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|e| format!("the EK certificate does not parse: {e}"))?;
    // NV indices are often larger than the certificate: padding is fine, other bytes are not.
    if rest.iter().any(|b| *b != 0 && *b != 0xff) {
        return Err("the EK certificate has trailing bytes".into());
    }
    let spki = cert.tbs_certificate.subject_pki.raw.to_vec();
    if cert.tbs_certificate.subject_pki.algorithm.algorithm
        != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION
    {
        return Err("the EK is not an RSA key (only RSA-2048 EKs are accepted)".into());
    }
    let anchors = super::ca::pem_certs(bundle_pem)
        .map_err(|e| format!("the manufacturer CA bundle (identity.tpm.ek_ca): {e}"))?;
    let now = x509_parser::time::ASN1Time::now();
    let mut why = String::from("no certificate in the manufacturer CA bundle issued it");
    for a in &anchors {
        let Ok((_, ca)) = X509Certificate::from_der(a) else {
            continue;
        };
        if ca.subject().as_raw() != cert.issuer().as_raw() {
            continue;
        }
        if !ca.is_ca() {
            why = format!("{} is not a CA", ca.subject());
            continue;
        }
        if !ca.validity().is_valid_at(now) {
            why = format!("the manufacturer CA {} is not valid now", ca.subject());
            continue;
        }
        match verify_signed_by(&cert, &ca) {
            Ok(()) => {
                return Ok(EkCert {
                    hash: ek_hash(&spki),
                    spki,
                    issuer: ca.subject().to_string(),
                });
            }
            Err(e) => why = e,
        }
    }
    Err(format!(
        "the EK certificate (issuer {}) does not chain to the manufacturer CA bundle: {why}",
        cert.issuer()
    ))
}

fn verify_signed_by(cert: &X509Certificate<'_>, ca: &X509Certificate<'_>) -> Result<(), String> {
    use x509_parser::oid_registry as oid;
    let alg = &cert.signature_algorithm.algorithm;
    let v: &'static dyn signature::VerificationAlgorithm = if *alg == oid::OID_PKCS1_SHA256WITHRSA {
        &signature::RSA_PKCS1_2048_8192_SHA256
    } else if *alg == oid::OID_PKCS1_SHA384WITHRSA {
        &signature::RSA_PKCS1_2048_8192_SHA384
    } else if *alg == oid::OID_PKCS1_SHA512WITHRSA {
        &signature::RSA_PKCS1_2048_8192_SHA512
    } else if *alg == oid::OID_SIG_ECDSA_WITH_SHA256 {
        &signature::ECDSA_P256_SHA256_ASN1
    } else if *alg == oid::OID_SIG_ECDSA_WITH_SHA384 {
        &signature::ECDSA_P384_SHA384_ASN1
    } else {
        return Err(format!(
            "signature algorithm {alg} is not supported for EK certificates"
        ));
    };
    let key = &ca.tbs_certificate.subject_pki.subject_public_key.data;
    signature::UnparsedPublicKey::new(v, key)
        .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .map_err(|_| format!("the signature of {} does not verify", ca.subject()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parsers_refuse_truncated_and_garbage_input() {
        for n in 0..64 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 % 251) as u8).collect();
            assert!(AkPublic::parse(&junk).is_err());
            assert!(check_ek_cert(&junk, "").is_err());
        }
    }

    #[test]
    fn kdfa_is_counter_mode_hmac_with_label_nul_and_bit_length() {
        // One block by hand: HMAC(key, [1]_4 || "STORAGE" || 0 || ctx || [128]_4), truncated.
        let key = [7u8; 32];
        let ctx = [1u8, 2, 3];
        let mut m = 1u32.to_be_bytes().to_vec();
        m.extend(b"STORAGE\0");
        m.extend(ctx);
        m.extend(128u32.to_be_bytes());
        let want = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), &m);
        assert_eq!(
            kdfa(&key, "STORAGE", &ctx, 128).unwrap(),
            want.as_ref()[..16]
        );
    }
}
