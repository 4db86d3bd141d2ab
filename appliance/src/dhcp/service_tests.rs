#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use pxe_core::boot::BootPolicy;
use pxe_core::dhcp::server::{Mode, ServerConfig, SubnetConfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Probe, spawn, view_reaches};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::timeline::{Observers, Timeline};

fn config(mode: Mode) -> ServerConfig {
    let mut subnets = heapless::Vec::new();
    subnets
        .push(SubnetConfig {
            network: Ipv4Addr::new(127, 0, 0, 0),
            prefix: 8,
            server_ip: Ipv4Addr::LOCALHOST,
            router: None,
            dns: heapless::Vec::new(),
            domain: heapless::String::new(),
            lease_time: pxe_core::Duration::from_secs(3600),
            pool: Some((Ipv4Addr::new(127, 0, 1, 10), Ipv4Addr::new(127, 0, 1, 20))),
        })
        .unwrap();
    ServerConfig {
        subnets,
        mode,
        boot: BootPolicy::new("http://127.0.0.1").unwrap(),
        offer_hold: pxe_core::Duration::from_secs(30),
        decline_quarantine: pxe_core::Duration::from_secs(600),
    }
}

/// A DHCP service on `lo` (an unused port: nothing goes on the wire) and its probe.
async fn service(
    mode: Mode,
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> (Probe, Store, std::sync::Arc<Metrics>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let metrics = std::sync::Arc::new(Metrics::new());
    let timeline = Timeline::spawn(tasks, store.clone(), metrics.clone(), 8, stop.clone());
    let probe = spawn(
        tasks,
        &tokio::runtime::Handle::current(),
        "lo",
        0,
        config(mode),
        store.clone(),
        Observers {
            metrics: metrics.clone(),
            timeline,
            on_lease: None,
            on_unknown: None,
        },
        stop.clone(),
    )
    .await
    .unwrap();
    (probe, store, metrics, dir)
}

#[tokio::test]
async fn the_running_engine_answers_the_probe_and_nothing_else_changes() {
    let (mut tasks, stop) = (JoinSet::new(), CancellationToken::new());
    let (probe, store, metrics, _dir) = service(Mode::Authoritative, &mut tasks, &stop).await;
    let before = metrics.encode();
    for _ in 0..3 {
        let said = probe.run(Duration::from_secs(10)).await.unwrap();
        assert!(said.contains("INFORM") && said.contains("ACK"), "{said}");
    }
    // No lease, no pool address, no counted packet, no timeline event.
    assert!(store.list_leases().await.unwrap().is_empty());
    assert_eq!(metrics.encode(), before);
    assert!(store.boot_status().await.unwrap().is_empty());

    // A stopped engine does not answer: the probe says so instead of waiting for ever.
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    let err = probe.run(Duration::from_millis(200)).await.unwrap_err();
    assert!(
        err.contains("did not answer") || err.contains("unanswered"),
        "{err}"
    );
}

#[tokio::test]
async fn a_proxy_dhcp_engine_answers_the_probe_too() {
    let (mut tasks, stop) = (JoinSet::new(), CancellationToken::new());
    let (probe, store, _metrics, _dir) = service(Mode::Proxy, &mut tasks, &stop).await;
    let said = probe.run(Duration::from_secs(10)).await.unwrap();
    assert!(
        said.contains("DISCOVER") && said.contains("OFFER"),
        "{said}"
    );
    assert!(store.list_leases().await.unwrap().is_empty());
    stop.cancel();
}

#[test]
fn the_lane_is_picked_from_an_ethernet_bootrequests_chaddr_only() {
    let mut p = vec![0u8; 300];
    p[..3].copy_from_slice(&[1, 1, 6]);
    p[28..34].copy_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    assert_eq!(
        super::client_mac(&p),
        Some(pxe_core::MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]))
    );
    // A reply (op 2), another hardware type, a short datagram: no MAC, the other lane.
    for (at, v) in [(0, 2u8), (1, 6), (2, 16)] {
        let mut q = p.clone();
        q[at] = v;
        assert_eq!(super::client_mac(&q), None);
    }
    assert_eq!(super::client_mac(&p[..30]), None);
    assert_eq!(super::client_mac(&[]), None);
}

/// A DISCOVER whose lookup found the node is answered only from a view loaded at or after the
/// store version the lookup wrote: an older view would offer the node a pool address (CI saw
/// that when a reload under a flood took longer than the fixed second the engine used to wait).
#[tokio::test]
async fn a_found_node_waits_for_the_view_that_has_it() {
    // The lookup stored version 5; the view published is at 3, then 4 (a reload that started
    // before the lookup's write): not enough.
    let (tx, _) = tokio::sync::watch::channel(3u64);
    tx.send_replace(4);
    let mut rx = tx.subscribe();
    let short = Duration::from_millis(50);
    assert!(!view_reaches(&mut rx, 5, short).await);
    let waiter =
        tokio::spawn(async move { view_reaches(&mut rx, 5, Duration::from_secs(60)).await });
    tx.send_replace(5);
    assert!(waiter.await.unwrap());
    // Already there (or past it): at once.
    assert!(view_reaches(&mut tx.subscribe(), 5, Duration::ZERO).await);
    assert!(view_reaches(&mut tx.subscribe(), 2, Duration::ZERO).await);
    // A refresher that stopped is not waited for.
    let mut rx = tx.subscribe();
    drop(tx);
    assert!(!view_reaches(&mut rx, 6, Duration::from_secs(3600)).await);
}
