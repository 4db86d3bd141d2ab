//! Identity service checks that need no network: token expiry, the audit's append-only
//! trigger, the names a CSR may ask for, and the CRL's contents.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::Duration;

use rackboot::config;
use rackboot::identity::Identity;
use rackboot::metrics::Metrics;
use rackboot::store::{Audit, Component, Store};
use rackboot::timeline::Timeline;

async fn setup(cfg: config::Identity) -> (tempfile::TempDir, Store, Identity) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    let timeline = Timeline::spawn(
        &mut tasks,
        store.clone(),
        Arc::new(Metrics::new()),
        5,
        tokio_util::sync::CancellationToken::new(),
    );
    std::mem::forget(tasks);
    let id = Identity::open(dir.path(), store.clone(), cfg, timeline).unwrap();
    (dir, store, id)
}

fn csr(cn: &str, sans: &[&str]) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p =
        rcgen::CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.serialize_request(&key).unwrap().pem().unwrap()
}

#[tokio::test]
async fn expired_tokens_hostile_csrs_and_the_append_only_audit() {
    let (_dir, store, id) = setup(config::Identity {
        token_ttl: Duration::ZERO,
        ..Default::default()
    })
    .await;
    let ip = "192.0.2.50".parse().unwrap();
    let x = "x1000c0s0b0n0";
    store
        .put_components(vec![Component {
            id: x.into(),
            kind: Some("Node".into()),
            state: None,
            flag: None,
            enabled: Some(true),
            role: None,
            sub_role: None,
            nid: Some(1),
            arch: None,
            class: None,
            extra: Default::default(),
        }])
        .await
        .unwrap();
    // A token that has expired.
    let t = id.mint_join_token(x, ip).await.unwrap();
    // Expiry is the thing under test: wait until the clock has passed the stored expiry
    // (token_ttl 0, so a millisecond), not for a guessed while.
    let expires = store.join_tokens_of(x.into()).await.unwrap()[0].expires_ms;
    while rackboot::store::now_ms() <= expires {
        tokio::task::yield_now().await;
    }
    let e = id.enroll(ip, &t, &csr(x, &[x])).await.unwrap_err();
    assert_eq!(e.status, 403, "{e:?}");
    assert!(e.detail.contains("expired"), "{}", e.detail);

    let (_dir2, store2, id2) = setup(config::Identity::default()).await;
    // Garbage, an oversized CSR and a CSR with a bad signature are 400s.
    let t = id2.mint_join_token(x, ip).await.unwrap();
    for bad in [
        "not a csr".to_owned(),
        "A".repeat(20_000),
        tampered(&csr(x, &[x])),
    ] {
        let e = id2.enroll(ip, &t, &bad).await.unwrap_err();
        assert_eq!(e.status, 400, "{e:?}");
    }
    // Names beyond the node's own are refused; its hostname (nid0001) and SPIFFE ID are fine.
    for (cn, sans) in [
        ("x1000c0s0b0n1", vec![]),
        (x, vec!["x1000c0s0b0n1"]),
        (x, vec!["spiffe://rack/node/x1000c0s0b0n1"]),
        (x, vec!["192.0.2.60"]),
    ] {
        let e = id2.enroll(ip, &t, &csr(cn, &sans)).await.unwrap_err();
        assert_eq!(e.status, 403, "{cn} {sans:?}: {e:?}");
    }
    let ok = id2
        .enroll(ip, &t, &csr(x, &["spiffe://rack/node/x1000c0s0b0n0", x]))
        .await
        .unwrap();
    assert_eq!(ok.state, "issued");
    // Unknown token: refused, audited without a node.
    let e = id2.enroll(ip, "nope", &csr(x, &[])).await.unwrap_err();
    assert_eq!(e.status, 403);

    // The audit is append-only, even for someone with the database.
    let rows = store2.list_audit(None).await.unwrap();
    assert!(rows.iter().any(|r| r.action == "enroll" && r.ok));
    assert!(rows.iter().filter(|r| !r.ok).count() >= 8, "{rows:?}");
    let db = rusqlite::Connection::open(_dir2.path().join("rackboot.db")).unwrap();
    assert!(db.execute("UPDATE identity_audit SET ok = 1", []).is_err());
    assert!(db.execute("DELETE FROM identity_audit", []).is_err());
    store2
        .audit(Audit {
            xname: None,
            action: "note",
            serial: None,
            ok: true,
            detail: "appending still works".into(),
        })
        .await
        .unwrap();

    // The CRL lists exactly the revoked certificates, signed by the CA.
    let serial = ok.serial.unwrap();
    assert!(!crl_has(&id2, &serial).await);
    store2
        .revoke_certs(Some(serial.clone()), None, "test".into())
        .await
        .unwrap();
    assert!(crl_has(&id2, &serial).await);
}

/// The CSR with one byte of its signed subject changed: its signature no longer verifies.
fn tampered(pem: &str) -> String {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let at = der.windows(13).position(|w| w == b"x1000c0s0b0n0").unwrap();
    der[at + 12] = b'9';
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n")
}

async fn crl_has(id: &Identity, serial: &str) -> bool {
    use x509_parser::prelude::FromDer;
    let der = id.crl().await.unwrap();
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
    let ca = id.ca().cert_der().unwrap().clone();
    let (_, ca) = x509_parser::certificate::X509Certificate::from_der(&ca).unwrap();
    crl.verify_signature(ca.public_key()).unwrap();
    crl.iter_revoked_certificates()
        .any(|r| hex::encode(r.raw_serial()) == serial)
}
