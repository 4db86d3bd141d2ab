//! Collection-wide SMD operations (DELETE of a whole collection, read-modify-write PATCHes of
//! several Components) and the per-node "last fetch" view BSS's `endpoint-history` serves.

use rusqlite::{OptionalExtension, params};

use super::{Component, Store, StoreError};

impl Store {
    /// SMD `DELETE /State/Components`: how many were deleted.
    pub async fn delete_all_components(&self) -> Result<usize, StoreError> {
        self.write_inventory(|tx| Ok(tx.execute("DELETE FROM components", [])?))
            .await
    }

    /// SMD `DELETE /Inventory/EthernetInterfaces`: how many were deleted.
    pub async fn delete_all_ethernet_interfaces(&self) -> Result<usize, StoreError> {
        self.write_inventory(|tx| Ok(tx.execute("DELETE FROM ethernet_interfaces", [])?))
            .await
    }

    /// SMD `DELETE /Inventory/RedfishEndpoints`: how many were deleted.
    pub async fn delete_all_redfish_endpoints(&self) -> Result<usize, StoreError> {
        self.write_inventory(|tx| Ok(tx.execute("DELETE FROM redfish_endpoints", [])?))
            .await
    }

    /// Changes every component in `ids` with `change`, in one transaction: one unknown ID is a
    /// `NotFound` and nothing is written (SMD's bulk PATCHes are all or nothing).
    pub async fn update_components<F>(&self, ids: Vec<String>, change: F) -> Result<(), StoreError>
    where
        F: Fn(&mut Component) -> Result<(), StoreError> + Send + 'static,
    {
        self.write_inventory(move |tx| {
            for id in &ids {
                let doc: Option<String> = tx
                    .query_row("SELECT doc FROM components WHERE id = ?1", [id], |r| {
                        r.get(0)
                    })
                    .optional()?;
                let Some(doc) = doc else {
                    return Err(StoreError::NotFound(format!("no component {id}")));
                };
                let mut c: Component = serde_json::from_str(&doc)?;
                change(&mut c)?;
                tx.execute(
                    "UPDATE components SET nid = ?2, doc = ?3 WHERE id = ?1",
                    params![id, c.nid, serde_json::to_string(&c)?],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// The latest time (Unix ms) each node fetched each of `stages`, by xname (events recorded
    /// under a MAC count for the node that MAC's EthernetInterface belongs to).
    pub async fn last_fetches(
        &self,
        stages: Vec<&'static str>,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.read(move |c| {
            let mut out = Vec::new();
            let mut stmt = c.prepare(
                "SELECT COALESCE(e.xname, i.component_id) AS node, MAX(e.ts_ms)
                 FROM boot_events e LEFT JOIN ethernet_interfaces i ON i.mac = e.mac
                 WHERE e.stage = ?1 AND COALESCE(e.xname, i.component_id) IS NOT NULL
                 GROUP BY node ORDER BY node",
            )?;
            for stage in stages {
                let rows = stmt.query_map([stage], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })?;
                for row in rows {
                    let (node, ts) = row?;
                    out.push((node, stage.to_owned(), ts));
                }
            }
            Ok(out)
        })
        .await
    }
}
