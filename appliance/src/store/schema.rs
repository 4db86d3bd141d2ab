//! Versioned schema: `PRAGMA user_version` is the number of migrations applied.

use rusqlite::Connection;

use super::StoreError;

/// The schema version after every migration: `PRAGMA user_version` of an up-to-date store.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

/// Applied in order; never edit one that has shipped, append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: leases, SMD inventory, BSS boot parameters.
    r#"
    CREATE TABLE leases (
        mac TEXT PRIMARY KEY,
        ip TEXT NOT NULL,
        expires_ms INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('static', 'dynamic')),
        hostname TEXT,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE components (
        id TEXT PRIMARY KEY,
        nid INTEGER,
        doc TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT 'local'
    );
    CREATE INDEX components_nid ON components(nid);
    CREATE TABLE ethernet_interfaces (
        id TEXT PRIMARY KEY,
        mac TEXT NOT NULL UNIQUE,
        component_id TEXT,
        ip TEXT,
        doc TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT 'local'
    );
    CREATE INDEX ethernet_interfaces_component ON ethernet_interfaces(component_id);
    CREATE TABLE redfish_endpoints (
        id TEXT PRIMARY KEY,
        doc TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT 'local'
    );
    CREATE TABLE boot_parameters (
        id INTEGER PRIMARY KEY,
        doc TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT 'local'
    );
    CREATE TABLE boot_parameter_keys (
        kind TEXT NOT NULL CHECK (kind IN ('host', 'mac', 'nid')),
        key TEXT NOT NULL,
        bp_id INTEGER NOT NULL REFERENCES boot_parameters(id) ON DELETE CASCADE,
        PRIMARY KEY (kind, key)
    );
    CREATE INDEX boot_parameter_keys_bp ON boot_parameter_keys(bp_id);
    CREATE TABLE groups (
        label TEXT PRIMARY KEY,
        doc TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT 'local'
    );
    "#,
    // 2: leases are also looked up by address (one address, one client).
    r#"
    CREATE INDEX leases_ip ON leases(ip);
    "#,
    // 3: the image index (names of content-addressed blobs under images/sha256/).
    r#"
    CREATE TABLE images (
        name TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        created INTEGER NOT NULL,
        owner TEXT NOT NULL DEFAULT 'local'
    );
    CREATE INDEX images_sha256 ON images(sha256);
    "#,
    // 4: cloud-init documents (cluster defaults, groups, per-node data) and the boot timeline.
    r#"
    CREATE TABLE cloud_init (
        kind TEXT NOT NULL CHECK (kind IN ('defaults', 'group', 'node')),
        key TEXT NOT NULL,
        doc TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT 'local',
        PRIMARY KEY (kind, key)
    );
    CREATE TABLE boot_events (
        id INTEGER PRIMARY KEY,
        mac TEXT NOT NULL,
        xname TEXT,
        boot INTEGER NOT NULL,
        ts_ms INTEGER NOT NULL,
        stage TEXT NOT NULL,
        ok INTEGER NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX boot_events_mac ON boot_events(mac, id);
    CREATE INDEX boot_events_xname ON boot_events(xname, id);
    CREATE INDEX ethernet_interfaces_ip ON ethernet_interfaces(ip);
    "#,
    // 5: BMC credentials (encrypted by the caller) and pinned BMC certificates.
    r#"
    CREATE TABLE bmc_credentials (
        target TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        sealed BLOB NOT NULL
    );
    CREATE TABLE bmc_tls_pins (
        base TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL,
        pinned_ms INTEGER NOT NULL
    );
    "#,
    // 6: the switch port (DHCP option 82) each BMC address was last leased through.
    r#"
    CREATE TABLE bmc_relay_ports (
        ip TEXT PRIMARY KEY,
        circuit_id TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        seen_ms INTEGER NOT NULL
    );
    "#,
    // 7: machine identity: join tokens (hashed), issued certificates, enrollment requests
    // waiting for approval, node secrets (sealed by the caller), and an append-only audit.
    r#"
    CREATE TABLE join_tokens (
        hash TEXT PRIMARY KEY,
        xname TEXT NOT NULL,
        ip TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        used_ms INTEGER
    );
    CREATE INDEX join_tokens_expires ON join_tokens(expires_ms);
    CREATE TABLE certs (
        serial TEXT PRIMARY KEY,
        xname TEXT NOT NULL,
        not_before_ms INTEGER NOT NULL,
        not_after_ms INTEGER NOT NULL,
        issued_ms INTEGER NOT NULL,
        pem TEXT NOT NULL,
        revoked_ms INTEGER,
        reason TEXT
    );
    CREATE INDEX certs_xname ON certs(xname);
    CREATE TABLE enroll_requests (
        id TEXT PRIMARY KEY,
        xname TEXT NOT NULL,
        ip TEXT NOT NULL,
        csr TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        serial TEXT
    );
    CREATE TABLE secrets (
        name TEXT NOT NULL,
        scope_kind TEXT NOT NULL,
        scope TEXT NOT NULL,
        sealed BLOB NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (name, scope_kind, scope)
    );
    CREATE TABLE identity_audit (
        id INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        xname TEXT,
        action TEXT NOT NULL,
        serial TEXT,
        ok INTEGER NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX identity_audit_xname ON identity_audit(xname, id);
    CREATE TRIGGER identity_audit_no_update BEFORE UPDATE ON identity_audit
        BEGIN SELECT RAISE(ABORT, 'identity_audit is append-only'); END;
    CREATE TRIGGER identity_audit_no_delete BEFORE DELETE ON identity_audit
        BEGIN SELECT RAISE(ABORT, 'identity_audit is append-only'); END;
    "#,
    // 8: federation: what waits to be pushed upstream, in order.
    r#"
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        body TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    "#,
    // 9: TPM-attested enrollment: each node's EK (by the SHA-256 of its public key), bound by
    // an operator or on first use; one EK belongs to one node.
    r#"
    CREATE TABLE tpm_eks (
        xname TEXT PRIMARY KEY,
        ek_hash TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    "#,
    // 10: the DNS zones' SOA serial and a digest of what it was given for, so the serial moves
    // only when the zone does and never goes back across restarts.
    r#"
    CREATE TABLE dns_serial (
        zone TEXT PRIMARY KEY,
        serial INTEGER NOT NULL,
        digest TEXT NOT NULL
    );
    "#,
];

/// Brings `conn` to the latest schema; refuses a database from a newer rackboot.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, MIGRATIONS.len())
}

/// Applies the migrations up to schema version `target` (tests make older stores with it).
pub(super) fn migrate_to(conn: &mut Connection, target: usize) -> Result<(), StoreError> {
    let version: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?
        .try_into()
        .unwrap_or(0);
    if version > MIGRATIONS.len() {
        return Err(StoreError::Invalid(format!(
            "the database has schema version {version}, newer than this rackboot understands ({}); \
             upgrade rackboot or restore a backup",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
        tracing::info!(version = i + 1, "store schema migrated");
    }
    Ok(())
}
