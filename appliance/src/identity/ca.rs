//! The rack CA: a self-signed ECDSA P-256 root made on first start, or an intermediate signed
//! elsewhere (`rackboot ca csr` → sign upstream → `rackboot ca import`). Files under
//! `<data-dir>/identity/`: `ca.key` (0600), `ca.pem` (the CA first, then its issuers up to the
//! root), and `ca-pending.key` while an intermediate is being signed.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData, RevokedCertParams, SanType,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Clock skew allowed for: certificates start this long before they are issued.
pub const SKEW: Duration = Duration::from_secs(300);

/// The loaded rack CA.
pub struct RackCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate, then its issuers (DER), up to the root.
    chain: Vec<CertificateDer<'static>>,
    chain_pem: String,
}

impl std::fmt::Debug for RackCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RackCa(..)")
    }
}

/// A certificate issued to a node.
#[derive(Debug, Clone)]
pub struct Issued {
    pub serial: String,
    pub pem: String,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
}

/// What `rackboot ca show` prints.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CaInfo {
    pub subject: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    /// `sha256:<hex>` of the root's DER: what nodes get on their kernel command line.
    pub fingerprint: String,
    /// `root` (self-signed, standalone) or `intermediate` (imported).
    pub kind: String,
    pub chain_length: usize,
}

pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("identity")
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    if let Some(parent) = path.parent()
        && let Ok(d) = std::fs::File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A CA key file: plain or sealed to the TPM (`seal::keyfile`), replaced atomically.
fn write_key(path: &Path, pem: &[u8]) -> anyhow::Result<()> {
    crate::seal::keyfile::replace(path, pem)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn read_key(path: &Path) -> anyhow::Result<String> {
    let bytes = crate::seal::keyfile::read(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not PEM", path.display()))
}

fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    Ok(())
}

fn odt(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn now_odt() -> OffsetDateTime {
    odt(crate::store::now_ms())
}

fn random_serial() -> anyhow::Result<(SerialNumber, String)> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| anyhow::anyhow!("no randomness for a serial"))?;
    // Positive and without a leading zero byte, so the hex form is the DER INTEGER's bytes.
    b[0] = (b[0] & 0x7f) | 0x40;
    Ok((SerialNumber::from_slice(&b), hex::encode(b)))
}

/// PEM blocks of `text` that are certificates, as DER.
pub fn pem_certs(text: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("not a PEM certificate chain: {e:?}"))?;
    if certs.is_empty() {
        bail!("no certificate found (expected PEM `-----BEGIN CERTIFICATE-----`)");
    }
    Ok(certs)
}

fn to_pem(ders: &[CertificateDer<'_>]) -> String {
    use base64::Engine;
    let mut out = String::new();
    for d in ders {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(d);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// Checks that `chain[i]` is signed by `chain[i+1]`, that every certificate is a CA and valid
/// now, and that the last is a self-signed root.
pub fn verify_ca_chain(chain: &[CertificateDer<'_>]) -> anyhow::Result<()> {
    let parsed: Vec<X509Certificate<'_>> = chain
        .iter()
        .map(|d| {
            X509Certificate::from_der(d)
                .map(|(_, c)| c)
                .map_err(|e| anyhow::anyhow!("unparsable certificate: {e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let now = x509_parser::time::ASN1Time::now();
    for (i, c) in parsed.iter().enumerate() {
        if !c.validity().is_valid_at(now) {
            bail!("certificate {i} ({}) is not valid now", c.subject());
        }
        if !c.is_ca() {
            bail!("certificate {i} ({}) is not a CA certificate", c.subject());
        }
        let issuer = parsed.get(i + 1).unwrap_or(c);
        c.verify_signature(Some(issuer.public_key())).map_err(|_| {
            if i + 1 == parsed.len() {
                anyhow::anyhow!(
                    "the last certificate ({}) is not a self-signed root: append the chain up to the root",
                    c.subject()
                )
            } else {
                anyhow::anyhow!(
                    "certificate {i} ({}) is not signed by certificate {} ({})",
                    c.subject(),
                    i + 1,
                    issuer.subject()
                )
            }
        })?;
    }
    Ok(())
}

/// `sha256:<hex>` of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der))
    )
}

impl RackCa {
    /// Loads the CA from `data_dir`, creating a self-signed root on first start.
    pub fn open_or_create(data_dir: &Path, cluster: &str) -> anyhow::Result<RackCa> {
        let d = dir(data_dir);
        ensure_dir(&d)?;
        let (key_path, pem_path) = (d.join("ca.key"), d.join("ca.pem"));
        if !key_path.exists() {
            let key = KeyPair::generate().context("cannot generate the CA key")?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, format!("rackboot rack CA ({cluster})"));
            dn.push(DnType::OrganizationName, "rackboot");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_before = now_odt() - SKEW;
            params.not_after = now_odt() + Duration::from_secs(10 * 365 * 86_400);
            params.serial_number = Some(random_serial()?.0);
            let cert = params.self_signed(&key)?;
            write_private(&pem_path, cert.pem().as_bytes())?;
            write_key(&key_path, key.serialize_pem().as_bytes())?;
            tracing::info!(path = %key_path.display(), "created the rack CA (self-signed root)");
        }
        Self::load(&d)
    }

    fn load(d: &Path) -> anyhow::Result<RackCa> {
        let key_pem = read_key(&d.join("ca.key"))?;
        let chain_pem = std::fs::read_to_string(d.join("ca.pem"))
            .with_context(|| format!("cannot read {}", d.join("ca.pem").display()))?;
        let key = KeyPair::from_pem(&key_pem).context("ca.key is not a usable private key")?;
        let chain = pem_certs(&chain_pem).context("ca.pem")?;
        let first = chain.first().context("ca.pem is empty")?;
        let issuer = Issuer::from_ca_cert_der(first, key).context("ca.pem")?;
        Ok(RackCa {
            issuer,
            chain,
            chain_pem,
        })
    }

    /// Starts an intermediate: makes the pending key and returns its CSR (PEM).
    pub fn csr(data_dir: &Path, cluster: &str) -> anyhow::Result<String> {
        let d = dir(data_dir);
        ensure_dir(&d)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("rackboot rack CA ({cluster})"));
        dn.push(DnType::OrganizationName, "rackboot");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let csr = params.serialize_request(&key)?;
        write_key(&d.join("ca-pending.key"), key.serialize_pem().as_bytes())?;
        Ok(csr.pem()?)
    }

    /// Installs an intermediate signed upstream: `chain_pem` is the signed certificate, then
    /// its issuers up to the root. Its key must be the pending one from [`RackCa::csr`].
    pub fn import(data_dir: &Path, chain_pem: &str) -> anyhow::Result<CaInfo> {
        let d = dir(data_dir);
        let pending = d.join("ca-pending.key");
        if !pending.exists() {
            bail!(
                "no pending CA key ({}): run `rackboot ca csr` first",
                pending.display()
            );
        }
        let key_pem = read_key(&pending)?;
        let key = KeyPair::from_pem(&key_pem)?;
        let chain = pem_certs(chain_pem)?;
        let first = chain.first().context("empty chain")?;
        let (_, leaf) = X509Certificate::from_der(first)
            .map_err(|e| anyhow::anyhow!("the first certificate does not parse: {e}"))?;
        if leaf.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            bail!(
                "the first certificate is not for the pending key: import the certificate signed from `rackboot ca csr`'s request"
            );
        }
        verify_ca_chain(&chain)?;
        Issuer::from_ca_cert_der(first, KeyPair::from_pem(&key_pem)?)
            .context("the signed certificate")?;
        write_private(&d.join("ca.pem"), to_pem(&chain).as_bytes())?;
        write_key(&d.join("ca.key"), key_pem.as_bytes())?;
        let _ = std::fs::remove_file(&pending);
        Self::load(&d)?.info()
    }

    /// The CA and its issuers, PEM (what nodes trust).
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// The CA's own certificate (the trust anchor for client certificates).
    pub fn cert_der(&self) -> Option<&CertificateDer<'static>> {
        self.chain.first()
    }

    pub fn info(&self) -> anyhow::Result<CaInfo> {
        let first = self.chain.first().context("no CA certificate")?;
        let root = self.chain.last().context("no CA certificate")?;
        let (_, c) = X509Certificate::from_der(first)
            .map_err(|e| anyhow::anyhow!("the CA certificate does not parse: {e}"))?;
        Ok(CaInfo {
            subject: c.subject().to_string(),
            issuer: c.issuer().to_string(),
            not_before: c.validity().not_before.to_string(),
            not_after: c.validity().not_after.to_string(),
            fingerprint: fingerprint(root),
            kind: if self.chain.len() > 1 {
                "intermediate".into()
            } else {
                "root".into()
            },
            chain_length: self.chain.len(),
        })
    }

    /// `sha256:<hex>` of the root.
    pub fn fingerprint(&self) -> String {
        self.chain
            .last()
            .map(|r| fingerprint(r))
            .unwrap_or_default()
    }

    /// Signs a node's CSR as `xname`: SAN URI `spiffe://<cluster>/node/<xname>` and DNS
    /// `<xname>`, ClientAuth, a random serial, `not_before` backdated by [`SKEW`]. The CSR's own
    /// names are checked by the caller; only its key is used.
    pub fn issue_node(
        &self,
        csr: &CertificateSigningRequestParams,
        xname: &str,
        cluster: &str,
        lifetime: Duration,
    ) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, xname);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            SanType::URI(spiffe_id(cluster, xname).try_into()?),
            SanType::DnsName(xname.to_ascii_lowercase().try_into()?),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let (serial, serial_hex) = random_serial()?;
        params.serial_number = Some(serial);
        let now = crate::store::now_ms();
        let nb = now - i64::try_from(SKEW.as_millis()).unwrap_or(0);
        let na = now + i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX / 2);
        params.not_before = odt(nb);
        params.not_after = odt(na);
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(Issued {
            serial: serial_hex,
            pem: cert.pem() + &self.chain_pem,
            not_before_ms: nb,
            not_after_ms: na,
        })
    }

    /// A server certificate for rackboot's HTTPS listener: the chain (leaf first) and its key.
    pub fn issue_server(
        &self,
        names: &[String],
        lifetime: Duration,
    ) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_else(|| "rackboot".into()),
        );
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?.0);
        params.not_before = now_odt() - SKEW;
        params.not_after = now_odt() + lifetime;
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain.iter().cloned());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((chain, key))
    }

    /// A CRL of `revoked` (hex serial, revocation time in ms), valid for `valid_for`.
    pub fn crl(
        &self,
        revoked: &[(String, i64)],
        number: u64,
        valid_for: Duration,
    ) -> anyhow::Result<Vec<u8>> {
        let now = now_odt();
        let params = CertificateRevocationListParams {
            this_update: now - SKEW,
            next_update: now + valid_for,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .filter_map(|(serial, at)| {
                    Some(RevokedCertParams {
                        serial_number: SerialNumber::from_slice(&hex::decode(serial).ok()?),
                        revocation_time: odt(*at),
                        reason_code: None,
                        invalidity_date: None,
                    })
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.der().to_vec())
    }
}

pub fn spiffe_id(cluster: &str, xname: &str) -> String {
    format!("spiffe://{cluster}/node/{xname}")
}

/// The names a CSR asks for (CN and SANs), as text.
pub fn requested_names(csr: &CertificateSigningRequestParams) -> Vec<String> {
    let mut names: Vec<String> = csr
        .params
        .distinguished_name
        .iter()
        .filter(|(t, _)| **t == DnType::CommonName)
        .map(|(_, v)| match v {
            rcgen::DnValue::Utf8String(s) => s.clone(),
            rcgen::DnValue::PrintableString(s) => s.as_str().to_owned(),
            rcgen::DnValue::Ia5String(s) => s.as_str().to_owned(),
            _ => "<unreadable name>".to_owned(),
        })
        .collect();
    for san in &csr.params.subject_alt_names {
        names.push(match san {
            SanType::DnsName(s) => s.as_str().to_owned(),
            SanType::URI(s) => s.as_str().to_owned(),
            SanType::Rfc822Name(s) => s.as_str().to_owned(),
            SanType::IpAddress(ip) => ip.to_string(),
            _ => "<other name>".to_owned(),
        });
    }
    names
}

/// Every name the CSR asks for must be the node's own: its xname (CN or DNS), its SPIFFE ID,
/// or its hostname.
pub fn check_csr_names(
    csr: &CertificateSigningRequestParams,
    xname: &str,
    cluster: &str,
    hostname: &str,
) -> Result<(), String> {
    let allowed = [
        xname.to_ascii_lowercase(),
        spiffe_id(cluster, xname).to_ascii_lowercase(),
        hostname.to_ascii_lowercase(),
    ];
    for n in requested_names(csr) {
        if !allowed.contains(&n.to_ascii_lowercase()) {
            return Err(format!(
                "the CSR asks for {n:?}, but the token is for {xname}: a node may only ask for its own identity"
            ));
        }
    }
    Ok(())
}

/// The subject public key (raw bits) and hex serial of a DER certificate.
pub fn cert_key_and_serial(der: &[u8]) -> Option<(Vec<u8>, String)> {
    let (_, c) = X509Certificate::from_der(der).ok()?;
    Some((
        c.public_key().subject_public_key.data.to_vec(),
        hex::encode(c.raw_serial()),
    ))
}

/// Whether the CSR's key is `key` (raw subject public key bits).
pub fn csr_key_is(csr: &CertificateSigningRequestParams, key: &[u8]) -> bool {
    csr.public_key.der_bytes() == key
}
