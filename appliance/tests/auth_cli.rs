//! The real `rackboot` binary: `token create` prints only the token, and the token it prints
//! is accepted by an `Authenticator` on the same data dir; `ApiClient` mints its own token from
//! a readable key and explains refusals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::Command;

use axum::Router;
use axum::routing::get;
use rackboot::auth::{self, Authenticator, LocalIssuer};
use rackboot::client::{ApiClient, ClientArgs, OutputFormat};
use rackboot::http::Problem;
use rackboot::http::server::{HttpLimits, serve};

fn rackboot() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rackboot"));
    c.env_remove("RACKBOOT_TOKEN")
        .env_remove("RACKBOOT_DATA_DIR");
    c
}

#[tokio::test]
async fn token_create_prints_only_a_token_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let out = rackboot()
        .args(["token", "create", "--data-dir"])
        .arg(dir.path())
        .args([
            "--scope",
            "boot:read",
            "--scope",
            "inventory:write images:read",
            "--ttl",
            "10m",
            "--subject",
            "ops",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.trim_end_matches('\n');
    assert!(!token.contains(char::is_whitespace), "stdout: {stdout:?}");
    assert_eq!(token.split('.').count(), 3);

    let issuer = LocalIssuer::load_or_create(dir.path()).unwrap();
    let authn = Authenticator::new(Some(issuer), vec![]).unwrap();
    let p = authn.verify(token).await.unwrap();
    assert_eq!(p.subject, "ops");
    let scopes: Vec<&str> = p.scopes.iter().map(String::as_str).collect();
    assert_eq!(scopes, ["boot:read", "images:read", "inventory:write"]);
}

#[test]
fn token_create_refuses_unknown_scope_and_bad_ttl() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--scope", "smd.read"],
        vec!["--scope", "admin", "--ttl", "0s"],
        vec!["--scope", "admin", "--ttl", "400d"],
        vec!["--scope", "admin", "--ttl", "soon"],
    ] {
        let out = rackboot()
            .args(["token", "create", "--data-dir"])
            .arg(dir.path())
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(out.stdout.is_empty(), "{args:?} printed a token");
    }
}

async fn start(app: Router) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, app, HttpLimits::default(), async move {
        let _ = rx.await;
    }));
    (format!("http://{addr}"), tx)
}

fn args(url: &str, token: Option<&str>, data_dir: &std::path::Path) -> ClientArgs {
    ClientArgs {
        url: url.to_owned(),
        token: token.map(str::to_owned),
        data_dir: data_dir.to_path_buf(),
        output: OutputFormat::Json,
    }
}

#[tokio::test]
async fn api_client_mints_from_the_local_key_and_reports_problems() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = LocalIssuer::load_or_create(dir.path()).unwrap();
    let authn = Authenticator::new(Some(issuer), vec![]).unwrap();
    let app = Router::new()
        .route("/boot/v1/ok", get(|| async { axum::Json(vec![1, 2, 3]) }))
        .route(
            "/boot/v1/gone",
            get(|| async { Problem::not_found("no boot parameters for x1000c0s0b0n0") }),
        )
        .layer(auth::require(authn, "boot"));
    let (url, _stop) = start(app).await;

    // Readable key, no --token: the client mints its own.
    let c = ApiClient::new(&args(&url, None, dir.path())).unwrap();
    let v: Vec<u32> = c.get("/boot/v1/ok").await.unwrap();
    assert_eq!(v, [1, 2, 3]);
    let err = c
        .get::<serde_json::Value>("/boot/v1/gone")
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("404") && msg.contains("x1000c0s0b0n0"),
        "{msg}"
    );

    // No key and no token: 401 with the hint.
    let empty = tempfile::tempdir().unwrap();
    let c = ApiClient::new(&args(&url, None, empty.path())).unwrap();
    let msg = format!(
        "{:#}",
        c.get::<serde_json::Value>("/boot/v1/ok").await.unwrap_err()
    );
    assert!(msg.contains("401") && msg.contains("--token"), "{msg}");

    // A bad token: 401 and the token is not echoed.
    let c = ApiClient::new(&args(&url, Some("not.a.jwt"), empty.path())).unwrap();
    let msg = format!(
        "{:#}",
        c.get::<serde_json::Value>("/boot/v1/ok").await.unwrap_err()
    );
    assert!(msg.contains("401") && !msg.contains("not.a.jwt"), "{msg}");
}

#[tokio::test]
async fn api_client_connection_refused_names_the_url_flag() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let empty = tempfile::tempdir().unwrap();
    let c = ApiClient::new(&args(&format!("http://{addr}"), None, empty.path())).unwrap();
    let msg = format!("{:#}", c.get::<serde_json::Value>("/x").await.unwrap_err());
    assert!(
        msg.contains("--url") && msg.contains(&addr.to_string()),
        "{msg}"
    );
}
