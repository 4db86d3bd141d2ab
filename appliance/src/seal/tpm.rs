//! Sealing to the machine's TPM 2.0 (feature `tpm`: tss-esapi over libtss2).
//!
//! A secret (at most 128 bytes: a data key) becomes a TPM *sealed data object*: a keyed-hash
//! object with no sign or decrypt use, created under the storage primary key and bound to the
//! policy PolicyPCR(SHA-256 PCR 7). What is kept on disk is the object's public and private
//! parts; the private part is encrypted by the TPM with a key derived from its storage seed, so
//! only the TPM that created it can load it, and it unseals only while PCR 7 (the firmware's
//! Secure Boot state: on/off, PK, KEK, db, dbx and the db entry that verified the boot loader)
//! has the value it had at sealing. The primary key is made again from the same template at each
//! use (the same seed gives the same key), so nothing is persisted in the TPM.
//!
//! The unseal runs in a policy session salted with the primary key and with response
//! encryption on, so the data key does not cross the TPM bus in the clear.

use std::path::Path;
use std::str::FromStr;

use tss_esapi::Context;
use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Digest, EccPoint, KeyedHashScheme, PcrSelectionList, PcrSelectionListBuilder, PcrSlot, Private,
    Public, PublicBuilder, PublicEccParametersBuilder, PublicKeyedHashParameters, SensitiveData,
    SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};

/// What the policy binds: the SHA-256 bank's PCR 7.
pub const POLICY: &str = "sha256:7";

/// The TCTI: `RACKBOOT_TPM_TCTI` (e.g. `swtpm:host=127.0.0.1,port=2321`), else the kernel's
/// resource manager, else the raw device. `None` when the machine has no TPM device.
fn tcti() -> Option<String> {
    if let Ok(t) = std::env::var("RACKBOOT_TPM_TCTI")
        && !t.is_empty()
    {
        return Some(t);
    }
    ["/dev/tpmrm0", "/dev/tpm0"]
        .into_iter()
        .find(|d| Path::new(d).exists())
        .map(|d| format!("device:{d}"))
}

/// Where the TPM is, if there is one (for `status`).
pub fn device() -> Option<String> {
    tcti()
}

fn context() -> anyhow::Result<Context> {
    let name = tcti().ok_or_else(|| {
        anyhow::anyhow!("this machine has no TPM (/dev/tpmrm0, /dev/tpm0; RACKBOOT_TPM_TCTI)")
    })?;
    let conf = TctiNameConf::from_str(&name)
        .map_err(|e| anyhow::anyhow!("TPM interface {name:?}: {e}"))?;
    Context::new(conf).map_err(|e| anyhow::anyhow!("cannot open the TPM at {name}: {e}"))
}

fn pcr7() -> anyhow::Result<PcrSelectionList> {
    Ok(PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &[PcrSlot::Slot7])
        .build()?)
}

/// The storage primary key: ECC P-256, AES-128-CFB for its children (the TCG's SRK template
/// shape). Deterministic for one TPM's owner seed.
fn primary(ctx: &mut Context) -> anyhow::Result<KeyHandle> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_decrypt(true)
        .with_restricted(true)
        .build()?;
    let public = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()?;
    let key = ctx.execute_with_nullauth_session(|c| {
        c.create_primary(Hierarchy::Owner, public, None, None, None, None)
    })?;
    Ok(key.key_handle)
}

/// Runs `f` with a fresh context and the primary key, and flushes what it loaded.
fn with_primary<T>(
    f: impl FnOnce(&mut Context, KeyHandle) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut ctx = context()?;
    let primary = primary(&mut ctx)?;
    let out = f(&mut ctx, primary);
    let _ = ctx.flush_context(primary.into());
    out
}

fn policy_session(
    ctx: &mut Context,
    kind: SessionType,
    salt: Option<KeyHandle>,
) -> anyhow::Result<AuthSession> {
    let session = ctx
        .start_auth_session(
            salt,
            None,
            None,
            kind,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )?
        .ok_or_else(|| anyhow::anyhow!("the TPM started no session"))?;
    if salt.is_some() {
        let (attrs, mask) = SessionAttributesBuilder::new().with_encrypt(true).build();
        ctx.tr_sess_set_attributes(session, attrs, mask)?;
    }
    ctx.policy_pcr(
        PolicySession::try_from(session)?,
        Digest::default(),
        pcr7()?,
    )?;
    Ok(session)
}

fn flush_session(ctx: &mut Context, session: AuthSession) {
    let _ = ctx.flush_context(ObjectHandle::from(SessionHandle::from(session)));
}

/// Seals `secret` (≤ 128 bytes) to this TPM and the current PCR 7: returns the object's public
/// and private parts, marshalled.
pub fn seal(secret: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    with_primary(|ctx, primary| {
        let trial = policy_session(ctx, SessionType::Trial, None)?;
        let digest = ctx.policy_get_digest(PolicySession::try_from(trial)?);
        flush_session(ctx, trial);
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_no_da(true)
            .with_admin_with_policy(true)
            .build()?;
        let public = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::KeyedHash)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_auth_policy(digest?)
            .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
            .with_keyed_hash_unique_identifier(Digest::default())
            .build()?;
        let data = SensitiveData::try_from(secret.to_vec())?;
        let created = ctx.execute_with_nullauth_session(|c| {
            c.create(primary, public, None, Some(data), None, None)
        })?;
        Ok((
            created.out_public.marshall()?,
            created.out_private.value().to_vec(),
        ))
    })
}

/// Unseals what [`seal`] returned. Fails when this is another TPM, or PCR 7 has changed.
pub fn unseal(public: &[u8], private: &[u8]) -> anyhow::Result<Vec<u8>> {
    let public = Public::unmarshall(public)?;
    let private = Private::try_from(private.to_vec())?;
    with_primary(|ctx, primary| {
        let object = ctx
            .execute_with_nullauth_session(|c| c.load(primary, private, public))
            .map_err(|e| {
                anyhow::anyhow!(
                    "this TPM cannot load the sealed key ({e}): it was sealed by another TPM, or the TPM was cleared"
                )
            })?;
        let out = (|| {
            let session = policy_session(ctx, SessionType::Policy, Some(primary))?;
            ctx.set_sessions((Some(session), None, None));
            let data = ctx.unseal(object.into());
            ctx.clear_sessions();
            flush_session(ctx, session);
            data.map(|d| d.value().to_vec()).map_err(|e| {
                anyhow::anyhow!(
                    "the TPM refuses to unseal the key ({e}): the Secure Boot state (PCR 7) differs from when it was sealed"
                )
            })
        })();
        let _ = ctx.flush_context(object.into());
        out
    })
}
