//! TLS policies for BMCs: a CA bundle, pin-on-first-use, or (explicitly) no verification.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Marker in the error a pin mismatch produces (matched to report it clearly).
pub(crate) const PIN_MISMATCH: &str = "rackboot-pin-mismatch";

/// How a BMC's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Verify against these PEM CA certificates (and the host name).
    CaBundle(String),
    /// Pin-on-first-use: `None` accepts the first certificate seen (the caller reads it with
    /// `Bmc::certificate_sha256` and stores it); `Some(sha256 hex)` accepts only that one.
    Pin(Option<String>),
    /// Accept any certificate. An explicit opt-in, logged on every use.
    Insecure,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub(crate) fn client_config(
    policy: &TlsPolicy,
    seen: Arc<Mutex<Option<String>>>,
    base: &str,
) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match policy {
        TlsPolicy::CaBundle(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = rustls::pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<CertificateDer<'static>>, _>>()
                .map_err(|e| format!("CA bundle: {e}"))?;
            if certs.is_empty() {
                return Err("CA bundle has no certificates".into());
            }
            for c in certs {
                roots.add(c).map_err(|e| format!("CA bundle: {e}"))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsPolicy::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pin: pin.clone(),
                seen,
                provider: provider(),
                insecure: false,
            }))
            .with_no_client_auth(),
        TlsPolicy::Insecure => {
            tracing::warn!(bmc = %base, "TLS verification is OFF for this BMC (explicit opt-in)");
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    pin: None,
                    seen,
                    provider: provider(),
                    insecure: true,
                }))
                .with_no_client_auth()
        }
    };
    Ok(config)
}

/// Accepts the leaf certificate whose SHA-256 is `pin` (any, when unpinned), and still
/// checks the handshake signatures with it, so the peer must hold the pinned key.
#[derive(Debug)]
struct Pinned {
    pin: Option<String>,
    seen: Arc<Mutex<Option<String>>>,
    provider: Arc<CryptoProvider>,
    insecure: bool,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, end_entity.as_ref());
        let hex = hex::encode(digest.as_ref());
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(hex.clone());
        match &self.pin {
            Some(p) if !self.insecure && !p.eq_ignore_ascii_case(&hex) => {
                Err(rustls::Error::General(format!("{PIN_MISMATCH}: got {hex}")))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
