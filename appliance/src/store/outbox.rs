//! The outbox: what waits to be pushed upstream, queued in the same transaction as the write it
//! reports (ARCHITECTURE invariant 5) and deleted only after the upstream accepted it. Any store
//! module may [`enqueue`]; it knows nothing of the kinds it carries.

use rusqlite::{Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Store, StoreError, now_ms};

/// One queued push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub id: i64,
    pub kind: String,
    pub key: String,
    pub body: Value,
    pub created_ms: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// Queues a push inside the caller's transaction.
pub(super) fn enqueue(
    tx: &Transaction<'_>,
    kind: &str,
    key: &str,
    body: &Value,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO outbox (kind, key, body, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![kind, key, body.to_string(), now_ms()],
    )?;
    Ok(())
}

impl Store {
    /// The oldest queued pushes, in order.
    pub async fn outbox_head(&self, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT id, kind, key, body, created_ms, attempts, last_error FROM outbox ORDER BY id LIMIT ?1",
            )?;
            let rows = st.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                let body: String = r.get(3)?;
                Ok(OutboxItem {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    key: r.get(2)?,
                    body: serde_json::from_str(&body).unwrap_or(Value::Null),
                    created_ms: r.get(4)?,
                    attempts: r.get(5)?,
                    last_error: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// (depth, created_ms of the oldest).
    pub async fn outbox_depth(&self) -> Result<(i64, Option<i64>), StoreError> {
        self.read(|c| {
            Ok(
                c.query_row("SELECT COUNT(*), MIN(created_ms) FROM outbox", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?,
            )
        })
        .await
    }

    /// Drops delivered pushes.
    pub async fn outbox_done(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.write(move |tx| {
            for id in &ids {
                tx.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
            }
            Ok(())
        })
        .await
    }

    /// Records a failed delivery attempt.
    pub async fn outbox_failed(&self, id: i64, error: String) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
                params![id, error],
            )?;
            Ok(())
        })
        .await
    }

    /// Queues a push (outside an inventory write).
    pub async fn outbox_push(
        &self,
        kind: &'static str,
        key: String,
        body: Value,
    ) -> Result<(), StoreError> {
        self.write(move |tx| enqueue(tx, kind, &key, &body)).await
    }
}
