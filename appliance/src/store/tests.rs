#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;

fn ei(mac: &str, ip: &str, comp: &str) -> EthernetInterface {
    EthernetInterface {
        id: mac.replace(':', ""),
        description: None,
        mac_address: mac.into(),
        ip_addresses: vec![IpAddressEntry {
            ip_address: ip.into(),
            network: None,
        }],
        last_update: None,
        component_id: Some(comp.into()),
        kind: Some("Node".into()),
        extra: Default::default(),
    }
}

fn comp(id: &str, nid: i64) -> Component {
    serde_json::from_value(serde_json::json!({"ID": id, "Type": "Node", "NID": nid, "Custom": 7}))
        .unwrap()
}

#[tokio::test]
async fn inventory_and_reservations_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        let mut watch = s.subscribe_inventory();
        s.put_components(vec![comp("x1000c0s0b0n0", 1)])
            .await
            .unwrap();
        assert!(watch.has_changed().unwrap());
        watch.mark_unchanged();
        s.insert_ethernet_interface(ei("52:54:00:aa:00:01", "192.0.2.50", "x1000c0s0b0n0"))
            .await
            .unwrap();
        let dup = s
            .insert_ethernet_interface(ei("52:54:00:aa:00:01", "192.0.2.51", "x"))
            .await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))));
        assert!(watch.has_changed().unwrap());
    }
    let s = Store::open(dir.path()).unwrap();
    let r = s.reservations().await.unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].ip, Ipv4Addr::new(192, 0, 2, 50));
    assert_eq!(r[0].hostname, "nid0001");
    assert_eq!(r[0].xname, "x1000c0s0b0n0");
    // Unknown fields round-trip.
    let c = s
        .get_component("x1000c0s0b0n0".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.extra["Custom"], 7);
}

use std::net::Ipv4Addr;

#[tokio::test]
async fn boot_parameters_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let bp = BootParameters {
        hosts: vec!["x1000c0s0b0n0".into()],
        macs: vec!["52:54:00:aa:00:01".into()],
        kernel: "http://k".into(),
        initrd: "http://i".into(),
        params: "console=ttyS0".into(),
        ..Default::default()
    };
    s.insert_boot_parameters(bp.clone()).await.unwrap();
    assert!(matches!(
        s.insert_boot_parameters(bp.clone()).await,
        Err(StoreError::Conflict(_))
    ));
    let by_mac = s
        .boot_parameters_for(Some("52:54:00:aa:00:01".into()), None, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_mac.kernel, "http://k");
    assert_eq!(by_mac.hosts, vec!["x1000c0s0b0n0".to_string()]);
    // PUT for the host only moves that key to a new object.
    let put = BootParameters {
        hosts: vec!["x1000c0s0b0n0".into()],
        kernel: "http://k2".into(),
        ..Default::default()
    };
    s.upsert_boot_parameters(put).await.unwrap();
    let all = s
        .find_boot_parameters(BootSelector::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    // PATCH changes only the given field.
    let sel = BootSelector {
        macs: vec!["52:54:00:aa:00:01".into()],
        ..Default::default()
    };
    s.patch_boot_parameters(sel.clone(), serde_json::json!({"params": "quiet"}))
        .await
        .unwrap();
    let got = s.find_boot_parameters(sel.clone()).await.unwrap();
    assert_eq!(got[0].params, "quiet");
    assert_eq!(got[0].kernel, "http://k");
    let none = BootSelector {
        macs: vec!["02:00:00:00:00:00".into()],
        ..Default::default()
    };
    assert!(matches!(
        s.patch_boot_parameters(none, serde_json::json!({})).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.delete_boot_parameters(sel.clone()).await.unwrap(), 1);
    assert!(s.find_boot_parameters(sel).await.unwrap().is_empty());
}

#[tokio::test]
async fn leases_group_commit_and_refuse_future_schema() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let writes = (1..=200u8).map(|i| {
        let s = s.clone();
        async move {
            s.put_leases(vec![LeaseRecord {
                mac: pxe_core::MacAddr([2, 0, 0, 0, 0, i]),
                ip: Ipv4Addr::new(192, 0, 2, i),
                expires_ms: 1,
                kind: LeaseRecordKind::Dynamic,
                hostname: None,
            }])
            .await
        }
    });
    for r in futures_util::future::join_all(writes).await {
        r.unwrap();
    }
    assert_eq!(s.list_leases().await.unwrap().len(), 200);
    drop(s);
    let conn = rusqlite::Connection::open(dir.path().join("rackboot.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Store::open(dir.path()).err().unwrap().to_string();
    assert!(err.contains("newer"), "{err}");
}

/// Lease writes are applied in the order given within a batch, and batches in the order they
/// were submitted, even when the second is submitted before the first is durable (the DHCP
/// committer keeps two in flight).
#[tokio::test]
async fn lease_writes_apply_in_submission_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let lease = |i: u8, last: u8| LeaseRecord {
        mac: pxe_core::MacAddr([2, 0, 0, 0, 0, i]),
        ip: Ipv4Addr::new(192, 0, 2, last),
        expires_ms: 1,
        kind: LeaseRecordKind::Dynamic,
        hostname: None,
    };
    let mac = |i: u8| pxe_core::MacAddr([2, 0, 0, 0, 0, i]);
    // One batch: client 1 releases, then takes a lease again; client 2 the other way round.
    s.apply_leases(vec![
        LeaseWrite::Put(lease(2, 20)),
        LeaseWrite::Delete(mac(1)),
        LeaseWrite::Put(lease(1, 10)),
        LeaseWrite::Delete(mac(2)),
    ])
    .await
    .unwrap();
    // Two batches, the second submitted before the first is awaited.
    let first = s.apply_leases(vec![LeaseWrite::Put(lease(3, 30))]);
    let second = s.apply_leases(vec![
        LeaseWrite::Delete(mac(3)),
        LeaseWrite::Put(lease(4, 40)),
    ]);
    let third = s.apply_leases(vec![LeaseWrite::Put(lease(3, 31))]);
    let (a, b, c) = tokio::join!(third, second, first);
    for r in [a, b, c] {
        r.unwrap();
    }
    let mut left: Vec<(u8, u8)> = s
        .list_leases()
        .await
        .unwrap()
        .iter()
        .map(|l| (l.mac.0[5], l.ip.octets()[3]))
        .collect();
    left.sort_unstable();
    assert_eq!(left, vec![(1, 10), (3, 31), (4, 40)]);
}

#[tokio::test]
async fn prune_removes_only_long_expired_dynamic_leases() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let lease = |i: u8, expires_ms: i64, kind: LeaseRecordKind| LeaseRecord {
        mac: pxe_core::MacAddr([2, 0, 0, 0, 0, i]),
        ip: Ipv4Addr::new(192, 0, 2, i),
        expires_ms,
        kind,
        hostname: None,
    };
    s.put_leases(vec![
        lease(1, 1_000, LeaseRecordKind::Dynamic),
        lease(2, 5_000, LeaseRecordKind::Dynamic),
        lease(3, 1_000, LeaseRecordKind::Static),
    ])
    .await
    .unwrap();
    assert_eq!(s.prune_leases(2_000).await.unwrap(), 1);
    let left: Vec<u8> = s
        .list_leases()
        .await
        .unwrap()
        .iter()
        .map(|l| l.mac.0[5])
        .collect();
    assert_eq!(left.len(), 2);
    assert!(left.contains(&2) && left.contains(&3), "{left:?}");
}

#[tokio::test]
async fn timeline_numbers_boots_and_keeps_the_last_n() {
    use crate::store::BootEvent;
    use crate::timeline::stage;
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let ev = |st: &str, ts: i64| BootEvent {
        mac: "52:54:00:00:00:01".into(),
        xname: None,
        boot: 0,
        ts_ms: ts,
        stage: st.into(),
        ok: true,
        detail: serde_json::json!({}),
    };
    // Four boots: DISCOVER retries stay in their boot; a DISCOVER after progress starts one.
    let mut ts = 0;
    for _ in 0..4 {
        for st in [
            stage::IPXE_DHCP_DISCOVER,
            stage::IPXE_DHCP_DISCOVER,
            stage::IPXE_DHCP,
            stage::KERNEL,
        ] {
            ts += 1;
            s.record_boot_events(vec![ev(st, ts)], 2, stage::starts_boot)
                .await
                .unwrap();
        }
    }
    let status = s.boot_status().await.unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].boot, 4);
    assert_eq!(status[0].stage, "kernel");
    assert_eq!(status[0].started_ms, 13);
    // Only the last two boots are kept.
    let kept: Vec<i64> = s
        .read(|c| {
            let mut st = c.prepare("SELECT DISTINCT boot FROM boot_events ORDER BY boot")?;
            let rows = st.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<i64>, _>>()?)
        })
        .await
        .unwrap();
    assert_eq!(kept, vec![3, 4]);
}

/// A child process writes leases and reports each acknowledged one; we SIGKILL it mid-stream
/// and check every acknowledged lease is in the reopened database.
#[test]
fn acknowledged_writes_survive_kill_9() {
    if let Ok(dir) = std::env::var("RACKBOOT_STORE_CHILD") {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let s = Store::open(std::path::Path::new(&dir)).unwrap();
            for i in 0u32.. {
                let b = i.to_be_bytes();
                s.put_leases(vec![LeaseRecord {
                    mac: pxe_core::MacAddr([2, 0, b[0], b[1], b[2], b[3]]),
                    ip: Ipv4Addr::from(0x0a00_0000 + i),
                    expires_ms: i64::from(i),
                    kind: LeaseRecordKind::Dynamic,
                    hostname: None,
                }])
                .await
                .unwrap();
                // The parent process reads this line from the child's stdout.
                #[allow(clippy::print_stdout)]
                {
                    println!("acked {i}");
                }
            }
        });
        return;
    }
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "store::tests::acknowledged_writes_survive_kill_9",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RACKBOOT_STORE_CHILD", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut acked = None;
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("acked ") {
            let n: u32 = n.parse().unwrap();
            acked = Some(n);
            if n >= 300 {
                break;
            }
        }
    }
    // SIGKILL: no destructors, no clean close of the database.
    child.kill().unwrap();
    child.wait().unwrap();
    let acked = acked.expect("child acknowledged writes");
    let conn = rusqlite::Connection::open(dir.path().join("rackboot.db")).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    for i in 0..=acked {
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM leases WHERE expires_ms = ?1",
                [i64::from(i)],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "acknowledged lease {i} is missing after kill -9");
    }
}

/// A full writer queue refuses the next write at once (nothing stored, no growth), every
/// accepted write is durable once acknowledged, and the queue takes writes again once drained.
#[tokio::test]
async fn a_full_write_queue_refuses_at_once_and_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with_queue(dir.path(), 4, Migration::Plain).unwrap();
    // Hold the writer inside a transaction until released.
    let (running_tx, running) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let blocker = s.write(move |_| {
        running_tx.send(()).unwrap();
        released.recv().unwrap();
        Ok(())
    });
    let blocker = tokio::spawn(blocker);
    running.recv().unwrap();

    let put = |i: u8| {
        let s = s.clone();
        async move {
            s.put_leases(vec![LeaseRecord {
                mac: pxe_core::MacAddr([2, 0, 0, 0, 0, i]),
                ip: std::net::Ipv4Addr::new(192, 0, 2, i),
                expires_ms: i64::MAX,
                kind: LeaseRecordKind::Dynamic,
                hostname: None,
            }])
            .await
        }
    };
    // Four fit in the queue (each queued on its task's first poll); the fifth is refused
    // without waiting.
    let accepted: Vec<_> = (1..=4).map(|i| tokio::spawn(put(i))).collect();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    match put(5).await {
        Err(StoreError::Busy { queued: 4 }) => {}
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(
        StoreError::Busy { queued: 4 }
            .to_string()
            .contains("not stored"),
    );
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    for a in accepted {
        a.await.unwrap().unwrap();
    }
    let leases = s.list_leases().await.unwrap();
    let macs: Vec<u8> = leases.iter().map(|l| l.mac.0[5]).collect();
    assert_eq!(macs.len(), 4, "{macs:?}");
    assert!(!macs.contains(&5), "the refused write was not stored");
    // Drained: writes are taken again.
    put(6).await.unwrap();
}

/// A store at schema version `version` holding one static lease, as an older rackboot left it.
fn older_store(dir: &Path, version: usize) {
    let mut conn = rusqlite::Connection::open(dir.join("rackboot.db")).unwrap();
    configure(&conn).unwrap();
    schema::migrate_to(&mut conn, version).unwrap();
    conn.execute(
        "INSERT INTO leases (mac, ip, expires_ms, kind, hostname, updated_ms) \
         VALUES ('02:00:00:00:00:01', '192.0.2.1', 0, 'static', NULL, 0)",
        [],
    )
    .unwrap();
}

fn user_version(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn a_failed_trial_that_migrated_the_store_rolls_back_to_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let before = schema::LATEST as usize - 1;
    older_store(data, before);
    let copy = data.join(trial::PRE_UPDATE_COPY);

    // The trial boot copies the store before migrating it, then serves and takes writes.
    {
        let s = Store::open_for(data, Migration::Trial).unwrap();
        s.put_components(vec![comp("x1000c0s0b0n9", 9)])
            .await
            .unwrap();
    }
    assert_eq!(user_version(&copy), before as i64);
    assert_eq!(user_version(&data.join("rackboot.db")), schema::LATEST);
    // A restart within the same trial keeps the older copy.
    drop(Store::open_for(data, Migration::Trial).unwrap());
    assert_eq!(user_version(&copy), before as i64);

    // Say the trial's version had one migration more than the one that comes back.
    let conn = rusqlite::Connection::open(data.join("rackboot.db")).unwrap();
    conn.pragma_update(None, "user_version", schema::LATEST + 1)
        .unwrap();
    drop(conn);
    // Outside a rollback, a newer store is refused as ever, and the copy is left alone.
    let err = Store::open(data).err().unwrap().to_string();
    assert!(err.contains("newer"), "{err}");
    assert!(copy.exists());

    // The previous slot after the failed trial: back to the copy, the trial's store set aside.
    let s = Store::open_for(data, Migration::RolledBack).unwrap();
    let leases = s.list_leases().await.unwrap();
    assert_eq!(leases.len(), 1, "the lease from before the update is kept");
    assert!(
        s.get_component("x1000c0s0b0n9".into())
            .await
            .unwrap()
            .is_none(),
        "the trial's write is only in the set-aside store"
    );
    drop(s);
    assert!(!copy.exists());
    assert_eq!(
        user_version(&data.join(trial::FAILED_UPDATE)),
        schema::LATEST + 1
    );
    let kept = rusqlite::Connection::open(data.join(trial::FAILED_UPDATE)).unwrap();
    let n: i64 = kept
        .query_row(
            "SELECT count(*) FROM components WHERE id = 'x1000c0s0b0n9'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1, "what the failed trial wrote is kept for an operator");
}

#[tokio::test]
async fn a_trial_that_left_an_openable_store_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    older_store(data, schema::LATEST as usize - 1);
    let copy = data.join(trial::PRE_UPDATE_COPY);
    {
        let s = Store::open_for(data, Migration::Trial).unwrap();
        s.put_components(vec![comp("x1000c0s0b0n9", 9)])
            .await
            .unwrap();
    }
    assert!(copy.exists());
    // Rolled back, but this version opens the trial's store: every write stays.
    let s = Store::open_for(data, Migration::RolledBack).unwrap();
    assert!(
        s.get_component("x1000c0s0b0n9".into())
            .await
            .unwrap()
            .is_some()
    );
    assert!(!copy.exists());
    assert!(!data.join(trial::FAILED_UPDATE).exists());
    drop(s);

    // A current store is never copied; a confirmed trial drops the copy.
    drop(Store::open_for(data, Migration::Trial).unwrap());
    assert!(!copy.exists());
    let other = tempfile::tempdir().unwrap();
    older_store(other.path(), 3);
    drop(Store::open_for(other.path(), Migration::Trial).unwrap());
    assert!(other.path().join(trial::PRE_UPDATE_COPY).exists());
    trial::confirm(other.path()).unwrap();
    assert!(!other.path().join(trial::PRE_UPDATE_COPY).exists());
    trial::confirm(other.path()).unwrap();
}

/// Read connections keep a small page cache (memory per connection), the writer SQLite's own.
#[tokio::test]
async fn read_connections_keep_a_small_page_cache() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let kib = store
        .read(|c| Ok(c.query_row("PRAGMA cache_size", [], |r| r.get::<_, i64>(0))?))
        .await
        .unwrap();
    assert_eq!(kib, -super::READER_CACHE_KIB);
}

/// A storm's concurrent reads share [`READERS`] connections: a read past them waits for one to
/// finish instead of opening another connection on another blocking thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_past_the_reader_limit_wait_and_share_the_connections() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    /// Opens the gate when dropped, so a failed assertion does not leave the blocked reads (and
    /// the runtime's shutdown) waiting for ever.
    struct Open(Arc<(Mutex<bool>, std::sync::Condvar)>);
    impl Drop for Open {
        fn drop(&mut self) {
            let (open, cv) = &*self.0;
            *open.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_all();
        }
    }
    let opener = Open(gate.clone());
    let mut reads = Vec::new();
    for i in 0..READERS + 3 {
        let (s, entered_tx, gate) = (s.clone(), entered_tx.clone(), gate.clone());
        reads.push(tokio::spawn(async move {
            s.read(move |c| {
                let one: i64 = c.query_row("SELECT 1", [], |r| r.get(0))?;
                entered_tx.send(i).unwrap();
                let (open, cv) = &*gate;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                Ok(one)
            })
            .await
        }));
    }
    // READERS reads get in and block on the gate ...
    for _ in 0..READERS {
        entered.recv().await.unwrap();
    }
    assert_eq!(s.inner.read_permits.available_permits(), 0);
    // ... and the others stay out while they hold the connections.
    let more = tokio::time::timeout(Duration::from_millis(300), entered.recv()).await;
    assert!(more.is_err(), "a read past the limit ran: {more:?}");
    drop(opener);
    for r in reads {
        assert_eq!(r.await.unwrap().unwrap(), 1);
    }
    let idle = s.inner.readers.lock().unwrap().len();
    assert!(
        (1..=READERS).contains(&idle),
        "{idle} read connections for {} reads",
        READERS + 3
    );
}
