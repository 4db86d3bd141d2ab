//! BMC credentials (sealed by `seal`; the store never sees a password) and
//! pinned BMC certificates.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, now_ms};

impl Store {
    pub async fn put_bmc_credentials(
        &self,
        target: String,
        username: String,
        sealed: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO bmc_credentials (target, username, sealed) VALUES (?1, ?2, ?3)
                 ON CONFLICT(target) DO UPDATE SET username = excluded.username, sealed = excluded.sealed",
                params![target, username, sealed],
            )?;
            Ok(())
        })
        .await
    }

    /// (username, sealed password) for `target` ("default" or a BMC address).
    pub async fn bmc_credentials(
        &self,
        target: String,
    ) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT username, sealed FROM bmc_credentials WHERE target = ?1",
                [target],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
        })
        .await
    }

    /// Targets with credentials, and their usernames (never the passwords).
    pub async fn list_bmc_credentials(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|c| {
            let mut st =
                c.prepare("SELECT target, username FROM bmc_credentials ORDER BY target")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub async fn bmc_pin(&self, base: String) -> Result<Option<String>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT sha256 FROM bmc_tls_pins WHERE base = ?1",
                [base],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    /// Records a pin unless one exists (first use wins; clearing is explicit).
    pub async fn pin_bmc(&self, base: String, sha256: String) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO bmc_tls_pins (base, sha256, pinned_ms) VALUES (?1, ?2, ?3)",
                params![base, sha256, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn unpin_bmc(&self, base: String) -> Result<bool, StoreError> {
        self.write(move |tx| {
            Ok(tx.execute("DELETE FROM bmc_tls_pins WHERE base = ?1", [base])? > 0)
        })
        .await
    }

    /// Records the switch port (option 82 circuit-id, remote-id) a BMC address was leased through.
    pub async fn put_bmc_relay_port(
        &self,
        ip: String,
        circuit_id: String,
        remote_id: String,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO bmc_relay_ports (ip, circuit_id, remote_id, seen_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(ip) DO UPDATE SET circuit_id = ?2, remote_id = ?3, seen_ms = ?4",
                params![ip, circuit_id, remote_id, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    /// The (circuit-id, remote-id) last seen for a BMC address.
    pub async fn bmc_relay_port(&self, ip: String) -> Result<Option<(String, String)>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT circuit_id, remote_id FROM bmc_relay_ports WHERE ip = ?1",
                [ip],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
        })
        .await
    }

    /// What naming one discovered BMC needs, without decoding the inventory: the xname of the
    /// endpoint already at `host` (by IPAddress, FQDN or Hostname), every endpoint ID, the
    /// highest NID, and the NIDs of `nodes` that exist.
    pub async fn discovery_names(
        &self,
        host: String,
        nodes: Vec<String>,
    ) -> Result<DiscoveryNames, StoreError> {
        self.read(move |c| {
            let existing = c
                .query_row(
                    "SELECT id FROM redfish_endpoints WHERE json_extract(doc, '$.IPAddress') = ?1
                     OR json_extract(doc, '$.FQDN') = ?1 OR json_extract(doc, '$.Hostname') = ?1
                     ORDER BY id LIMIT 1",
                    [&host],
                    |r| r.get(0),
                )
                .optional()?;
            let mut st = c.prepare("SELECT id FROM redfish_endpoints")?;
            let endpoint_ids = st
                .query_map([], |r| r.get(0))?
                .collect::<Result<std::collections::HashSet<String>, _>>()?;
            let max_nid: Option<i64> =
                c.query_row("SELECT MAX(nid) FROM components", [], |r| r.get(0))?;
            let mut node_nids = std::collections::HashMap::new();
            let mut st = c.prepare("SELECT nid FROM components WHERE id = ?1")?;
            for n in nodes {
                if let Some(Some(nid)) = st
                    .query_row([&n], |r| r.get::<_, Option<i64>>(0))
                    .optional()?
                {
                    node_nids.insert(n, nid);
                }
            }
            Ok(DiscoveryNames {
                existing,
                endpoint_ids,
                max_nid,
                node_nids,
            })
        })
        .await
    }
}

/// See [`Store::discovery_names`].
#[derive(Debug, Clone, Default)]
pub struct DiscoveryNames {
    pub existing: Option<String>,
    pub endpoint_ids: std::collections::HashSet<String>,
    pub max_nid: Option<i64>,
    pub node_nids: std::collections::HashMap<String, i64>,
}
