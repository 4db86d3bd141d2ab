//! TSIG (RFC 8945): verifying signed requests, signing their answers (every message of a zone
//! transfer, chained as §5.3.1 says), and signing the NOTIFY we send. The records and the
//! digest input are hickory-proto's; the HMAC is aws-lc-rs's (hickory's `dnssec-aws-lc-rs`).
//! Secrets are read from `dns.tsig_keys[].secret_file` and never logged: only key names are.

use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine as _;
use hickory_proto::op::Message;
use hickory_proto::rr::rdata::tsig::{
    TSIG, TsigAlgorithm, TsigError, make_tsig_record, signed_bitmessage_to_buf,
};
use hickory_proto::rr::{Name, TSigner};
use hickory_proto::serialize::binary::BinEncoder;

use crate::config;

/// How far a signature's time may be from ours (RFC 8945 §10 recommends 300 s).
pub const FUDGE: u16 = 300;

/// The configured keys.
#[derive(Default)]
pub struct Keys {
    keys: Vec<(TSigner, Vec<Ipv4Addr>)>,
}

/// A verified request: what signing its answer needs.
pub struct Signing {
    signer: TSigner,
    request_mac: Vec<u8>,
    id: u16,
}

/// A request whose TSIG did not verify: the error (BADKEY, BADSIG, BADTIME) and the TSIG
/// record its NOTAUTH answer carries (unsigned, except for BADTIME).
pub struct Failure {
    pub error: TsigError,
    pub key: Name,
    /// BADTIME is answered signed (§5.2.3): the request MAC it needs, with the key.
    badtime: Option<(TSigner, Vec<u8>, u64)>,
    algorithm: TsigAlgorithm,
    id: u16,
}

/// Seconds since the epoch, the TSIG clock.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Keys {
    /// Reads every key's secret file.
    pub fn load(cfg: &[config::TsigKey]) -> anyhow::Result<Keys> {
        let mut keys = Vec::new();
        for k in cfg {
            let text = std::fs::read_to_string(&k.secret_file).with_context(|| {
                format!(
                    "dns.tsig_keys {:?}: cannot read secret_file {}",
                    k.name,
                    k.secret_file.display()
                )
            })?;
            let secret = parse_secret(&text).with_context(|| {
                format!(
                    "dns.tsig_keys {:?}: secret_file {} holds no base64 secret",
                    k.name,
                    k.secret_file.display()
                )
            })?;
            if secret.len() < 16 {
                anyhow::bail!(
                    "dns.tsig_keys {:?}: the secret is {} bytes; use at least 16 (tsig-keygen makes 32)",
                    k.name,
                    secret.len()
                );
            }
            let name = Name::from_ascii(&k.name)
                .with_context(|| format!("dns.tsig_keys: {:?} is not a key name", k.name))?;
            let alg = TsigAlgorithm::from_name(
                Name::from_ascii(k.algorithm.to_ascii_lowercase())
                    .with_context(|| format!("dns.tsig_keys {:?}: algorithm", k.name))?,
            );
            let signer = TSigner::new(secret, alg, name, FUDGE)
                .map_err(|e| anyhow::anyhow!("dns.tsig_keys {:?}: {e}", k.name))?;
            keys.push((signer, k.secondaries.clone()));
        }
        Ok(Keys { keys })
    }

    #[cfg(test)]
    pub fn from_signers(keys: Vec<(TSigner, Vec<Ipv4Addr>)>) -> Keys {
        Keys { keys }
    }

    /// The key `peer` must sign its transfers with, and NOTIFY to it is signed with.
    pub fn for_peer(&self, peer: Ipv4Addr) -> Option<&TSigner> {
        self.keys
            .iter()
            .find(|(_, peers)| peers.contains(&peer))
            .map(|(s, _)| s)
    }

    /// Verifies the TSIG of `req` (decoded from `bytes`) at time `now` (RFC 8945 §5.2).
    /// `Ok(None)`: the request is not signed.
    pub fn verify(
        &self,
        bytes: &[u8],
        req: &Message,
        now: u64,
    ) -> Result<Option<Signing>, Box<Failure>> {
        let Some(sig) = req.signature() else {
            return Ok(None);
        };
        let id = req.metadata.id;
        let fail = |error, badtime| {
            Box::new(Failure {
                error,
                key: sig.name.clone(),
                badtime,
                algorithm: sig.data.algorithm.clone(),
                id,
            })
        };
        // §5.2.1: an unknown key or algorithm is BADKEY.
        let Some(signer) = self
            .keys
            .iter()
            .map(|(s, _)| s)
            .find(|s| *s.signer_name() == sig.name && *s.algorithm() == sig.data.algorithm)
        else {
            return Err(fail(TsigError::BadKey, None));
        };
        // §5.2.2: the MAC over the request as sent, without its TSIG record.
        let Ok((tbv, rec)) = signed_bitmessage_to_buf(bytes, None, true) else {
            return Err(fail(TsigError::BadSig, None));
        };
        if signer.verify(&tbv, &rec.data.mac).is_err() {
            return Err(fail(TsigError::BadSig, None));
        }
        // §5.2.3: then the time, answered signed so the client can trust our clock.
        let t = rec.data.time;
        if now.abs_diff(t) > u64::from(rec.data.fudge) {
            return Err(fail(
                TsigError::BadTime,
                Some((signer.clone(), rec.data.mac.clone(), t)),
            ));
        }
        Ok(Some(Signing {
            signer: signer.clone(),
            request_mac: rec.data.mac.clone(),
            id: rec.data.oid,
        }))
    }
}

/// The secret of a secret file: its base64 text, or the `secret "…";` of a `key` clause.
fn parse_secret(text: &str) -> Option<Vec<u8>> {
    let b64 = match text.find("secret") {
        Some(i) => text.get(i..)?.split('"').nth(1)?,
        None => text.trim(),
    };
    let b64: String = b64.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

impl Signing {
    /// The key this request was signed with.
    pub fn key(&self) -> &Name {
        self.signer.signer_name()
    }

    /// Signs the messages of one answer, in the order they are sent: the first over the
    /// request's MAC (§5.3), each next one over the previous MAC (§5.3.1).
    pub fn sign_all(&self, msgs: Vec<Vec<u8>>, now: u64) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut prev = self.request_mac.clone();
        let mut out = Vec::with_capacity(msgs.len());
        for (i, bytes) in msgs.into_iter().enumerate() {
            let mut msg = Message::from_vec(&bytes)?;
            let unsigned = msg.to_vec()?;
            let stub = TSIG::new(
                self.signer.algorithm().clone(),
                now,
                FUDGE,
                Vec::new(),
                self.id,
                None,
                Vec::new(),
            );
            let tbs = if i == 0 {
                self.signer.encode_response_tbs(&prev, &unsigned, &stub)?
            } else {
                subsequent_tbs(&prev, &unsigned, now)?
            };
            let mac = self.signer.sign(&tbs)?;
            msg.set_signature(Box::new(make_tsig_record(
                self.signer.signer_name().clone(),
                stub.set_mac(mac.clone()),
            )));
            out.push(msg.to_vec()?);
            prev = mac;
        }
        Ok(out)
    }
}

/// §5.3.1: prior MAC, the message, and only the timers of the TSIG variables.
fn subsequent_tbs(prev_mac: &[u8], unsigned: &[u8], now: u64) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(unsigned.len() + prev_mac.len() + 10);
    let mut e = BinEncoder::new(&mut buf);
    e.emit_u16(u16::try_from(prev_mac.len())?)?;
    e.emit_vec(prev_mac)?;
    e.emit_vec(unsigned)?;
    e.emit_u16((now >> 32) as u16)?;
    e.emit_u32(now as u32)?;
    e.emit_u16(FUDGE)?;
    Ok(buf)
}

impl Failure {
    /// The metric label and log word: BADKEY, BADSIG or BADTIME.
    pub fn label(&self) -> &'static str {
        match self.error {
            TsigError::BadKey => "BADKEY",
            TsigError::BadSig => "BADSIG",
            TsigError::BadTime => "BADTIME",
            _ => "BADTSIG",
        }
    }

    /// Adds the TSIG record to `resp`, the NOTAUTH answer (§5.3.2): unsigned for BADKEY and
    /// BADSIG; for BADTIME signed, with the request's time and ours in Other Data.
    pub fn finish(&self, resp: &mut Message, now: u64) -> anyhow::Result<Vec<u8>> {
        match &self.badtime {
            None => {
                let t = TSIG::new(
                    self.algorithm.clone(),
                    now,
                    FUDGE,
                    Vec::new(),
                    self.id,
                    Some(self.error),
                    Vec::new(),
                );
                resp.set_signature(Box::new(make_tsig_record(self.key.clone(), t)));
                Ok(resp.to_vec()?)
            }
            Some((signer, request_mac, their_time)) => {
                let ours = now.to_be_bytes().get(2..).map(<[u8]>::to_vec);
                let stub = TSIG::new(
                    signer.algorithm().clone(),
                    *their_time,
                    FUDGE,
                    Vec::new(),
                    self.id,
                    Some(TsigError::BadTime),
                    ours.unwrap_or_default(),
                );
                let unsigned = resp.to_vec()?;
                let tbs = signer.encode_response_tbs(request_mac, &unsigned, &stub)?;
                let mac = signer.sign(&tbs)?;
                resp.set_signature(Box::new(make_tsig_record(
                    signer.signer_name().clone(),
                    stub.set_mac(mac),
                )));
                Ok(resp.to_vec()?)
            }
        }
    }
}

/// Signs an outgoing request (NOTIFY) with `signer` at `now`.
pub fn sign_request(msg: &mut Message, signer: &TSigner, now: u64) -> anyhow::Result<()> {
    msg.finalize(signer, now)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_read_bare_or_from_a_tsig_keygen_clause() {
        let keygen =
            "key \"xfr\" {\n\talgorithm hmac-sha256;\n\tsecret \"MDEyMzQ1Njc4OWFiY2RlZg==\";\n};\n";
        assert_eq!(
            parse_secret(keygen).as_deref(),
            Some(&b"0123456789abcdef"[..])
        );
        assert_eq!(
            parse_secret(" MDEyMzQ1Njc4OWFiY2RlZg==\n").as_deref(),
            Some(&b"0123456789abcdef"[..])
        );
        assert_eq!(parse_secret("not base64!"), None);
    }
}
