//! The DNS zones' SOA serial (`dns_serial`), kept with a digest of the zone it numbers.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

impl Store {
    /// The serial for `zone` with content `digest`: the stored one when the digest is unchanged,
    /// else a larger one (at least the Unix time in seconds, so a fresh data dir does not go
    /// back behind what secondaries hold), stored before it is returned.
    pub async fn dns_serial(&self, zone: String, digest: String) -> Result<u32, StoreError> {
        let now = u32::try_from(super::now_ms() / 1000).unwrap_or(u32::MAX);
        self.write(move |tx| {
            let row: Option<(i64, String)> = tx
                .query_row(
                    "SELECT serial, digest FROM dns_serial WHERE zone = ?1",
                    [&zone],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((serial, d)) = &row
                && *d == digest
            {
                return Ok(u32::try_from(*serial).unwrap_or(1));
            }
            let prev = row
                .map(|(s, _)| u32::try_from(s).unwrap_or(0))
                .unwrap_or(0);
            let next = prev.wrapping_add(1).max(now).max(1);
            tx.execute(
                "INSERT INTO dns_serial (zone, serial, digest) VALUES (?1, ?2, ?3)
                 ON CONFLICT(zone) DO UPDATE SET serial = excluded.serial, digest = excluded.digest",
                params![zone, i64::from(next), digest],
            )?;
            Ok(next)
        })
        .await
    }
}
