//! `rackboot agent tpm-enroll`: enrollment under policy `tpm`, with the node's TPM (feature
//! `tpm`: tss-esapi over libtss2).
//!
//! No join token and no CA fingerprint: the node reads its EK certificate from the TPM, makes
//! an AK under the EK, asks rackboot for a credential, recovers its secret with
//! TPM2_ActivateCredential, quotes PCRs 0–7 over `SHA-256(nonce || csr)` and sends the proof.
//! It trusts the CA chain in the answer only if the answer's HMAC, keyed with the recovered
//! secret, verifies (and, when the command line also carries `rackboot.ca=`, only if the root
//! has that fingerprint); a refusal is printed and appended to `<dir>/refused.log`.

use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tss_esapi::abstraction::{ak, ek};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::AuthHandle;
use tss_esapi::interface_types::algorithm::{
    AsymmetricAlgorithm, HashingAlgorithm, SignatureSchemeAlgorithm,
};
use tss_esapi::interface_types::session_handles::PolicySession;
use tss_esapi::structures::{
    Data, EncryptedSecret, IdObject, PcrSelectionListBuilder, PcrSlot, SignatureScheme,
    SymmetricDefinition,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;

use super::agent::{AgentArgs, new_csr, parse_cmdline, store};
use super::tpm::{self, Challenge, TpmEnrolled};
use super::{ca, tpm_wire};

const PCRS: [PcrSlot; 8] = [
    PcrSlot::Slot0,
    PcrSlot::Slot1,
    PcrSlot::Slot2,
    PcrSlot::Slot3,
    PcrSlot::Slot4,
    PcrSlot::Slot5,
    PcrSlot::Slot6,
    PcrSlot::Slot7,
];

/// The TPM's TCTI: `tcti`, else the resource manager device, else the raw device.
fn tcti(tcti: Option<&str>) -> anyhow::Result<TctiNameConf> {
    let name = match tcti {
        Some(t) => t.to_owned(),
        None if Path::new("/dev/tpmrm0").exists() => "device:/dev/tpmrm0".into(),
        None if Path::new("/dev/tpm0").exists() => "device:/dev/tpm0".into(),
        None => bail!(
            "this node has no TPM (/dev/tpmrm0, /dev/tpm0): it cannot enroll under policy tpm"
        ),
    };
    TctiNameConf::from_str(&name).with_context(|| format!("TCTI {name:?}"))
}

/// What the TPM says for one enrollment.
struct Attested {
    ek_cert: Vec<u8>,
    ak_public: Vec<u8>,
}

/// Strips a TPM2B size prefix (the wire carries TPM2B; tss-esapi takes the contents).
fn tpm2b_body(b: &[u8]) -> anyhow::Result<Vec<u8>> {
    match b {
        [hi, lo, rest @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() => {
            Ok(rest.to_vec())
        }
        _ => bail!("malformed TPM2B from rackboot"),
    }
}

fn refused(dir: &Path, why: &str) {
    eprintln!("rackboot agent: REFUSED: {why}");
    let _ = std::fs::create_dir_all(dir);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("refused.log"))
    {
        let _ = writeln!(f, "{} {why}", crate::store::now_ms());
    }
}

async fn post<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    body: &impl serde::Serialize,
    what: &str,
) -> anyhow::Result<T> {
    let resp = http
        .post(url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("cannot reach rackboot at {url}"))?;
    let status = resp.status();
    let bytes = super::agent::body(resp).await?;
    if !status.is_success() {
        let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("detail")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        bail!("{what} refused ({status}): {detail}");
    }
    serde_json::from_slice(&bytes).with_context(|| format!("{what}: unexpected answer"))
}

/// `rackboot agent tpm-enroll`.
pub async fn enroll(args: AgentArgs, tcti_name: Option<String>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.cmdline)
        .with_context(|| format!("cannot read {}", args.cmdline.display()))?;
    let p = parse_cmdline(&text);
    let xname = p.xname.context("no xname= on the kernel command line")?;
    let url = args
        .url
        .clone()
        .or(p.url)
        .context("no rackboot.url= on the kernel command line")?;
    let url = url.trim_end_matches('/').to_owned();
    match enroll_inner(&args, tcti_name.as_deref(), &xname, &url, p.ca.as_deref()).await {
        Ok(()) => Ok(()),
        Err(e) => {
            refused(&args.dir, &format!("{e:#}"));
            Err(e)
        }
    }
}

async fn enroll_inner(
    args: &AgentArgs,
    tcti_name: Option<&str>,
    xname: &str,
    url: &str,
    fingerprint: Option<&str>,
) -> anyhow::Result<()> {
    let mut ctx = tss_esapi::Context::new(tcti(tcti_name)?).context("cannot open the TPM")?;
    let ek = ek::create_ek_object(&mut ctx, AsymmetricAlgorithm::Rsa, None)
        .context("cannot create the RSA EK from the default template")?;
    let ek_cert = ek::retrieve_ek_pubcert(
        &mut ctx,
        tss_esapi::abstraction::AsymmetricAlgorithmSelection::Rsa(
            tss_esapi::interface_types::key_bits::RsaKeyBits::Rsa2048,
        ),
    )
    .context("the TPM holds no RSA EK certificate (NV index 0x01c00002)")?;
    let made = ak::create_ak(
        &mut ctx,
        ek,
        HashingAlgorithm::Sha256,
        SignatureSchemeAlgorithm::RsaSsa,
        None,
        None,
    )
    .context("cannot create the AK")?;
    let a = Attested {
        ek_cert,
        ak_public: made.out_public.marshall()?,
    };
    let ak = ak::load_ak(&mut ctx, ek, None, made.out_private, made.out_public)
        .context("cannot load the AK")?;

    // Before the credential is activated the node knows no CA: these two requests are HTTPS
    // without server authentication; what comes back is trusted only through the credential.
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let c: Challenge = post(
        &http,
        &format!("{url}/identity/v1/tpm/challenge"),
        &tpm::ChallengeBody {
            xname: xname.to_owned(),
            ek_cert: B64.encode(&a.ek_cert),
            ak_public: B64.encode(&a.ak_public),
        },
        "the TPM challenge",
    )
    .await?;
    let blob = IdObject::try_from(tpm2b_body(&B64.decode(&c.credential_blob)?)?)?;
    let enc = EncryptedSecret::try_from(tpm2b_body(&B64.decode(&c.encrypted_secret)?)?)?;
    let nonce = B64.decode(&c.nonce)?;
    let secret = activate(&mut ctx, ak, ek, blob, enc).context(
        "TPM2_ActivateCredential failed: the credential was not made for this TPM's EK and AK",
    )?;

    let (key, csr) = new_csr(xname)?;
    let sel = PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &PCRS)
        .build()?;
    let (_, _, digests) = ctx.execute_without_session(|c| c.pcr_read(sel.clone()))?;
    let pcrs: Vec<String> = digests
        .value()
        .iter()
        .map(|d| hex::encode(d.value()))
        .collect();
    let qd = Data::try_from(tpm::qualifying_data(&nonce, &csr))?;
    let (attest, sig) = ctx
        .execute_with_nullauth_session(|c| c.quote(ak, qd, SignatureScheme::Null, sel))
        .context("TPM2_Quote failed")?;
    let _ = ctx.flush_context(ak.into());
    let _ = ctx.flush_context(ek.into());

    let answer: TpmEnrolled = post(
        &http,
        &format!("{url}/identity/v1/tpm/enroll"),
        &tpm::TpmEnrollBody {
            challenge: c.challenge.clone(),
            proof: B64.encode(tpm::proof(&secret, &c.challenge, &csr)),
            csr,
            quote: B64.encode(attest.marshall()?),
            signature: B64.encode(sig.marshall()?),
            pcrs,
        },
        "the TPM enrollment",
    )
    .await?;
    if !tpm::answer_is_authentic(&secret, &c.challenge, &answer) {
        bail!(
            "the CA in rackboot's answer is not authenticated by the activated credential: \
             refusing it (someone may be impersonating rackboot)"
        );
    }
    let chain = ca::pem_certs(&answer.ca)?;
    ca::verify_ca_chain(&chain).context("the CA chain rackboot sent")?;
    // Not needed, but when the boot script also gave a fingerprint it must agree.
    let root = chain.last().map(|r| ca::fingerprint(r)).unwrap_or_default();
    if let Some(fp) = fingerprint
        && !root.eq_ignore_ascii_case(fp.trim())
    {
        bail!(
            "the CA rackboot sent has fingerprint {root}, not {fp} from the kernel command line: \
             refusing it"
        );
    }
    let cert = answer
        .enrolled
        .chain
        .clone()
        .context("rackboot issued no certificate")?;
    store(&args.dir, &key, &cert, &answer.ca)?;
    crate::outln!(
        "enrolled {xname} with its TPM (EK {}): certificate {} until {} in {}; rack CA {}",
        tpm_ek_hash(&a.ek_cert),
        answer.enrolled.serial.unwrap_or_default(),
        answer.enrolled.not_after.unwrap_or_default(),
        args.dir.display(),
        root,
    );
    Ok(())
}

fn tpm_ek_hash(cert: &[u8]) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    X509Certificate::from_der(cert)
        .map(|(_, c)| tpm_wire::ek_hash(c.tbs_certificate.subject_pki.raw))
        .unwrap_or_default()
}

/// TPM2_ActivateCredential: the AK with an HMAC session, the EK with a policy session that
/// satisfies its PolicySecret(endorsement) policy.
fn activate(
    ctx: &mut tss_esapi::Context,
    ak: tss_esapi::handles::KeyHandle,
    ek: tss_esapi::handles::KeyHandle,
    blob: IdObject,
    enc: EncryptedSecret,
) -> anyhow::Result<Vec<u8>> {
    let (attrs, mask) = SessionAttributesBuilder::new().build();
    let hmac = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Hmac,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )?
        .context("no HMAC session")?;
    ctx.tr_sess_set_attributes(hmac, attrs, mask)?;
    let policy = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )?
        .context("no policy session")?;
    ctx.tr_sess_set_attributes(policy, attrs, mask)?;
    ctx.execute_with_session(Some(hmac), |c| {
        c.policy_secret(
            PolicySession::try_from(policy)?,
            AuthHandle::Endorsement,
            Default::default(),
            Default::default(),
            Default::default(),
            None,
        )
    })?;
    ctx.set_sessions((Some(hmac), Some(policy), None));
    let out = ctx.activate_credential(ak, ek, blob, enc);
    ctx.clear_sessions();
    let _ = ctx.flush_context(tss_esapi::handles::SessionHandle::from(hmac).into());
    let _ = ctx.flush_context(tss_esapi::handles::SessionHandle::from(policy).into());
    Ok(out?.value().to_vec())
}
