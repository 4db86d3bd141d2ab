use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use age::secrecy::SecretString;

use super::*;
use crate::store::Store;

const PASS: &str = "correct horse battery staple";

fn seal() -> Seal {
    Seal::Passphrase(SecretString::from(PASS.to_owned()))
}

fn unseal() -> Unseal {
    Unseal::Passphrase(SecretString::from(PASS.to_owned()))
}

/// A data dir with a store (leases, a node, images), the CA, the issuer key and both
/// sealing keys, as `rackboot serve` leaves it.
async fn fixture(root: &Path) -> (PathBuf, Store) {
    let data = root.join("data");
    let store = Store::open(&data).unwrap();
    crate::auth::issuer::LocalIssuer::load_or_create(&data).unwrap();
    crate::identity::ca::RackCa::open_or_create(&data, "rack").unwrap();
    crate::seal::Sealer::open(&data).unwrap();
    std::fs::create_dir_all(data.join("identity")).unwrap();
    crate::seal::Sealer::open_file(&data.join("identity/secrets.key"), "node secrets").unwrap();
    store
        .write(|tx| {
            for i in 0..20 {
                tx.execute(
                    "INSERT INTO leases (mac, ip, expires_ms, kind, updated_ms) VALUES (?1, ?2, 1, 'dynamic', 1)",
                    [format!("52:54:00:00:00:{i:02x}"), format!("10.0.0.{}", i + 10)],
                )?;
            }
            tx.execute(
                "INSERT INTO components (id, nid, doc) VALUES ('x1000c0s0b0n0', 1, '{\"ID\":\"x1000c0s0b0n0\",\"Type\":\"Node\"}')",
                [],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    add_image(&data, &store, "kernel", b"a kernel").await;
    add_image(&data, &store, "initrd", b"an initrd").await;
    (data, store)
}

async fn add_image(data: &Path, store: &Store, name: &str, bytes: &[u8]) -> String {
    let sha = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes));
    std::fs::create_dir_all(data.join("images/sha256")).unwrap();
    std::fs::write(data.join("images/sha256").join(&sha), bytes).unwrap();
    let (name, sha2, size) = (name.to_owned(), sha.clone(), bytes.len() as i64);
    store
        .write(move |tx| {
            tx.execute(
                "INSERT INTO images (name, sha256, size, created) VALUES (?1, ?2, ?3, 0)",
                rusqlite::params![name, sha2, size],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    sha
}

fn backup(data: &Path, target: &Path, seal: Seal) -> Created {
    create(&CreateOptions {
        data_dir: data.to_path_buf(),
        config: None,
        target: target.to_path_buf(),
        seal,
        keep: None,
    })
    .unwrap()
}

fn restore_into(archive: &Path, unseal: &Unseal, dest: &Path) -> anyhow::Result<Restored> {
    restore(
        archive,
        unseal,
        &RestoreOptions {
            data_dir: dest.to_path_buf(),
            blobs_dir: default_blobs_dir(archive),
            force: false,
        },
    )
}

/// Every file under `root` (relative) with its bytes and mode, leaving out the store files.
fn files(root: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if rel.to_string_lossy().starts_with("rackboot.db") {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                let mode = e.metadata().unwrap().permissions().mode() & 0o777;
                out.push((rel, std::fs::read(&p).unwrap(), mode));
            }
        }
    }
    out.sort();
    out
}

/// Nothing of a refused restore: the data dir was never created and no staging dir is left.
fn assert_untouched(parent: &Path, dest: &Path) {
    assert!(!dest.exists(), "{} was created", dest.display());
    let left: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".rackboot-restore"))
        .collect();
    assert!(left.is_empty(), "staging left behind: {left:?}");
}

#[tokio::test]
async fn round_trip_restores_store_keys_and_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _store) = fixture(tmp.path()).await;
    let target = tmp.path().join("backups");
    let created = backup(&data, &target, seal());
    assert_eq!(created.summary.leases, 20);
    assert_eq!(created.blobs_written, 2);
    assert!(created.archive.starts_with(&target));

    let v = verify(&created.archive, &unseal(), &target.join("blobs")).unwrap();
    assert_eq!(v.store.nodes, 1);
    assert_eq!(v.store.leases, 20);
    assert_eq!(v.store.schema_version, crate::store::backup::SCHEMA_VERSION);
    assert_eq!(v.blobs_checked, 2);
    let names: Vec<_> = v.store.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["initrd", "kernel"]);
    let kinds: Vec<_> = v.keys.iter().map(|k| k.path.as_str()).collect();
    for k in [
        "identity/ca.pem",
        "identity/ca.key",
        "identity/secrets.key",
        "bmc-credentials.key",
        "auth/issuer.pem",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }

    let dest = tmp.path().join("restored");
    let r = restore_into(&created.archive, &unseal(), &dest).unwrap();
    assert_eq!(r.store.leases, 20);
    // Every file (keys, CA, blobs) comes back byte for byte with its mode; keys stay 0600.
    assert_eq!(files(&dest), files(&data));
    for key in [
        "identity/ca.key",
        "auth/issuer.pem",
        "bmc-credentials.key",
        "identity/secrets.key",
    ] {
        let mode = std::fs::metadata(dest.join(key)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    assert_eq!(
        crate::store::backup::leases_in(&dest.join("rackboot.db")).unwrap(),
        crate::store::backup::leases_in(&data.join("rackboot.db")).unwrap()
    );
    // The restored store opens as a store.
    drop(Store::open(&dest).unwrap());
    assert_untouched(tmp.path(), &tmp.path().join("never"));
}

#[tokio::test]
async fn second_backup_copies_only_new_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, store) = fixture(tmp.path()).await;
    let target = tmp.path().join("backups");
    let first = backup(&data, &target, seal());
    assert_eq!((first.blobs_written, first.blobs_present), (2, 0));
    let blob_dir = target.join("blobs/sha256");
    let before: Vec<_> = std::fs::read_dir(&blob_dir)
        .unwrap()
        .map(|e| {
            let m = e.unwrap().metadata().unwrap();
            (m.ino(), m.mtime_nsec(), m.len())
        })
        .collect();

    let sha = add_image(&data, &store, "new", b"a new image").await;
    let second = backup(&data, &target, seal());
    assert_eq!((second.blobs_written, second.blobs_present), (1, 2));
    assert_eq!(second.blob_bytes_written, 11);
    assert_ne!(first.archive, second.archive);
    // The first two blob files are the same files, untouched.
    for (ino, mtime, len) in &before {
        let same = std::fs::read_dir(&blob_dir).unwrap().any(|e| {
            let m = e.unwrap().metadata().unwrap();
            (m.ino(), m.mtime_nsec(), m.len()) == (*ino, *mtime, *len)
        });
        assert!(same);
    }
    assert_eq!(std::fs::read_dir(&blob_dir).unwrap().count(), 3);
    assert!(blob_dir.join(sha).exists());
    // Both archives still verify against the shared blob store.
    verify(&first.archive, &unseal(), &target.join("blobs")).unwrap();
    verify(&second.archive, &unseal(), &target.join("blobs")).unwrap();
}

#[tokio::test]
async fn wrong_passphrase_is_refused_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _store) = fixture(tmp.path()).await;
    let created = backup(&data, &tmp.path().join("b"), seal());
    let wrong = Unseal::Passphrase(SecretString::from("not it".to_owned()));
    let dest = tmp.path().join("restored");
    let err = restore_into(&created.archive, &wrong, &dest).unwrap_err();
    assert!(format!("{err:#}").contains("wrong passphrase"), "{err:#}");
    assert_untouched(tmp.path(), &dest);
    let err = verify(&created.archive, &wrong, &tmp.path().join("b/blobs")).unwrap_err();
    assert!(format!("{err:#}").contains("wrong passphrase"), "{err:#}");
}

#[tokio::test]
async fn tampered_and_truncated_archives_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _store) = fixture(tmp.path()).await;
    let created = backup(&data, &tmp.path().join("b"), seal());
    let bytes = std::fs::read(&created.archive).unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    cases.push(("a flipped bit in the payload", flipped));
    let mut header = bytes.clone();
    header[40] ^= 0x01;
    cases.push(("a flipped bit in the header", header));
    cases.push(("half of it", bytes[..bytes.len() / 2].to_vec()));
    cases.push(("all but the last byte", bytes[..bytes.len() - 1].to_vec()));
    cases.push((
        "cut at a 64 KiB chunk",
        bytes[..bytes.len().min(200 + 65_536)].to_vec(),
    ));
    cases.push(("only the header", bytes[..30].to_vec()));
    cases.push(("nothing", Vec::new()));
    for (what, damaged) in cases {
        let path = tmp.path().join("b/damaged.tar.age");
        std::fs::write(&path, &damaged).unwrap();
        let dest = tmp.path().join("restored");
        let err = restore_into(&path, &unseal(), &dest).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("damaged")
                || msg.contains("truncated")
                || msg.contains("not a readable age file")
                || msg.contains("fails authentication"),
            "{what}: {msg}"
        );
        assert_untouched(tmp.path(), &dest);
        assert!(
            verify(&path, &unseal(), &tmp.path().join("b/blobs")).is_err(),
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, store) = fixture(tmp.path()).await;
    drop(store);
    let conn = rusqlite::Connection::open(data.join("rackboot.db")).unwrap();
    conn.pragma_update(
        None,
        "user_version",
        crate::store::backup::SCHEMA_VERSION + 1,
    )
    .unwrap();
    drop(conn);
    let created = backup(&data, &tmp.path().join("b"), seal());
    let dest = tmp.path().join("restored");
    let err = restore_into(&created.archive, &unseal(), &dest).unwrap_err();
    assert!(
        format!("{err:#}").contains("newer than this rackboot"),
        "{err:#}"
    );
    assert_untouched(tmp.path(), &dest);
    let err = verify(&created.archive, &unseal(), &tmp.path().join("b/blobs")).unwrap_err();
    assert!(
        format!("{err:#}").contains("newer than this rackboot"),
        "{err:#}"
    );
}

#[tokio::test]
async fn a_damaged_or_missing_blob_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _store) = fixture(tmp.path()).await;
    let target = tmp.path().join("b");
    let created = backup(&data, &target, seal());
    let blob = created.manifest.blobs[0].sha256.clone();
    let path = target.join("blobs/sha256").join(&blob);
    std::fs::write(&path, b"a kernel!").unwrap();
    let dest = tmp.path().join("restored");
    let err = restore_into(&created.archive, &unseal(), &dest).unwrap_err();
    assert!(format!("{err:#}").contains("damaged"), "{err:#}");
    assert_untouched(tmp.path(), &dest);
    std::fs::remove_file(&path).unwrap();
    let err = verify(&created.archive, &unseal(), &target.join("blobs")).unwrap_err();
    assert!(format!("{err:#}").contains("missing"), "{err:#}");
}

#[tokio::test]
async fn restore_refuses_a_non_empty_data_dir_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _store) = fixture(tmp.path()).await;
    let created = backup(&data, &tmp.path().join("b"), seal());
    let dest = tmp.path().join("busy");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("something"), b"keep me").unwrap();
    let err = restore_into(&created.archive, &unseal(), &dest).unwrap_err();
    assert!(format!("{err:#}").contains("not empty"), "{err:#}");
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 1);

    let r = restore(
        &created.archive,
        &unseal(),
        &RestoreOptions {
            data_dir: dest.clone(),
            blobs_dir: tmp.path().join("b/blobs"),
            force: true,
        },
    )
    .unwrap();
    let aside = PathBuf::from(r.moved_aside.unwrap());
    assert_eq!(std::fs::read(aside.join("something")).unwrap(), b"keep me");
    assert!(dest.join("rackboot.db").exists());
    assert!(!dest.join("something").exists());

    // An empty directory is fine without --force.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    restore_into(&created.archive, &unseal(), &empty).unwrap();
    assert!(empty.join("identity/ca.key").exists());
}

#[tokio::test]
async fn recipient_backups_need_the_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _store) = fixture(tmp.path()).await;
    let id = age::x25519::Identity::generate();
    let created = backup(
        &data,
        &tmp.path().join("b"),
        Seal::Recipients(vec![id.to_public()]),
    );
    let blobs = tmp.path().join("b/blobs");
    verify(&created.archive, &Unseal::Identities(vec![id]), &blobs).unwrap();
    let other = age::x25519::Identity::generate();
    let err = verify(&created.archive, &Unseal::Identities(vec![other]), &blobs).unwrap_err();
    assert!(
        format!("{err:#}").contains("not encrypted to this identity"),
        "{err:#}"
    );
    let err = verify(&created.archive, &unseal(), &blobs).unwrap_err();
    assert!(format!("{err:#}").contains("--identity"), "{err:#}");
}

#[tokio::test]
async fn backup_works_while_the_store_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, store) = fixture(tmp.path()).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                store
                    .write(move |tx| {
                        tx.execute(
                            "INSERT OR REPLACE INTO leases (mac, ip, expires_ms, kind, updated_ms) VALUES (?1, ?2, 1, 'dynamic', 1)",
                            [format!("02:00:00:{:02x}:{:02x}:{:02x}", i >> 16 & 0xff, i >> 8 & 0xff, i & 0xff), format!("10.1.{}.{}", i >> 8 & 0xff, i & 0xff)],
                        )?;
                        Ok(())
                    })
                    .await
                    .unwrap();
            }
            i
        })
    };
    // Everything committed before the backup starts must be in it.
    let committed_before = store
        .read(|c| Ok(c.query_row("SELECT count(*) FROM leases", [], |r| r.get::<_, i64>(0))?))
        .await
        .unwrap();
    let target = tmp.path().join("b");
    let created = tokio::task::spawn_blocking({
        let (data, target) = (data.clone(), target.clone());
        move || backup(&data, &target, seal())
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    assert!(created.summary.leases >= u64::try_from(committed_before).unwrap());
    let dest = tmp.path().join("restored");
    restore_into(&created.archive, &unseal(), &dest).unwrap();
    let restored = crate::store::backup::leases_in(&dest.join("rackboot.db")).unwrap();
    assert_eq!(restored.len() as u64, created.summary.leases);
}

#[test]
fn member_names_are_plain_and_ours() {
    for ok in [
        "store/rackboot.db",
        "data/identity/ca.key",
        "config/rackboot.toml",
    ] {
        archive::check_member_path(ok).unwrap();
    }
    for bad in [
        "/etc/passwd",
        "data/../x",
        "data//x",
        "data/./x",
        "other/x",
        "config/a/b",
        "store/other.db",
        "data/a b",
        "data/x\\y",
    ] {
        assert!(archive::check_member_path(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn prune_keeps_the_newest_archives_and_the_blobs_they_need() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, store) = fixture(tmp.path()).await;
    let target = tmp.path().join("b");
    let id = age::x25519::Identity::generate();
    let to = || Seal::Recipients(vec![id.to_public()]);
    let first = backup(&data, &target, to());
    store
        .write(|tx| Ok(tx.execute("DELETE FROM images WHERE name = 'kernel'", [])?))
        .await
        .unwrap();
    let kernel = first
        .manifest
        .blobs
        .iter()
        .map(|b| b.sha256.clone())
        .collect::<Vec<_>>();
    let new = add_image(&data, &store, "kernel2", b"another kernel").await;
    let second = backup(&data, &target, to());
    let third = backup(&data, &target, to());
    schedule::prune(&target, 2).unwrap();
    assert!(!first.archive.exists());
    assert!(second.archive.exists() && third.archive.exists());
    let mut left: Vec<String> = std::fs::read_dir(target.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut want: Vec<String> = third
        .manifest
        .blobs
        .iter()
        .map(|b| b.sha256.clone())
        .collect();
    want.sort();
    assert_eq!(left, want);
    assert!(left.contains(&new));
    // The blob only the first backup needed is gone; the kept ones still verify.
    assert!(kernel.iter().any(|k| !left.contains(k)));
    verify(
        &second.archive,
        &Unseal::Identities(vec![id.clone()]),
        &target.join("blobs"),
    )
    .unwrap();
}
