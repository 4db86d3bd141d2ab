//! Enrollment policy `tpm`: a node proves its TPM instead of presenting a join token.
//!
//! 1. `POST /identity/v1/tpm/challenge {xname, ek_cert, ak_public}`: the EK certificate must
//!    chain to the manufacturer CA bundle (`identity.tpm.ek_ca`) and be the node's EK in the
//!    inventory (pre-registered by an operator, or bound on first use from the node's inventory
//!    address); the AK must be a restricted signing key. rackboot answers a fresh nonce and a
//!    credential made with TPM2_MakeCredential for that EK and the AK's name: a random secret
//!    only that TPM can recover, and only with that AK loaded.
//! 2. `POST /identity/v1/tpm/enroll {challenge, proof, csr, quote, signature, pcrs}`: `proof`
//!    is an HMAC keyed with the recovered secret (so the AK is on the EK's TPM), the quote is
//!    signed by the AK over `SHA-256(nonce || csr)` (so the CSR is the one this TPM vouched
//!    for) and PCRs 0–7, which must match the node's groups' golden values if any. The answer
//!    carries the certificate and the rack CA chain with an HMAC keyed with the same secret:
//!    the node accepts a CA only if that HMAC verifies (see the runbook for what this does and
//!    does not stop).
//!
//! The admin API pre-registers, shows and clears a node's EK hash (`rackboot cert ek`); the
//! routes are in [`super::tpm_routes`].

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Instant;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::tpm_wire::{self, AkPublic};
use super::{Enrolled, Identity};
use crate::config;
use crate::http::Problem;
use crate::inventory::xname;
use crate::store::{Audit, TpmEk};
use crate::timeline::{Subject, stage};

/// At most this many challenges wait for their answer (oldest expired ones go first).
const MAX_PENDING: usize = 1024;
/// Challenges one node may have waiting (a new one replaces its oldest).
const MAX_PENDING_PER_NODE: usize = 4;
const PROOF_LABEL: &[u8] = b"rackboot tpm proof v1\0";
const ANSWER_LABEL: &[u8] = b"rackboot tpm answer v1\0";

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ChallengeBody {
    pub xname: String,
    /// The EK certificate (DER, base64), as read from the TPM's NV index.
    pub ek_cert: String,
    /// The AK's public area (marshalled TPMT_PUBLIC, base64).
    pub ak_public: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Challenge {
    pub challenge: String,
    /// Base64: 32 random bytes; the quote's qualifying data is SHA-256(nonce || csr).
    pub nonce: String,
    /// TPM2B_ID_OBJECT (base64) for TPM2_ActivateCredential.
    pub credential_blob: String,
    /// TPM2B_ENCRYPTED_SECRET (base64).
    pub encrypted_secret: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TpmEnrollBody {
    pub challenge: String,
    /// Base64 HMAC-SHA256(secret, label || challenge || SHA-256(csr)).
    pub proof: String,
    pub csr: String,
    /// TPMS_ATTEST (base64).
    pub quote: String,
    /// TPMT_SIGNATURE (base64).
    pub signature: String,
    /// PCRs 0–7 of the SHA-256 bank, hex.
    pub pcrs: Vec<String>,
}

/// What a TPM enrollment answers: the certificate, the CA chain and their HMAC.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TpmEnrolled {
    #[serde(flatten)]
    pub enrolled: Enrolled,
    /// The rack CA chain (PEM).
    pub ca: String,
    /// Base64 HMAC-SHA256(secret, label || challenge || ca || 0 || chain).
    pub mac: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EkBody {
    /// `sha256:<hex>` of the EK's SubjectPublicKeyInfo (DER).
    pub ek_hash: String,
}

struct Pending {
    xname: String,
    peer: Ipv4Addr,
    ek_hash: String,
    ek_issuer: String,
    bound: bool,
    ak: AkPublic,
    nonce: [u8; 32],
    secret: [u8; 32],
    expires: Instant,
}

/// Challenges waiting for their answer (in memory: a restart makes nodes ask again).
#[derive(Default)]
pub struct Challenges(Mutex<HashMap<String, Pending>>);

fn b64(what: &str, s: &str, max: usize) -> Result<Vec<u8>, Problem> {
    if s.len() > max * 4 / 3 + 4 {
        return Err(Problem::bad_request(format!("{what} is too large")));
    }
    B64.decode(s.trim())
        .map_err(|_| Problem::bad_request(format!("{what} is not base64")))
}

/// The proof a node sends that it recovered `secret`.
pub fn proof(secret: &[u8], challenge: &str, csr: &str) -> Vec<u8> {
    let mut m = PROOF_LABEL.to_vec();
    m.extend_from_slice(challenge.as_bytes());
    m.extend(tpm_wire::sha256(csr.as_bytes()));
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), &m)
        .as_ref()
        .to_vec()
}

fn answer_message(challenge: &str, ca: &str, chain: &str) -> Vec<u8> {
    let mut m = ANSWER_LABEL.to_vec();
    m.extend_from_slice(challenge.as_bytes());
    m.extend_from_slice(ca.as_bytes());
    m.push(0);
    m.extend_from_slice(chain.as_bytes());
    m
}

/// Checks the answer's HMAC with the recovered secret (the node side).
pub fn answer_is_authentic(secret: &[u8], challenge: &str, a: &TpmEnrolled) -> bool {
    let chain = a.enrolled.chain.as_deref().unwrap_or("");
    let Ok(mac) = B64.decode(a.mac.trim()) else {
        return false;
    };
    hmac::verify(
        &hmac::Key::new(hmac::HMAC_SHA256, secret),
        &answer_message(challenge, &a.ca, chain),
        &mac,
    )
    .is_ok()
}

/// The quote's qualifying data: the server nonce bound to the CSR.
pub fn qualifying_data(nonce: &[u8], csr: &str) -> Vec<u8> {
    tpm_wire::sha256(&[nonce, csr.as_bytes()].concat())
}

impl Identity {
    fn tpm_cfg(&self) -> &config::Tpm {
        &self.inner.cfg.tpm
    }

    async fn tpm_refuse(&self, xname: Option<&str>, p: Problem) -> Problem {
        self.refuse(xname, "enroll-tpm", p).await
    }

    /// Step 1: checks the EK and AK, and answers a credential only the node's TPM can open.
    pub async fn tpm_challenge(
        &self,
        peer: Ipv4Addr,
        b: &ChallengeBody,
    ) -> Result<Challenge, Problem> {
        xname::parse(&b.xname).map_err(Problem::bad_request)?;
        let x = b.xname.clone();
        let Some(node) = self.inner.store.node_info(x.clone()).await? else {
            return Err(self
                .tpm_refuse(
                    None,
                    Problem::forbidden(format!("{x} is not in the inventory (from {peer})")),
                )
                .await);
        };
        if self.policy_for(&x).await? != config::EnrollPolicy::Tpm {
            return Err(self
                .tpm_refuse(
                    Some(&x),
                    Problem::forbidden(format!(
                        "{x} does not enroll under policy tpm (identity.policy / identity.group_policy)"
                    )),
                )
                .await);
        }
        let Some(bundle) = &self.tpm_cfg().ek_ca else {
            return Err(self
                .tpm_refuse(
                    Some(&x),
                    Problem::service_unavailable(
                        "identity.tpm.ek_ca is not configured: rackboot cannot check EK certificates",
                    ),
                )
                .await);
        };
        let bundle = std::fs::read_to_string(bundle)
            .map_err(|e| Problem::internal(format!("cannot read {}: {e}", bundle.display())))?;
        let ek_der = b64("ek_cert", &b.ek_cert, 8192)?;
        let ek = match tpm_wire::check_ek_cert(&ek_der, &bundle) {
            Ok(ek) => ek,
            Err(why) => {
                return Err(self
                    .tpm_refuse(Some(&x), Problem::forbidden(format!("{why} (from {peer})")))
                    .await);
            }
        };
        let bound = match self.inner.store.tpm_ek(x.clone()).await? {
            Some(TpmEk { ek_hash, .. }) if ek_hash == ek.hash => true,
            Some(TpmEk {
                ek_hash, source, ..
            }) => {
                return Err(self
                    .tpm_refuse(
                        Some(&x),
                        Problem::forbidden(format!(
                            "the EK {} is not {x}'s: its EK is {ek_hash} ({source}); \
                             `rackboot cert ek clear {x}` if its TPM was replaced (from {peer})",
                            ek.hash
                        )),
                    )
                    .await);
            }
            None if !self.tpm_cfg().tofu => {
                return Err(self
                    .tpm_refuse(
                        Some(&x),
                        Problem::forbidden(format!(
                            "no EK is registered for {x} and identity.tpm.tofu is off: \
                             `rackboot cert ek set {x} --hash {}`",
                            ek.hash
                        )),
                    )
                    .await);
            }
            None => {
                // First use binds the EK: only from the node's own inventory address.
                let ips: Vec<Ipv4Addr> = node.interfaces.iter().filter_map(|(_, ip)| *ip).collect();
                if !ips.contains(&peer) {
                    return Err(self
                        .tpm_refuse(
                            Some(&x),
                            Problem::forbidden(format!(
                                "{x} has no EK bound yet, and a first binding must come from its \
                                 inventory address ({ips:?}), not {peer}"
                            )),
                        )
                        .await);
                }
                false
            }
        };
        let ak_bytes = b64("ak_public", &b.ak_public, 2048)?;
        let ak = match AkPublic::parse(&ak_bytes) {
            Ok(ak) => ak,
            Err(why) => {
                return Err(self.tpm_refuse(Some(&x), Problem::bad_request(why)).await);
            }
        };
        let mut secret = [0u8; 32];
        let mut nonce = [0u8; 32];
        let mut id = [0u8; 16];
        for buf in [&mut secret[..], &mut nonce[..], &mut id[..]] {
            aws_lc_rs::rand::fill(buf).map_err(|_| Problem::internal("no randomness"))?;
        }
        let cred =
            tpm_wire::make_credential(&ek.spki, &ak.name, &secret).map_err(Problem::bad_request)?;
        let id = hex::encode(id);
        {
            let mut map = self.inner.tpm.0.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            map.retain(|_, p| p.expires > now);
            // A node's EK certificate is public: whoever has it may ask in its name, so each
            // node keeps only its newest few challenges and cannot crowd out the others.
            let mine: Vec<(String, Instant)> = map
                .iter()
                .filter(|(_, p)| p.xname == x)
                .map(|(k, p)| (k.clone(), p.expires))
                .collect();
            if mine.len() >= MAX_PENDING_PER_NODE
                && let Some((oldest, _)) = mine.iter().min_by_key(|(_, e)| *e)
            {
                map.remove(oldest);
            }
            if map.len() >= MAX_PENDING {
                return Err(Problem::service_unavailable(
                    "too many TPM challenges are waiting; retry shortly",
                ));
            }
            map.insert(
                id.clone(),
                Pending {
                    xname: x.clone(),
                    peer,
                    ek_hash: ek.hash.clone(),
                    ek_issuer: ek.issuer,
                    bound,
                    ak,
                    nonce,
                    secret,
                    expires: now + self.tpm_cfg().challenge_ttl,
                },
            );
        }
        tracing::info!(xname = %x, peer = %peer, ek = %ek.hash, "TPM credential challenge sent");
        Ok(Challenge {
            challenge: id,
            nonce: B64.encode(nonce),
            credential_blob: B64.encode(cred.blob),
            encrypted_secret: B64.encode(cred.secret),
        })
    }

    /// Step 2: checks the activation proof and the quote over the CSR, binds the EK on first
    /// use, issues the certificate.
    pub async fn tpm_enroll(
        &self,
        peer: Ipv4Addr,
        b: &TpmEnrollBody,
    ) -> Result<TpmEnrolled, Problem> {
        let p = {
            let mut map = self.inner.tpm.0.lock().unwrap_or_else(|p| p.into_inner());
            map.remove(&b.challenge)
        };
        let Some(p) = p.filter(|p| p.expires > Instant::now()) else {
            return Err(self
                .tpm_refuse(
                    None,
                    Problem::forbidden(format!(
                        "unknown, used or expired TPM challenge (from {peer}): ask for a new one"
                    )),
                )
                .await);
        };
        let x = p.xname.clone();
        if p.peer != peer {
            return Err(self
                .tpm_refuse(
                    Some(&x),
                    Problem::forbidden(format!(
                        "the challenge for {x} was sent to {}, not {peer}",
                        p.peer
                    )),
                )
                .await);
        }
        if b.csr.len() > 16 * 1024 {
            return Err(self
                .tpm_refuse(
                    Some(&x),
                    Problem::bad_request("the CSR is larger than 16 KiB"),
                )
                .await);
        }
        let got = b64("proof", &b.proof, 64)?;
        let mut m = PROOF_LABEL.to_vec();
        m.extend_from_slice(b.challenge.as_bytes());
        m.extend(tpm_wire::sha256(b.csr.as_bytes()));
        if hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, &p.secret), &m, &got).is_err() {
            return Err(self
                .tpm_refuse(
                    Some(&x),
                    Problem::forbidden(format!(
                        "{x} did not activate the credential: its AK is not on the TPM that holds EK {}",
                        p.ek_hash
                    )),
                )
                .await);
        }
        let csr = match super::parse_csr(&b.csr) {
            Ok(c) => c,
            Err(pr) => return Err(self.tpm_refuse(Some(&x), pr).await),
        };
        let hostname = self
            .inner
            .store
            .node_info(x.clone())
            .await?
            .map(|n| n.hostname)
            .unwrap_or_else(|| x.clone());
        if let Err(why) = super::ca::check_csr_names(&csr, &x, &self.inner.cfg.cluster, &hostname) {
            return Err(self.tpm_refuse(Some(&x), Problem::forbidden(why)).await);
        }
        let attest = b64("quote", &b.quote, 4096)?;
        let sig = b64("signature", &b.signature, 4096)?;
        let mut pcrs = Vec::with_capacity(8);
        for v in b.pcrs.iter().take(16) {
            pcrs.push(hex::decode(v).map_err(|_| Problem::bad_request("pcrs are hex"))?);
        }
        let quote = match tpm_wire::verify_quote(
            &p.ak,
            &attest,
            &sig,
            &qualifying_data(&p.nonce, &b.csr),
            &pcrs,
        ) {
            Ok(q) => q,
            Err(why) => return Err(self.tpm_refuse(Some(&x), Problem::forbidden(why)).await),
        };
        if let Err(why) = self.check_golden_pcrs(&x, &quote.pcrs).await? {
            return Err(self.tpm_refuse(Some(&x), Problem::forbidden(why)).await);
        }
        if !p.bound {
            let audit = Audit {
                xname: Some(x.clone()),
                action: "tpm-ek-bind",
                serial: None,
                ok: true,
                detail: format!(
                    "trust on first use: EK {} (issued by {}) from {peer}",
                    p.ek_hash, p.ek_issuer
                ),
            };
            match self
                .inner
                .store
                .bind_tpm_ek(x.clone(), p.ek_hash.clone(), "tofu", false, audit)
                .await
            {
                Ok(()) => {}
                Err(crate::store::StoreError::Conflict(why)) => {
                    return Err(self.tpm_refuse(Some(&x), Problem::conflict(why)).await);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let pcr_map: serde_json::Map<String, serde_json::Value> = quote
            .pcrs
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), hex::encode(v).into()))
            .collect();
        self.inner.timeline.record(
            Subject::Xname(x.clone()),
            stage::IDENTITY_ATTESTED,
            true,
            serde_json::json!({"ek": p.ek_hash, "pcrs": pcr_map}),
        );
        let enrolled = self
            .issue(
                &x,
                &csr,
                None,
                None,
                "enroll-tpm",
                format!("TPM EK {} from {peer}", p.ek_hash),
            )
            .await?;
        let ca = self.inner.ca.chain_pem().to_owned();
        let chain = enrolled.chain.clone().unwrap_or_default();
        let mac = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &p.secret),
            &answer_message(&b.challenge, &ca, &chain),
        );
        Ok(TpmEnrolled {
            enrolled,
            ca,
            mac: B64.encode(mac.as_ref()),
        })
    }

    /// `Ok(Err(why))` when a golden PCR value of one of `xname`'s groups differs.
    async fn check_golden_pcrs(
        &self,
        xname: &str,
        pcrs: &[Vec<u8>],
    ) -> Result<Result<(), String>, Problem> {
        let golden = &self.tpm_cfg().golden_pcrs;
        if golden.is_empty() {
            return Ok(Ok(()));
        }
        for g in self.inner.store.list_groups().await? {
            let Some(want) = golden.get(&g.label) else {
                continue;
            };
            if !g.members.ids.iter().any(|m| m == xname) {
                continue;
            }
            for (k, v) in want {
                let got = k
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| pcrs.get(i))
                    .map(hex::encode)
                    .unwrap_or_default();
                if !got.eq_ignore_ascii_case(v) {
                    return Ok(Err(format!(
                        "PCR {k} of {xname} is {got}, not group {}'s golden value {v} \
                         (identity.tpm.golden_pcrs): the node booted other firmware or boot code",
                        g.label
                    )));
                }
            }
        }
        Ok(Ok(()))
    }

    /// `rackboot cert ek set`: pre-registers (or replaces) a node's EK hash.
    pub async fn set_tpm_ek(&self, x: &str, ek_hash: &str) -> Result<TpmEk, Problem> {
        xname::parse(x).map_err(Problem::bad_request)?;
        let h = ek_hash.trim().to_ascii_lowercase();
        let hex_part = h.strip_prefix("sha256:").unwrap_or(&h);
        if hex_part.len() != 64 || !hex_part.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(Problem::bad_request(
                "ek_hash is sha256:<64 hex digits> of the EK's public key (DER SubjectPublicKeyInfo)",
            ));
        }
        let h = format!("sha256:{hex_part}");
        let audit = Audit {
            xname: Some(x.to_owned()),
            action: "tpm-ek-set",
            serial: None,
            ok: true,
            detail: format!("EK {h} pre-registered by an operator"),
        };
        match self
            .inner
            .store
            .bind_tpm_ek(x.to_owned(), h, "operator", true, audit)
            .await
        {
            Ok(()) => {}
            Err(crate::store::StoreError::Conflict(why)) => return Err(Problem::conflict(why)),
            Err(e) => return Err(e.into()),
        }
        self.tpm_ek(x).await
    }

    pub async fn tpm_ek(&self, x: &str) -> Result<TpmEk, Problem> {
        xname::parse(x).map_err(Problem::bad_request)?;
        self.inner
            .store
            .tpm_ek(x.to_owned())
            .await?
            .ok_or_else(|| Problem::not_found(format!("no EK is bound to {x}")))
    }

    pub async fn clear_tpm_ek(&self, x: &str) -> Result<(), Problem> {
        xname::parse(x).map_err(Problem::bad_request)?;
        let audit = Audit {
            xname: Some(x.to_owned()),
            action: "tpm-ek-clear",
            serial: None,
            ok: true,
            detail: "EK binding cleared by an operator".into(),
        };
        if self.inner.store.clear_tpm_ek(x.to_owned(), audit).await? {
            Ok(())
        } else {
            Err(Problem::not_found(format!("no EK is bound to {x}")))
        }
    }
}
