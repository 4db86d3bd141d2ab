//! Machine identity: the rack CA issues short-lived mTLS client certificates to the nodes
//! rackboot booted, and node secrets travel only over mTLS to the node (or group) they are for.
//!
//! - A node's boot script carries a **join token** (single use, short TTL, bound to the node's
//!   xname and inventory address), the CA fingerprint and the HTTPS URL, only when the request
//!   comes from the node itself: its inventory address, its MAC, a current lease, the first
//!   fetch after that lease's ACK, within a per-source rate limit ([`join`]).
//! - `POST /identity/v1/enroll {token, csr}` over HTTPS: every check is made, then the token is
//!   used up and the certificate recorded in one transaction (policy `token`), or the request
//!   waits for `rackboot cert approve` (policy `approval`).
//! - Routes under `/identity/v1/node/` need a client certificate: rustls checks the chain to the
//!   rack CA, validity and the ClientAuth EKU; rackboot then maps the serial to an issued,
//!   unrevoked certificate and its xname ([`NodeIdentity`]). A revocation takes effect on the
//!   next request, and is published in the CRL.
//! - Policy `tpm` replaces the token with TPM attestation (EK certificate, credential
//!   activation, a quote over the CSR): [`tpm`].
//! - Every issuance, renewal, refusal, revocation and secret read is in the append-only audit.
//!
//! Owns: rack CA, `certs`, `join_tokens`, `enroll_requests`, `secrets`, `identity_audit`,
//! `tpm_eks`, `/identity/v1/*`, `rackboot ca/cert/secret/agent`. May call: `client`,
//! `cloudinit`, `config`, `http`, `inventory`, `metrics`, `output`, `seal`, `store`, `timeline`.

pub mod agent;
#[cfg(feature = "tpm")]
pub mod agent_tpm;
pub mod ca;
pub mod cli;
pub mod join;
pub mod routes;
mod secrets;
pub mod tpm;
pub mod tpm_routes;
pub mod tpm_wire;

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rcgen::CertificateSigningRequestParams;
use serde::{Deserialize, Serialize};

use crate::config;
use crate::http::Problem;
use crate::seal::Sealer;
use crate::store::{Audit, CertRow, EnrollRequest, Store};
use crate::timeline::{Subject, Timeline, stage};
use ca::RackCa;

/// What an enrollment answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrolled {
    /// `issued` (certificate below) or `pending` (poll `request` until approved).
    pub state: String,
    #[serde(default)]
    pub request: Option<String>,
    #[serde(default)]
    pub serial: Option<String>,
    /// The certificate, then the CA chain (PEM).
    #[serde(default)]
    pub chain: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub not_after: Option<String>,
}

/// A node authenticated by its client certificate.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub xname: String,
    pub serial: String,
    /// The certificate's public key (raw bits), so renewal can insist on a new one.
    pub key: Vec<u8>,
}

/// The identity service. Cheap to clone.
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    ca: RackCa,
    sealer: Sealer,
    cfg: config::Identity,
    timeline: Timeline,
    /// The HTTPS listener's config, replaced when its certificate is renewed.
    server: RwLock<Option<Arc<rustls::ServerConfig>>>,
    crl_number: std::sync::atomic::AtomicU64,
    /// TPM credential challenges waiting for their answer.
    tpm: tpm::Challenges,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity(..)")
    }
}

/// The secrets sealing key (`<data-dir>/identity/secrets.key`).
pub fn secrets_sealer(data_dir: &Path) -> anyhow::Result<Sealer> {
    let d = ca::dir(data_dir);
    std::fs::create_dir_all(&d)?;
    Sealer::open_file(&d.join("secrets.key"), "node secrets")
}

fn hash_token(token: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        token.trim().as_bytes(),
    ))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

pub(crate) fn parse_csr(pem: &str) -> Result<CertificateSigningRequestParams, Problem> {
    if pem.len() > 16 * 1024 {
        return Err(Problem::bad_request("the CSR is larger than 16 KiB"));
    }
    CertificateSigningRequestParams::from_pem(pem).map_err(|e| {
        Problem::bad_request(format!(
            "csr is not a usable PEM certificate signing request ({e}); make one with \
             `openssl req -new -key node.key -subj /CN=<xname>`"
        ))
    })
}

impl Identity {
    /// Opens (creating on first start) the rack CA and the secrets key under `data_dir`.
    pub fn open(
        data_dir: &Path,
        store: Store,
        cfg: config::Identity,
        timeline: Timeline,
    ) -> anyhow::Result<Identity> {
        let ca = RackCa::open_or_create(data_dir, &cfg.cluster)?;
        let sealer = secrets_sealer(data_dir)?;
        let start = u64::try_from(crate::store::now_ms()).unwrap_or(0);
        Ok(Identity {
            inner: Arc::new(Inner {
                store,
                ca,
                sealer,
                cfg,
                timeline,
                server: RwLock::new(None),
                crl_number: std::sync::atomic::AtomicU64::new(start),
                tpm: tpm::Challenges::default(),
            }),
        })
    }

    pub fn config(&self) -> &config::Identity {
        &self.inner.cfg
    }

    pub fn ca(&self) -> &RackCa {
        &self.inner.ca
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Makes a join token for `xname` at `ip` and stores its hash (superseding the node's unused
    /// token: one live token per node), audited as `join-token` with `detail`. Unconditional:
    /// the boot path goes through [`join::BootTokens`], which decides whether a request may
    /// have one.
    pub async fn mint_join_token(&self, xname: &str, ip: Ipv4Addr) -> anyhow::Result<String> {
        match self
            .mint_since(
                xname,
                ip,
                None,
                format!(
                    "issued by an administrator (POST /identity/v1/join-tokens), bound to {ip}"
                ),
                String::new(),
            )
            .await?
        {
            (Some(token), _) => Ok(token),
            (None, _) => anyhow::bail!("no join token minted for {xname}"),
        }
    }

    /// Mints a token for `xname` at `ip` unless one was issued at or after `since_ms` (then
    /// `None` and the time it was issued, with the refusal audited in the same write).
    async fn mint_since(
        &self,
        xname: &str,
        ip: Ipv4Addr,
        since_ms: Option<i64>,
        detail: String,
        refused: String,
    ) -> anyhow::Result<(Option<String>, i64)> {
        use base64::Engine;
        let mut raw = [0u8; 32];
        aws_lc_rs::rand::fill(&mut raw).map_err(|_| anyhow::anyhow!("no randomness"))?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let expires = crate::store::now_ms() + ms(self.inner.cfg.token_ttl);
        let audit = |ok: bool, detail: String| Audit {
            xname: Some(xname.to_owned()),
            action: "join-token",
            serial: None,
            ok,
            detail,
        };
        let issued = self
            .inner
            .store
            .issue_join_token(
                hash_token(&token),
                xname.to_owned(),
                ip.to_string(),
                expires,
                since_ms,
                audit(true, detail),
                audit(false, refused),
            )
            .await?;
        Ok(match issued {
            crate::store::Issued::Minted => (Some(token), expires),
            crate::store::Issued::AlreadyIssued { at_ms } => (None, at_ms),
        })
    }

    /// Records a refusal (audit, timeline, log) and returns it as a problem.
    async fn refuse(&self, xname: Option<&str>, action: &'static str, p: Problem) -> Problem {
        tracing::warn!(xname = xname.unwrap_or("-"), action, reason = %p.detail, "identity request refused");
        if let Some(x) = xname {
            self.inner.timeline.record(
                Subject::Xname(x.to_owned()),
                stage::IDENTITY_REFUSED,
                false,
                serde_json::json!({"action": action, "reason": p.detail}),
            );
        }
        let audit = Audit {
            xname: xname.map(str::to_owned),
            action,
            serial: None,
            ok: false,
            detail: p.detail.clone(),
        };
        if let Err(e) = self.inner.store.audit(audit).await {
            tracing::error!(error = %e, "could not write the identity audit");
        }
        p
    }

    /// The enrollment policy for `xname`: a group's policy wins over the rack's.
    async fn policy_for(&self, xname: &str) -> Result<config::EnrollPolicy, Problem> {
        if !self.inner.cfg.group_policy.is_empty() {
            for g in self.inner.store.list_groups().await? {
                if g.members.ids.iter().any(|m| m == xname)
                    && let Some(p) = self.inner.cfg.group_policy.get(&g.label)
                {
                    return Ok(*p);
                }
            }
        }
        Ok(self.inner.cfg.policy)
    }

    /// `POST /identity/v1/enroll` from `peer`.
    pub async fn enroll(
        &self,
        peer: Ipv4Addr,
        token: &str,
        csr_pem: &str,
    ) -> Result<Enrolled, Problem> {
        let hash = hash_token(token);
        let Some(t) = self.inner.store.join_token(hash.clone()).await? else {
            return Err(self
                .refuse(
                    None,
                    "enroll",
                    Problem::forbidden(format!(
                        "unknown join token (from {peer}): use the rackboot.join= value from this boot's kernel command line"
                    )),
                )
                .await);
        };
        let x = t.xname.clone();
        if t.used_ms.is_some() {
            return Err(self
                .refuse(
                    Some(&x),
                    "enroll",
                    Problem::conflict(format!(
                        "the join token for {x} was already used (from {peer}); a token works once: reboot the node for a new one"
                    )),
                )
                .await);
        }
        if t.superseded() {
            return Err(self
                .refuse(
                    Some(&x),
                    "enroll",
                    Problem::conflict(format!(
                        "the join token for {x} was replaced by a newer one (from {peer}): its boot script was served again after a new DHCP lease; if the node did not reboot, someone else fetched it (`rackboot cert audit --node {x}`)"
                    )),
                )
                .await);
        }
        if t.expires_ms < crate::store::now_ms() {
            return Err(self
                .refuse(
                    Some(&x),
                    "enroll",
                    Problem::forbidden(format!(
                        "the join token for {x} has expired (identity.token_ttl = {}); reboot the node for a new one",
                        humantime::format_duration(self.inner.cfg.token_ttl)
                    )),
                )
                .await);
        }
        if t.ip != peer.to_string() {
            return Err(self
                .refuse(
                    Some(&x),
                    "enroll",
                    Problem::forbidden(format!(
                        "the join token for {x} is bound to {}, but the request came from {peer}",
                        t.ip
                    )),
                )
                .await);
        }
        let csr = match parse_csr(csr_pem) {
            Ok(c) => c,
            Err(p) => return Err(self.refuse(Some(&x), "enroll", p).await),
        };
        let hostname = self
            .inner
            .store
            .node_info(x.clone())
            .await?
            .map(|n| n.hostname)
            .unwrap_or_else(|| x.clone());
        if let Err(why) = ca::check_csr_names(&csr, &x, &self.inner.cfg.cluster, &hostname) {
            return Err(self
                .refuse(Some(&x), "enroll", Problem::forbidden(why))
                .await);
        }
        let policy = self.policy_for(&x).await?;
        if policy == config::EnrollPolicy::Tpm {
            return Err(self
                .refuse(
                    Some(&x),
                    "enroll",
                    Problem::forbidden(format!(
                        "{x} enrolls under policy tpm: a join token is not enough (`rackboot agent tpm-enroll`)"
                    )),
                )
                .await);
        }
        if policy == config::EnrollPolicy::Approval {
            let id = hash.get(..16).unwrap_or(&hash).to_owned();
            let req = EnrollRequest {
                id: id.clone(),
                xname: x.clone(),
                ip: peer.to_string(),
                csr: csr_pem.to_owned(),
                created_ms: crate::store::now_ms(),
                state: "pending".into(),
                serial: None,
            };
            let audit = Audit {
                xname: Some(x.clone()),
                action: "enroll-request",
                serial: None,
                ok: true,
                detail: format!("request {id} from {peer} waits for `rackboot cert approve {id}`"),
            };
            self.commit(Some(hash), None, Some(req), audit).await?;
            tracing::info!(xname = %x, request = %id, "enrollment waits for approval");
            return Ok(Enrolled {
                state: "pending".into(),
                request: Some(id),
                serial: None,
                chain: None,
                not_after: None,
            });
        }
        self.issue(&x, &csr, Some(hash), None, "enroll", format!("from {peer}"))
            .await
    }

    async fn commit(
        &self,
        token: Option<String>,
        cert: Option<CertRow>,
        req: Option<EnrollRequest>,
        audit: Audit,
    ) -> Result<(), Problem> {
        let x = audit.xname.clone();
        match self
            .inner
            .store
            .record_enrollment(token, cert, req, audit)
            .await
        {
            Ok(()) => Ok(()),
            Err(crate::store::StoreError::Conflict(why)) => Err(self
                .refuse(x.as_deref(), "enroll", Problem::conflict(why))
                .await),
            Err(e) => Err(e.into()),
        }
    }

    /// Signs and records a certificate for `xname` (using up `token` in the same write).
    async fn issue(
        &self,
        xname: &str,
        csr: &CertificateSigningRequestParams,
        token: Option<String>,
        request: Option<EnrollRequest>,
        action: &'static str,
        detail: String,
    ) -> Result<Enrolled, Problem> {
        let issued = self
            .inner
            .ca
            .issue_node(
                csr,
                xname,
                &self.inner.cfg.cluster,
                self.inner.cfg.cert_lifetime,
            )
            .map_err(Problem::internal)?;
        let row = CertRow {
            serial: issued.serial.clone(),
            xname: xname.to_owned(),
            not_before_ms: issued.not_before_ms,
            not_after_ms: issued.not_after_ms,
            issued_ms: crate::store::now_ms(),
            pem: issued.pem.clone(),
            revoked_ms: None,
            reason: None,
        };
        let audit = Audit {
            xname: Some(xname.to_owned()),
            action,
            serial: Some(issued.serial.clone()),
            ok: true,
            detail,
        };
        let request = request.map(|mut r| {
            r.state = "approved".into();
            r.serial = Some(issued.serial.clone());
            r
        });
        self.commit(token, Some(row), request, audit).await?;
        let st = if action == "renew" {
            stage::IDENTITY_RENEWED
        } else {
            stage::IDENTITY_ENROLLED
        };
        let not_after = crate::timeline::routes::rfc3339(issued.not_after_ms);
        self.inner.timeline.record(
            Subject::Xname(xname.to_owned()),
            st,
            true,
            serde_json::json!({"serial": issued.serial, "not_after": not_after}),
        );
        tracing::info!(xname, serial = %issued.serial, action, "certificate issued");
        Ok(Enrolled {
            state: "issued".into(),
            request: None,
            serial: Some(issued.serial),
            chain: Some(issued.pem),
            not_after: Some(not_after),
        })
    }

    /// A node polling its pending request (from the address it asked from).
    pub async fn enroll_status(&self, peer: Ipv4Addr, id: &str) -> Result<Enrolled, Problem> {
        let r = self
            .inner
            .store
            .get_enroll_request(id.to_owned())
            .await?
            .filter(|r| r.ip == peer.to_string())
            .ok_or_else(|| Problem::not_found(format!("no enrollment request {id} from {peer}")))?;
        match (r.state.as_str(), &r.serial) {
            ("approved", Some(serial)) => {
                let c = self
                    .inner
                    .store
                    .get_cert(serial.clone())
                    .await?
                    .ok_or_else(|| Problem::internal("approved certificate missing"))?;
                Ok(Enrolled {
                    state: "issued".into(),
                    request: Some(r.id),
                    serial: Some(c.serial),
                    chain: Some(c.pem),
                    not_after: Some(crate::timeline::routes::rfc3339(c.not_after_ms)),
                })
            }
            _ => Ok(Enrolled {
                state: r.state,
                request: Some(r.id),
                serial: None,
                chain: None,
                not_after: None,
            }),
        }
    }

    /// `rackboot cert approve ID`.
    pub async fn approve(&self, id: &str) -> Result<Enrolled, Problem> {
        let r = self
            .inner
            .store
            .get_enroll_request(id.to_owned())
            .await?
            .ok_or_else(|| Problem::not_found(format!("no enrollment request {id}")))?;
        if r.state != "pending" {
            return Err(Problem::conflict(format!(
                "request {id} is {}, not pending",
                r.state
            )));
        }
        let csr = parse_csr(&r.csr)?;
        let x = r.xname.clone();
        self.issue(&x, &csr, None, Some(r), "approve", format!("request {id}"))
            .await
    }

    /// `POST /identity/v1/node/renew`: a new certificate for the same node and a new key.
    pub async fn renew(&self, node: &NodeIdentity, csr_pem: &str) -> Result<Enrolled, Problem> {
        let csr = match parse_csr(csr_pem) {
            Ok(c) => c,
            Err(p) => return Err(self.refuse(Some(&node.xname), "renew", p).await),
        };
        let hostname = self
            .inner
            .store
            .node_info(node.xname.clone())
            .await?
            .map(|n| n.hostname)
            .unwrap_or_else(|| node.xname.clone());
        if let Err(why) = ca::check_csr_names(&csr, &node.xname, &self.inner.cfg.cluster, &hostname)
        {
            return Err(self
                .refuse(Some(&node.xname), "renew", Problem::forbidden(why))
                .await);
        }
        if ca::csr_key_is(&csr, &node.key) {
            return Err(self
                .refuse(
                    Some(&node.xname),
                    "renew",
                    Problem::bad_request(
                        "renewal needs a new key: the CSR reuses the current certificate's key",
                    ),
                )
                .await);
        }
        self.issue(
            &node.xname,
            &csr,
            None,
            None,
            "renew",
            format!("renewed {}", node.serial),
        )
        .await
    }

    /// Maps a verified client certificate to its node: it must be one rackboot issued and has
    /// not revoked.
    pub async fn node_for_cert(&self, der: &[u8]) -> Result<NodeIdentity, Problem> {
        let (key, serial) = ca::cert_key_and_serial(der)
            .ok_or_else(|| Problem::unauthorized("the client certificate does not parse"))?;
        let row = self
            .inner
            .store
            .get_cert(serial.clone())
            .await?
            .ok_or_else(|| {
                Problem::unauthorized(format!(
                    "certificate {serial} was not issued by this rackboot"
                ))
            })?;
        if row.revoked_ms.is_some() {
            return Err(Problem::forbidden(format!(
                "certificate {serial} of {} is revoked",
                row.xname
            )));
        }
        if row.not_after_ms < crate::store::now_ms() {
            return Err(Problem::unauthorized(format!(
                "certificate {serial} expired"
            )));
        }
        Ok(NodeIdentity {
            xname: row.xname,
            serial,
            key,
        })
    }

    /// The DER CRL of every revoked certificate that has not expired.
    pub async fn crl(&self) -> Result<Vec<u8>, Problem> {
        let revoked: Vec<(String, i64)> = self
            .inner
            .store
            .revoked_certs()
            .await?
            .into_iter()
            .map(|c| (c.serial, c.revoked_ms.unwrap_or(0)))
            .collect();
        let n = self
            .inner
            .crl_number
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner
            .ca
            .crl(&revoked, n, Duration::from_secs(3600))
            .map_err(Problem::internal)
    }

    /// The HTTPS listener's config (issuing its certificate on first use).
    pub fn server_config(&self, names: &[String]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        if let Some(c) = self
            .inner
            .server
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(c);
        }
        self.renew_server_cert(names)
    }

    /// Issues a fresh server certificate and swaps it in (new connections use it).
    pub fn renew_server_cert(&self, names: &[String]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let (chain, key) = self
            .inner
            .ca
            .issue_server(names, self.inner.cfg.server_cert_lifetime)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = self.inner.ca.cert_der() {
            roots.add(ca.clone())?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        *self.inner.server.write().unwrap_or_else(|p| p.into_inner()) = Some(cfg.clone());
        tracing::info!(names = ?names, lifetime = %humantime::format_duration(self.inner.cfg.server_cert_lifetime), "HTTPS server certificate issued by the rack CA");
        Ok(cfg)
    }
}
