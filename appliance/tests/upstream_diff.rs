//! `Store::apply_upstream` is a diff: applying the same snapshot again writes nothing.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use rackboot::store::{BootParameters, Store, UpstreamSnapshot};

#[tokio::test]
async fn the_same_snapshot_twice_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bp = |i: u32| BootParameters {
        hosts: vec![format!("x1000c0s{i}b0n0")],
        macs: vec![format!("52:54:00:00:00:{i:02x}")],
        nids: vec![i64::from(i) + 1],
        kernel: "http://k".into(),
        initrd: "http://i".into(),
        params: "console=ttyS0".into(),
        cloud_init: None,
    };
    let snap = UpstreamSnapshot {
        boot_parameters: (0..3).map(bp).collect(),
        ..Default::default()
    };
    let first = store.apply_upstream(snap.clone(), true).await.unwrap();
    assert_eq!(first.written, 3);
    let again = store.apply_upstream(snap, true).await.unwrap();
    assert_eq!((again.written, again.deleted), (0, 0), "{again:?}");
}
