//! Who gets a join token on the boot path (`identity::join`): only a request from the node's
//! own inventory address, with its MAC, holding a current lease, once per boot (the DHCP ACK
//! of boot firmware, not of an installed system); one store row per token; every refusal
//! audited (but rate limiting, which is counted); expired tokens pruned; a flood from one
//! source is limited while another source is served.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pxe_core::MacAddr;
use rackboot::config;
use rackboot::identity::Identity;
use rackboot::identity::join::{BURST, BootRequest, BootTokens, REFILL, Refusal};
use rackboot::metrics::Metrics;
use rackboot::store::{Component, EthernetInterface, LeaseRecord, LeaseRecordKind, Store, now_ms};
use rackboot::timeline::Timeline;

const A: (&str, &str, &str) = ("x1000c0s0b0n0", "52:54:00:cc:00:01", "192.0.2.50");
const B: (&str, &str, &str) = ("x1000c0s0b0n1", "52:54:00:cc:00:02", "192.0.2.51");

struct Rig {
    _dir: tempfile::TempDir,
    store: Store,
    id: Identity,
    tokens: BootTokens,
    metrics: Arc<Metrics>,
    timeline: Timeline,
}

async fn rig(cfg: config::Identity) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let mut tasks = tokio::task::JoinSet::new();
    let timeline = Timeline::spawn(
        &mut tasks,
        store.clone(),
        metrics.clone(),
        5,
        tokio_util::sync::CancellationToken::new(),
    );
    std::mem::forget(tasks);
    let id = Identity::open(dir.path(), store.clone(), cfg, timeline.clone()).unwrap();
    for (n, (x, mac, ip)) in [A, B].into_iter().enumerate() {
        store
            .put_components(vec![Component {
                id: x.into(),
                kind: Some("Node".into()),
                state: None,
                flag: None,
                enabled: Some(true),
                role: None,
                sub_role: None,
                nid: Some(n as i64 + 1),
                arch: None,
                class: None,
                extra: Default::default(),
            }])
            .await
            .unwrap();
        let ei: EthernetInterface = serde_json::from_value(serde_json::json!({
            "ID": mac.replace(':', ""),
            "MACAddress": mac,
            "IPAddresses": [{"IPAddress": ip}],
            "ComponentID": x,
            "Type": "Node",
        }))
        .unwrap();
        store.insert_ethernet_interface(ei).await.unwrap();
    }
    let tokens = BootTokens::new(
        id.clone(),
        "https://192.0.2.1".into(),
        Some(metrics.clone()),
    );
    Rig {
        _dir: dir,
        store,
        id,
        tokens,
        metrics,
        timeline,
    }
}

fn mac(m: &str) -> MacAddr {
    m.parse().unwrap()
}

fn ip(a: &str) -> Ipv4Addr {
    a.parse().unwrap()
}

/// What the DHCP committer does before an ACK of `mac` at `ip`: stores the lease and, for boot
/// firmware (`boot`: PXE or iPXE, not an installed system), notes the boot. Waits until the
/// clock has moved past `after` first, so this ACK is later than anything issued before it
/// (the clock is the thing compared; the wait is a condition, not a guess).
async fn ack(r: &Rig, m: &str, a: &str, after: i64, boot: bool) {
    while now_ms() <= after {
        tokio::task::yield_now().await;
    }
    r.store
        .put_leases(vec![LeaseRecord {
            mac: mac(m),
            ip: ip(a),
            expires_ms: now_ms() + 3_600_000,
            kind: LeaseRecordKind::Static,
            hostname: None,
        }])
        .await
        .unwrap();
    if boot {
        r.timeline.boot_acked(mac(m), ip(a));
    }
}

fn req<'a>(x: &'a str, m: Option<&str>, peer: &str) -> BootRequest<'a> {
    BootRequest {
        xname: x,
        mac: m.map(mac),
        peer: Some(ip(peer)),
    }
}

fn reason(r: Result<String, Refusal>) -> &'static str {
    match r {
        Ok(_) => "token",
        Err(r) => r.reason,
    }
}

fn csr(cn: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec![cn.to_owned()]).unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.serialize_request(&key).unwrap().pem().unwrap()
}

#[tokio::test]
async fn only_the_node_itself_gets_a_token_once_per_dhcp_ack() {
    let r = rig(config::Identity::default()).await;
    // Each request at a later instant, so the per-source limit (tested below) stays out of it.
    let start = Instant::now();
    let mut n = 0u32;
    let mut later = || {
        n += 1;
        start + REFILL * BURST * n
    };
    let (x, m, a) = A;
    // Before any lease: by name, by another node's MAC, from another address, without a lease.
    assert_eq!(
        reason(r.tokens.decide(&req(x, None, a), later()).await),
        "no_mac"
    );
    assert_eq!(
        reason(r.tokens.decide(&req(x, Some(B.1), a), later()).await),
        "mac_not_node"
    );
    assert_eq!(
        reason(
            r.tokens
                .decide(&req(x, Some(m), "192.0.2.77"), later())
                .await
        ),
        "wrong_source"
    );
    assert_eq!(
        reason(r.tokens.decide(&req(x, Some(m), a), later()).await),
        "no_lease"
    );
    // A lease of the node's MAC for another address is not the node's.
    ack(&r, m, "192.0.2.99", 0, true).await;
    assert_eq!(
        reason(r.tokens.decide(&req(x, Some(m), a), later()).await),
        "no_lease"
    );

    // A lease from an installed system's DHCP (no boot firmware) is no boot.
    ack(&r, m, a, 0, false).await;
    assert_eq!(
        reason(r.tokens.decide(&req(x, Some(m), a), later()).await),
        "no_boot"
    );
    // After a boot's ACK: the first fetch gets the token, every later one in this boot does not.
    ack(&r, m, a, 0, true).await;
    let token = r.tokens.decide(&req(x, Some(m), a), later()).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            reason(r.tokens.decide(&req(x, Some(m), a), later()).await),
            "already_issued"
        );
    }
    // Minting is one row; the refusals wrote no token rows.
    let rows = r.store.join_tokens_of(x.into()).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    // The installed system's DHCP (renewals too) opens no new window.
    ack(&r, m, a, rows[0].created_ms, false).await;
    assert_eq!(
        reason(r.tokens.decide(&req(x, Some(m), a), later()).await),
        "already_issued"
    );

    // A new boot (a new ACK) hands out a new token and supersedes the unused one: the old
    // token is refused as replaced.
    ack(&r, m, a, rows[0].created_ms, true).await;
    let token2 = r.tokens.decide(&req(x, Some(m), a), later()).await.unwrap();
    assert_ne!(token, token2);
    let e = r.id.enroll(ip(a), &token, &csr(x)).await.unwrap_err();
    assert_eq!(e.status, 409, "{e:?}");
    assert!(e.detail.contains("replaced by a newer one"), "{}", e.detail);
    let rows = r.store.join_tokens_of(x.into()).await.unwrap();
    assert_eq!(
        rows.iter().filter(|t| !t.superseded()).count(),
        1,
        "one live token per node: {rows:?}"
    );
    // The token works once; a replay after enrollment is refused and audited.
    let ok = r.id.enroll(ip(a), &token2, &csr(x)).await.unwrap();
    assert_eq!(ok.state, "issued");
    let e = r.id.enroll(ip(a), &token2, &csr(x)).await.unwrap_err();
    assert_eq!(e.status, 409, "{e:?}");
    assert!(e.detail.contains("already used"), "{}", e.detail);
    // A fetch after enrollment, in the same boot, gets nothing new.
    assert_eq!(
        reason(r.tokens.decide(&req(x, Some(m), a), later()).await),
        "already_issued"
    );

    let audit = r.store.list_audit(Some(x.into())).await.unwrap();
    let count = |action: &str, ok: bool, has: &str| {
        audit
            .iter()
            .filter(|a| a.action == action && a.ok == ok && a.detail.contains(has))
            .count()
    };
    assert_eq!(
        count("join-token", true, "first boot script"),
        2,
        "{audit:?}"
    );
    assert_eq!(count("join-token", false, "already issued"), 5, "{audit:?}");
    assert_eq!(count("enroll", false, "replaced"), 1, "{audit:?}");
    assert_eq!(count("enroll", false, "already used"), 1, "{audit:?}");
}

#[tokio::test]
async fn refusals_are_audited_and_counted_and_a_flood_is_limited_per_source() {
    let r = rig(config::Identity::default()).await;
    let (x, m, a) = A;
    ack(&r, m, a, 0, true).await;
    ack(&r, B.1, B.2, 0, true).await;
    // Through `kernel_params`, as the boot route calls it: the first request gets the token.
    let p = r.tokens.kernel_params(&req(x, Some(m), a)).await;
    assert!(p.starts_with("rackboot.join=") && p.contains("rackboot.url=https://192.0.2.1"));
    // By name from the node's own address: no token, audited.
    assert_eq!(r.tokens.kernel_params(&req(x, None, a)).await, "");
    let audit = r.store.list_audit(Some(x.into())).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "join-token" && !e.ok && e.detail.starts_with("no mac")),
        "{audit:?}"
    );
    // A flood from one address: past the burst it is refused as rate limited (counted, not
    // audited), while node B, from its own address, still gets its token.
    let rows_before = r.store.list_audit(None).await.unwrap().len();
    for _ in 0..50 {
        assert_eq!(r.tokens.kernel_params(&req(x, None, a)).await, "");
    }
    let p = r.tokens.kernel_params(&req(B.0, Some(B.1), B.2)).await;
    assert!(p.starts_with("rackboot.join="), "{p}");
    let text = r.metrics.encode();
    let limited = metric(&text, "rate_limited");
    assert!(limited >= 50 - u64::from(BURST), "{text}");
    assert!(metric(&text, "no_mac") >= 1, "{text}");
    let rows_after = r.store.list_audit(None).await.unwrap().len();
    assert!(
        rows_after - rows_before <= BURST as usize + 1,
        "a flood wrote {} audit rows",
        rows_after - rows_before
    );
    // With no source address at all, nothing is handed out.
    let none = BootRequest {
        xname: x,
        mac: Some(mac(m)),
        peer: None,
    };
    assert_eq!(
        reason(r.tokens.decide(&none, Instant::now()).await),
        "no_source"
    );
}

fn metric(text: &str, reason: &str) -> u64 {
    text.lines()
        .find(|l| {
            l.starts_with("rackboot_identity_token_refusals_total{")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn expired_tokens_are_pruned_and_live_ones_kept() {
    let r = rig(config::Identity {
        token_ttl: Duration::from_secs(600),
        ..Default::default()
    })
    .await;
    let live = r.id.mint_join_token(A.0, ip(A.2)).await.unwrap();
    let _ = r.id.mint_join_token(B.0, ip(B.2)).await.unwrap();
    let rows = r.store.join_tokens_of(B.0.into()).await.unwrap();
    // Pruning "now" keeps both; pruning as of after B's expiry (the clock is the argument)
    // removes both, with no retention; with a day's retention, nothing yet.
    let n = rackboot::identity::join::prune(&r.store, now_ms(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let later = rows[0].expires_ms + 1;
    let n = rackboot::identity::join::prune(&r.store, later, Duration::from_secs(86_400))
        .await
        .unwrap();
    assert_eq!(n, 0);
    let n = rackboot::identity::join::prune(&r.store, later, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert!(r.store.join_tokens_of(B.0.into()).await.unwrap().is_empty());
    // A pruned token is unknown.
    let e = r.id.enroll(ip(A.2), &live, &csr(A.0)).await.unwrap_err();
    assert!(e.detail.contains("unknown join token"), "{}", e.detail);
}
