//! DHCP leases. The DHCP driver awaits these writes before it sends an ACK.

use std::net::Ipv4Addr;

use pxe_core::MacAddr;
use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, now_ms};

/// Static (inventory) or dynamic (pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRecordKind {
    Static,
    Dynamic,
}

impl LeaseRecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseRecordKind::Static => "static",
            LeaseRecordKind::Dynamic => "dynamic",
        }
    }
}

/// A persisted lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    /// Unix milliseconds.
    pub expires_ms: i64,
    pub kind: LeaseRecordKind,
    pub hostname: Option<String>,
}

/// A MAC's current lease and when it was last acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseAck {
    pub ip: Ipv4Addr,
    pub expires_ms: i64,
    /// Unix ms of the write that preceded the latest ACK (every ACK rewrites its lease before
    /// it is sent, renewals included, so this is not the start of a boot).
    pub acked_ms: i64,
}

/// One change to the leases table, for [`Store::apply_leases`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseWrite {
    Put(LeaseRecord),
    Delete(MacAddr),
}

fn put_one(tx: &rusqlite::Transaction<'_>, l: &LeaseRecord, now: i64) -> Result<(), StoreError> {
    // A dynamic address belongs to one client at a time: drop stale rows holding it.
    tx.prepare_cached("DELETE FROM leases WHERE ip = ?1 AND mac != ?2")?
        .execute(params![l.ip.to_string(), l.mac.to_string()])?;
    tx.prepare_cached(
        "INSERT INTO leases (mac, ip, expires_ms, kind, hostname, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(mac) DO UPDATE SET ip = excluded.ip, expires_ms = excluded.expires_ms,
           kind = excluded.kind, hostname = excluded.hostname, updated_ms = excluded.updated_ms",
    )?
    .execute(params![
        l.mac.to_string(),
        l.ip.to_string(),
        l.expires_ms,
        l.kind.as_str(),
        l.hostname,
        now
    ])?;
    Ok(())
}

fn delete_one(tx: &rusqlite::Transaction<'_>, mac: MacAddr) -> Result<bool, StoreError> {
    Ok(tx
        .prepare_cached("DELETE FROM leases WHERE mac = ?1")?
        .execute([mac.to_string()])?
        > 0)
}

impl Store {
    /// The lease of `mac`, with the time of its latest ACK.
    pub async fn lease_ack(&self, mac: MacAddr) -> Result<Option<LeaseAck>, StoreError> {
        self.read(move |c| {
            let row: Option<(String, i64, i64)> = c
                .query_row(
                    "SELECT ip, expires_ms, updated_ms FROM leases WHERE mac = ?1",
                    [mac.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            Ok(row.and_then(|(ip, expires_ms, acked_ms)| {
                Some(LeaseAck {
                    ip: ip.parse().ok()?,
                    expires_ms,
                    acked_ms,
                })
            }))
        })
        .await
    }

    /// Upserts leases in one durable write.
    pub async fn put_leases(&self, leases: Vec<LeaseRecord>) -> Result<(), StoreError> {
        self.apply_leases(leases.into_iter().map(LeaseWrite::Put).collect())
            .await
    }

    /// Deletes the lease of `mac`; whether there was one.
    pub async fn delete_lease(&self, mac: MacAddr) -> Result<bool, StoreError> {
        self.write(move |tx| delete_one(tx, mac)).await
    }

    /// Applies `writes` in their order in one durable write. The write is queued when this is
    /// called, not when the future is first polled: batches submitted one after another are
    /// applied in that order even while an earlier one is still being committed.
    pub fn apply_leases(
        &self,
        writes: Vec<LeaseWrite>,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        self.write(move |tx| {
            let now = now_ms();
            for w in &writes {
                match w {
                    LeaseWrite::Put(l) => put_one(tx, l, now)?,
                    LeaseWrite::Delete(mac) => {
                        delete_one(tx, *mac)?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Deletes dynamic leases that expired before `cutoff_ms` (Unix ms); returns how many.
    /// Static leases stay: they follow the inventory.
    pub async fn prune_leases(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        self.write(move |tx| {
            Ok(tx.execute(
                "DELETE FROM leases WHERE kind = 'dynamic' AND expires_ms < ?1",
                [cutoff_ms],
            )?)
        })
        .await
    }

    /// Every lease, ordered by address.
    pub async fn list_leases(&self) -> Result<Vec<LeaseRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare("SELECT mac, ip, expires_ms, kind, hostname FROM leases")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get::<_, String>(3)?,
                    r.get(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (mac, ip, expires_ms, kind, hostname) = row?;
                // Rows are only written by this module; skip (and log) anything unreadable.
                let (Ok(mac), Ok(ip)) = (mac.parse::<MacAddr>(), ip.parse::<Ipv4Addr>()) else {
                    tracing::warn!(%mac, %ip, "store: skipping an unreadable lease row");
                    continue;
                };
                let kind = if kind == "static" {
                    LeaseRecordKind::Static
                } else {
                    LeaseRecordKind::Dynamic
                };
                out.push(LeaseRecord {
                    mac,
                    ip,
                    expires_ms,
                    kind,
                    hostname,
                });
            }
            out.sort_by_key(|l| u32::from(l.ip));
            Ok(out)
        })
        .await
    }
}
