//! The image index: name → (sha256, size, created). The blobs themselves live in
//! `<data-dir>/images/sha256/` (see `crate::images`); only names are state.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// One named image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    /// Lowercase hex SHA-256 of the data.
    pub sha256: String,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub created: u64,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRecord> {
    Ok(ImageRecord {
        name: r.get(0)?,
        sha256: r.get(1)?,
        size: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
        created: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
    })
}

impl Store {
    /// Records (or re-points) a name. Durable when this returns.
    pub async fn put_image(&self, rec: ImageRecord) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO images (name, sha256, size, created) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size,
                   created = excluded.created",
                params![
                    rec.name,
                    rec.sha256,
                    i64::try_from(rec.size).unwrap_or(i64::MAX),
                    i64::try_from(rec.created).unwrap_or(i64::MAX)
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Records a name unless it exists (for importing a legacy index).
    pub async fn put_image_if_absent(&self, rec: ImageRecord) -> Result<bool, StoreError> {
        self.write(move |tx| {
            Ok(tx.execute(
                "INSERT OR IGNORE INTO images (name, sha256, size, created) VALUES (?1, ?2, ?3, ?4)",
                params![
                    rec.name,
                    rec.sha256,
                    i64::try_from(rec.size).unwrap_or(i64::MAX),
                    i64::try_from(rec.created).unwrap_or(i64::MAX)
                ],
            )? > 0)
        })
        .await
    }

    pub async fn get_image(&self, name: String) -> Result<Option<ImageRecord>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT name, sha256, size, created FROM images WHERE name = ?1",
                [name],
                row,
            )
            .optional()?)
        })
        .await
    }

    /// Every image, by name.
    pub async fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare("SELECT name, sha256, size, created FROM images ORDER BY name")?;
            let rows = stmt.query_map([], row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Removes a name; returns the record and whether another name still uses its blob.
    pub async fn delete_image(
        &self,
        name: String,
    ) -> Result<Option<(ImageRecord, bool)>, StoreError> {
        self.write(move |tx| {
            let Some(rec) = tx
                .query_row(
                    "SELECT name, sha256, size, created FROM images WHERE name = ?1",
                    [&name],
                    row,
                )
                .optional()?
            else {
                return Ok(None);
            };
            tx.execute("DELETE FROM images WHERE name = ?1", [&name])?;
            let shared = tx
                .query_row(
                    "SELECT 1 FROM images WHERE sha256 = ?1 LIMIT 1",
                    [&rec.sha256],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            Ok(Some((rec, shared)))
        })
        .await
    }
}
