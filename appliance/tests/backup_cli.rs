//! `rackboot backup` as an operator runs it: where the passphrase comes from (never argv), what
//! it prints, JSON for scripts, age keys from `backup keygen`, and refusals with exit status 1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::{Command, Stdio};

fn rackboot(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rackboot"))
        .args(args)
        .env_remove("RACKBOOT_BACKUP_PASSPHRASE")
        .env_remove("RACKBOOT_BACKUP_PASSPHRASE_FILE")
        .env_remove("RACKBOOT_CONFIG")
        .env_remove("RACKBOOT_DATA_DIR")
        .envs(env.iter().copied())
        .env("RACKBOOT_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn data_dir(root: &Path) -> String {
    let d = root.join("data");
    drop(rackboot::store::Store::open(&d).unwrap());
    let d = d.to_str().unwrap().to_owned();
    let (ok, _, err) = rackboot(&["token", "jwks", "--data-dir", &d], &[]);
    assert!(ok, "{err}");
    d
}

#[tokio::test]
async fn passphrase_from_env_or_file_never_argv_and_json_for_scripts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path()).await;
    let target = tmp.path().join("b");
    let target = target.to_str().unwrap();

    // No passphrase and no terminal: a clear refusal, nothing created.
    let (ok, _, err) = rackboot(&["backup", "create", target, "--data-dir", &data], &[]);
    assert!(!ok);
    assert!(err.contains("no passphrase"), "{err}");
    assert!(err.contains("RACKBOOT_BACKUP_PASSPHRASE"), "{err}");
    assert!(!Path::new(target).exists());
    // There is no flag that takes the passphrase itself.
    let (ok, _, err) = rackboot(
        &[
            "backup",
            "create",
            target,
            "--data-dir",
            &data,
            "--passphrase",
            "x",
        ],
        &[],
    );
    assert!(!ok, "{err}");

    let env = [("RACKBOOT_BACKUP_PASSPHRASE", "from the environment")];
    let (ok, out, err) = rackboot(&["backup", "create", target, "--data-dir", &data], &env);
    assert!(ok, "{err}");
    let archive = out.trim().to_owned();
    assert!(
        archive.ends_with(".tar.age") && Path::new(&archive).is_file(),
        "{out}"
    );

    let pass_file = tmp.path().join("pass");
    std::fs::write(&pass_file, "from the environment\n").unwrap();
    let (ok, out, err) = rackboot(
        &[
            "backup",
            "verify",
            &archive,
            "-o",
            "json",
            "--passphrase-file",
            pass_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["manifest"]["format"], "rackboot-backup");
    assert!(v["store"]["schema_version"].as_i64().unwrap() > 0);
    assert!(
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["path"] == "auth/issuer.pem"),
        "{out}"
    );

    let (ok, _, err) = rackboot(
        &["backup", "verify", &archive],
        &[("RACKBOOT_BACKUP_PASSPHRASE", "wrong")],
    );
    assert!(!ok);
    assert!(err.contains("wrong passphrase"), "{err}");

    // Restore refuses the live data dir.
    let (ok, _, err) = rackboot(&["backup", "restore", &archive, "--data-dir", &data], &env);
    assert!(!ok);
    assert!(err.contains("not empty"), "{err}");
}

#[tokio::test]
async fn keygen_recipient_and_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path()).await;
    let (ok, key, recipient) = rackboot(&["backup", "keygen"], &[]);
    assert!(ok, "{recipient}");
    assert!(key.contains("AGE-SECRET-KEY-1"), "{key}");
    let recipient = recipient
        .trim()
        .strip_prefix("recipient: ")
        .unwrap()
        .to_owned();
    let key_file = tmp.path().join("key.txt");
    std::fs::write(&key_file, key).unwrap();
    let target = tmp.path().join("b");
    let (ok, out, err) = rackboot(
        &[
            "backup",
            "create",
            target.to_str().unwrap(),
            "--data-dir",
            &data,
            "--recipient",
            &recipient,
        ],
        &[],
    );
    assert!(ok, "{err}");
    let archive = out.trim().to_owned();
    let (ok, out, err) = rackboot(
        &[
            "backup",
            "verify",
            &archive,
            "--identity",
            key_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.contains("integrity:        ok"), "{out}");
    let dest = tmp.path().join("restored");
    let (ok, out, err) = rackboot(
        &[
            "backup",
            "restore",
            &archive,
            "--data-dir",
            dest.to_str().unwrap(),
            "--identity",
            key_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.contains("restored the backup"), "{out}");
    assert!(dest.join("auth/issuer.pem").is_file());
    let (ok, _, err) = rackboot(&["backup", "create", "x", "--recipient", "age1nope"], &[]);
    assert!(!ok);
    assert!(err.contains("not an age X25519 recipient"), "{err}");
}

#[tokio::test]
async fn the_data_dir_comes_from_the_config_file_which_is_backed_up() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path()).await;
    let config = tmp.path().join("rackboot.toml");
    std::fs::write(&config, format!("data_dir = {data:?}\n")).unwrap();
    let target = tmp.path().join("b");
    let env = [("RACKBOOT_BACKUP_PASSPHRASE", "p")];
    let (ok, out, err) = rackboot(
        &[
            "backup",
            "create",
            target.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        &env,
    );
    assert!(ok, "{err}");
    let archive = out.trim().to_owned();
    let dest = tmp.path().join("restored");
    let (ok, out, err) = rackboot(
        &[
            "backup",
            "restore",
            &archive,
            "--data-dir",
            dest.to_str().unwrap(),
        ],
        &env,
    );
    assert!(ok, "{err}");
    assert!(out.contains("restored-config/rackboot.toml"), "{out}");
    assert_eq!(
        std::fs::read(dest.join("restored-config/rackboot.toml")).unwrap(),
        std::fs::read(&config).unwrap()
    );
}

#[test]
fn help_says_what_target_and_archive_are() {
    let (ok, out, _) = rackboot(&["backup", "--help"], &[]);
    assert!(ok);
    assert!(out.contains("TARGET is a directory"), "{out}");
    assert!(out.contains("never from the command line"), "{out}");
}

/// Output to a reader that has gone away (`rackboot backup keygen | head -0`) ends the command
/// quietly, as for any Unix tool: no "failed printing to stdout" panic, exit status 0.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_rackboot"))
        .args(["backup", "keygen"])
        .env("RACKBOOT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(
        !err.contains("panicked") && !err.contains("failed printing"),
        "{err}"
    );
}
