//! TPM-attested enrollment state: which EK (SHA-256 of its public key) belongs to which node,
//! pre-registered by an operator or bound on first use. Every change is audited in the same
//! transaction.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::identity::append_audit;
use super::{Audit, Store, StoreError, now_ms};

/// A node's bound EK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmEk {
    pub xname: String,
    /// `sha256:<hex>` of the EK's SubjectPublicKeyInfo (DER).
    pub ek_hash: String,
    /// `operator` (pre-registered) or `tofu` (bound on first enrollment).
    pub source: String,
    pub updated_ms: i64,
}

impl Store {
    pub async fn tpm_ek(&self, xname: String) -> Result<Option<TpmEk>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT xname, ek_hash, source, updated_ms FROM tpm_eks WHERE xname = ?1",
                [xname],
                |r| {
                    Ok(TpmEk {
                        xname: r.get(0)?,
                        ek_hash: r.get(1)?,
                        source: r.get(2)?,
                        updated_ms: r.get(3)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    /// Binds `ek_hash` to `xname`. With `replace` (an operator), an existing binding of the node
    /// is replaced; without it (first use), a node that has one meanwhile is a
    /// [`StoreError::Conflict`]. An EK bound to another node is always a conflict.
    pub async fn bind_tpm_ek(
        &self,
        xname: String,
        ek_hash: String,
        source: &'static str,
        replace: bool,
        audit: Audit,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            let other: Option<String> = tx
                .query_row(
                    "SELECT xname FROM tpm_eks WHERE ek_hash = ?1 AND xname != ?2",
                    params![ek_hash, xname],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(o) = other {
                return Err(StoreError::Conflict(format!(
                    "EK {ek_hash} is bound to {o}: one TPM belongs to one node (clear it there first)"
                )));
            }
            let sql = if replace {
                "INSERT INTO tpm_eks (xname, ek_hash, source, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(xname) DO UPDATE SET ek_hash = excluded.ek_hash,
                   source = excluded.source, updated_ms = excluded.updated_ms"
            } else {
                "INSERT INTO tpm_eks (xname, ek_hash, source, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(xname) DO NOTHING"
            };
            let n = tx.execute(sql, params![xname, ek_hash, source, now_ms()])?;
            if n != 1 {
                return Err(StoreError::Conflict(format!(
                    "{xname} was bound to another EK meanwhile"
                )));
            }
            append_audit(tx, &audit)
        })
        .await
    }

    /// Forgets `xname`'s EK (the next enrollment binds one again, or needs a new
    /// pre-registration); whether there was one.
    pub async fn clear_tpm_ek(&self, xname: String, audit: Audit) -> Result<bool, StoreError> {
        self.write(move |tx| {
            let n = tx.execute("DELETE FROM tpm_eks WHERE xname = ?1", [&xname])?;
            if n > 0 {
                append_audit(tx, &audit)?;
            }
            Ok(n > 0)
        })
        .await
    }
}
