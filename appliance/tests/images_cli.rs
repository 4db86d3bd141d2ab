//! The real `rackboot image` commands on a data dir.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::{Command, Output};

use serde_json::Value;

fn rackboot(args: &[&str], data_dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rackboot"))
        .env_remove("RACKBOOT_DATA_DIR")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap()
}

#[test]
fn import_list_rm_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("vmlinuz");
    std::fs::write(&src, vec![7u8; 300_000]).unwrap();

    let out = rackboot(
        &[
            "image",
            "import",
            "-o",
            "json",
            "kernel",
            src.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{out:?}");
    let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rec["name"], "kernel");
    assert_eq!(rec["size"], 300_000);

    let out = rackboot(&["image", "list", "-o", "json"], dir.path());
    assert!(out.status.success(), "{out:?}");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "kernel");
    assert_eq!(list[0]["sha256"], rec["sha256"]);

    let out = rackboot(&["image", "list"], dir.path());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("kernel") && table.contains("300000"),
        "{table}"
    );

    let out = rackboot(&["image", "rm", "kernel"], dir.path());
    assert!(out.status.success(), "{out:?}");
    let out = rackboot(&["image", "rm", "kernel"], dir.path());
    assert!(!out.status.success());
    let out = rackboot(&["image", "list", "-o", "json"], dir.path());
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list, Value::Array(vec![]));
}

#[test]
fn import_refuses_bad_names_missing_files_and_wrong_digests() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    std::fs::write(&src, b"data").unwrap();
    let src = src.to_str().unwrap();
    for args in [
        vec!["image", "import", "../x", src],
        vec!["image", "import", "ok", "/nonexistent/file"],
        vec!["image", "import", "--sha256", &"a".repeat(64), "ok", src],
    ] {
        let out = rackboot(&args, dir.path());
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    }
    let out = rackboot(&["image", "list", "-o", "json"], dir.path());
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list, Value::Array(vec![]));
}
