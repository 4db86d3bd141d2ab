//! Machine identity state: join tokens (only their SHA-256 is stored), issued certificates and
//! their revocation, enrollment requests waiting for approval, sealed node secrets, and the
//! append-only audit (a trigger refuses UPDATE and DELETE).

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, now_ms};

/// A join token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub xname: String,
    pub ip: String,
    pub created_ms: i64,
    /// Equal to `created_ms` once a newer token of the same node replaced this one.
    pub expires_ms: i64,
    pub used_ms: Option<i64>,
}

impl JoinToken {
    /// A newer token of the same node replaced this one before it was used.
    pub fn superseded(&self) -> bool {
        self.used_ms.is_none() && self.expires_ms <= self.created_ms
    }
}

/// What [`Store::issue_join_token`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issued {
    /// The token is stored; the node's other unused tokens are superseded.
    Minted,
    /// The node already had a token issued at `at_ms`, at or after the `since_ms` given: nothing
    /// was minted (the refusal audit row was appended instead).
    AlreadyIssued { at_ms: i64 },
}

/// An issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRow {
    /// Lowercase hex.
    pub serial: String,
    pub xname: String,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
    pub issued_ms: i64,
    #[serde(skip)]
    pub pem: String,
    pub revoked_ms: Option<i64>,
    pub reason: Option<String>,
}

/// An audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    pub id: i64,
    pub ts_ms: i64,
    pub xname: Option<String>,
    pub action: String,
    pub serial: Option<String>,
    pub ok: bool,
    pub detail: String,
}

/// An enrollment waiting for (or past) `rackboot cert approve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub id: String,
    pub xname: String,
    pub ip: String,
    #[serde(skip)]
    pub csr: String,
    pub created_ms: i64,
    /// `pending`, `approved` (then `serial` is set) or `denied`.
    pub state: String,
    pub serial: Option<String>,
}

/// Who a secret is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretScope {
    /// `node` or `group`.
    pub kind: String,
    pub scope: String,
}

/// One audit entry to append (inside another write, or alone).
#[derive(Debug, Clone)]
pub struct Audit {
    pub xname: Option<String>,
    pub action: &'static str,
    pub serial: Option<String>,
    pub ok: bool,
    pub detail: String,
}

pub(super) fn append_audit(tx: &Transaction<'_>, a: &Audit) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO identity_audit (ts_ms, xname, action, serial, ok, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![now_ms(), a.xname, a.action, a.serial, a.ok, a.detail],
    )?;
    Ok(())
}

fn join_token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JoinToken> {
    Ok(JoinToken {
        xname: r.get(0)?,
        ip: r.get(1)?,
        created_ms: r.get(2)?,
        expires_ms: r.get(3)?,
        used_ms: r.get(4)?,
    })
}

fn cert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CertRow> {
    Ok(CertRow {
        serial: r.get(0)?,
        xname: r.get(1)?,
        not_before_ms: r.get(2)?,
        not_after_ms: r.get(3)?,
        issued_ms: r.get(4)?,
        pem: r.get(5)?,
        revoked_ms: r.get(6)?,
        reason: r.get(7)?,
    })
}

fn request_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EnrollRequest> {
    Ok(EnrollRequest {
        id: r.get(0)?,
        xname: r.get(1)?,
        ip: r.get(2)?,
        csr: r.get(3)?,
        created_ms: r.get(4)?,
        state: r.get(5)?,
        serial: r.get(6)?,
    })
}

const CERT_COLS: &str =
    "serial, xname, not_before_ms, not_after_ms, issued_ms, pem, revoked_ms, reason";

impl Store {
    /// In one write: unless the node has a token issued at or after `since_ms` (then `refused`
    /// is appended and nothing minted), stores token `hash` for `xname` bound to `ip`,
    /// supersedes the node's other unused tokens, and appends `issued`.
    #[allow(clippy::too_many_arguments)]
    pub async fn issue_join_token(
        &self,
        hash: String,
        xname: String,
        ip: String,
        expires_ms: i64,
        since_ms: Option<i64>,
        issued: Audit,
        refused: Audit,
    ) -> Result<Issued, StoreError> {
        self.write(move |tx| {
            let now = now_ms();
            if let Some(since) = since_ms {
                let at: Option<i64> = tx.query_row(
                    "SELECT max(created_ms) FROM join_tokens WHERE xname = ?1",
                    [&xname],
                    |r| r.get(0),
                )?;
                if let Some(at) = at.filter(|at| *at >= since) {
                    append_audit(tx, &refused)?;
                    return Ok(Issued::AlreadyIssued { at_ms: at });
                }
            }
            tx.execute(
                "UPDATE join_tokens SET expires_ms = created_ms
                 WHERE xname = ?1 AND used_ms IS NULL AND expires_ms > created_ms",
                [&xname],
            )?;
            tx.execute(
                "INSERT INTO join_tokens (hash, xname, ip, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash, xname, ip, now, expires_ms.max(now + 1)],
            )?;
            append_audit(tx, &issued)?;
            Ok(Issued::Minted)
        })
        .await
    }

    /// When the newest join token of `xname` was issued (Unix ms), if it has one.
    pub async fn last_join_token_ms(&self, xname: String) -> Result<Option<i64>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT max(created_ms) FROM join_tokens WHERE xname = ?1",
                [xname],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// Deletes join tokens that expired (or were superseded) before `cutoff_ms`; how many.
    pub async fn prune_join_tokens(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        self.write(move |tx| {
            Ok(tx.execute("DELETE FROM join_tokens WHERE expires_ms < ?1", [cutoff_ms])?)
        })
        .await
    }

    /// Every join token row of `xname` (tests and diagnostics; hashes are not returned).
    pub async fn join_tokens_of(&self, xname: String) -> Result<Vec<JoinToken>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT xname, ip, created_ms, expires_ms, used_ms FROM join_tokens
                 WHERE xname = ?1 ORDER BY created_ms",
            )?;
            let rows = st.query_map([xname], join_token_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub async fn join_token(&self, hash: String) -> Result<Option<JoinToken>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT xname, ip, created_ms, expires_ms, used_ms FROM join_tokens WHERE hash = ?1",
                [hash],
                join_token_row,
            )
            .optional()?)
        })
        .await
    }

    /// In one transaction: uses up join token `token_hash` (if given; a token used meanwhile is
    /// a [`StoreError::Conflict`] and nothing is written), records `cert` (if given), records
    /// `request` (if given), and appends `audit`.
    pub async fn record_enrollment(
        &self,
        token_hash: Option<String>,
        cert: Option<CertRow>,
        request: Option<EnrollRequest>,
        audit: Audit,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            if let Some(h) = &token_hash {
                let n = tx.execute(
                    "UPDATE join_tokens SET used_ms = ?2 WHERE hash = ?1 AND used_ms IS NULL",
                    params![h, now_ms()],
                )?;
                if n != 1 {
                    return Err(StoreError::Conflict("the join token was already used".into()));
                }
            }
            if let Some(c) = &cert {
                tx.execute(
                    &format!("INSERT INTO certs ({CERT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL)"),
                    params![c.serial, c.xname, c.not_before_ms, c.not_after_ms, c.issued_ms, c.pem],
                )?;
            }
            if let Some(r) = &request {
                tx.execute(
                    "INSERT INTO enroll_requests (id, xname, ip, csr, created_ms, state, serial)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT(id) DO UPDATE SET state = excluded.state, serial = excluded.serial",
                    params![r.id, r.xname, r.ip, r.csr, r.created_ms, r.state, r.serial],
                )?;
            }
            append_audit(tx, &audit)
        })
        .await
    }

    /// Appends one audit entry.
    pub async fn audit(&self, audit: Audit) -> Result<(), StoreError> {
        self.write(move |tx| append_audit(tx, &audit)).await
    }

    pub async fn list_audit(&self, xname: Option<String>) -> Result<Vec<AuditRow>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT id, ts_ms, xname, action, serial, ok, detail FROM identity_audit
                 WHERE ?1 IS NULL OR xname = ?1 ORDER BY id",
            )?;
            let rows = st.query_map([xname], |r| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    ts_ms: r.get(1)?,
                    xname: r.get(2)?,
                    action: r.get(3)?,
                    serial: r.get(4)?,
                    ok: r.get(5)?,
                    detail: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub async fn get_cert(&self, serial: String) -> Result<Option<CertRow>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {CERT_COLS} FROM certs WHERE serial = ?1"),
                [serial],
                cert_row,
            )
            .optional()?)
        })
        .await
    }

    pub async fn list_certs(&self, xname: Option<String>) -> Result<Vec<CertRow>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {CERT_COLS} FROM certs WHERE ?1 IS NULL OR xname = ?1 ORDER BY issued_ms, serial"
            ))?;
            let rows = st.query_map([xname], cert_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Revoked certificates that have not expired yet (what the CRL lists).
    pub async fn revoked_certs(&self) -> Result<Vec<CertRow>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {CERT_COLS} FROM certs WHERE revoked_ms IS NOT NULL AND not_after_ms > ?1 ORDER BY revoked_ms"
            ))?;
            let rows = st.query_map([now_ms()], cert_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Revokes the certificate `serial`, or every unrevoked certificate of node `xname`; the
    /// revoked serials (empty when there was nothing to revoke). Audited in the same write.
    pub async fn revoke_certs(
        &self,
        serial: Option<String>,
        xname: Option<String>,
        reason: String,
    ) -> Result<Vec<String>, StoreError> {
        self.write(move |tx| {
            let serials: Vec<(String, String)> = {
                let mut st = tx.prepare(
                    "SELECT serial, xname FROM certs WHERE revoked_ms IS NULL
                     AND ((?1 IS NOT NULL AND serial = ?1) OR (?2 IS NOT NULL AND xname = ?2))",
                )?;
                let rows = st.query_map(params![serial, xname], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            for (s, x) in &serials {
                tx.execute(
                    "UPDATE certs SET revoked_ms = ?2, reason = ?3 WHERE serial = ?1",
                    params![s, now_ms(), reason],
                )?;
                append_audit(
                    tx,
                    &Audit {
                        xname: Some(x.clone()),
                        action: "revoke",
                        serial: Some(s.clone()),
                        ok: true,
                        detail: reason.clone(),
                    },
                )?;
            }
            Ok(serials.into_iter().map(|(s, _)| s).collect())
        })
        .await
    }

    pub async fn get_enroll_request(
        &self,
        id: String,
    ) -> Result<Option<EnrollRequest>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT id, xname, ip, csr, created_ms, state, serial FROM enroll_requests WHERE id = ?1",
                [id],
                request_row,
            )
            .optional()?)
        })
        .await
    }

    pub async fn list_enroll_requests(&self) -> Result<Vec<EnrollRequest>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT id, xname, ip, csr, created_ms, state, serial FROM enroll_requests ORDER BY created_ms",
            )?;
            let rows = st.query_map([], request_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Stores a sealed secret (replacing the one with the same name and scope).
    pub async fn put_secret(
        &self,
        name: String,
        scope: SecretScope,
        sealed: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO secrets (name, scope_kind, scope, sealed, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(name, scope_kind, scope) DO UPDATE SET sealed = excluded.sealed, updated_ms = excluded.updated_ms",
                params![name, scope.kind, scope.scope, sealed, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    /// Every scope secret `name` exists for, with its sealed value.
    pub async fn secret_scopes(
        &self,
        name: String,
    ) -> Result<Vec<(SecretScope, Vec<u8>)>, StoreError> {
        self.read(move |c| {
            let mut st =
                c.prepare("SELECT scope_kind, scope, sealed FROM secrets WHERE name = ?1")?;
            let rows = st.query_map([name], |r| {
                Ok((
                    SecretScope {
                        kind: r.get(0)?,
                        scope: r.get(1)?,
                    },
                    r.get(2)?,
                ))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// (name, scope) of every secret; never the values.
    pub async fn list_secrets(&self) -> Result<Vec<(String, SecretScope)>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT name, scope_kind, scope FROM secrets ORDER BY name, scope_kind, scope",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    SecretScope {
                        kind: r.get(1)?,
                        scope: r.get(2)?,
                    },
                ))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub async fn delete_secret(
        &self,
        name: String,
        scope: SecretScope,
    ) -> Result<bool, StoreError> {
        self.write(move |tx| {
            Ok(tx.execute(
                "DELETE FROM secrets WHERE name = ?1 AND scope_kind = ?2 AND scope = ?3",
                params![name, scope.kind, scope.scope],
            )? > 0)
        })
        .await
    }
}
