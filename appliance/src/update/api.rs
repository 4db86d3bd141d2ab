//! `/rackboot/v1/appliance` (scope `appliance`): the update status, and
//! `PUT /rackboot/v1/appliance/update?reboot=now|never|at TIME`, a streamed bundle upload installed by
//! the root updater (`daemon.rs`) into the inactive slot.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::routing::{get, put};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::http::{Json, Problem};

/// The largest bundle accepted (the image's is about 40 MB).
const MAX_BUNDLE: u64 = 1 << 30;
/// An upload that sends nothing for this long is abandoned.
const IDLE: Duration = Duration::from_secs(60);
/// The prefix exempt from the server loop's body limit and request timeout.
pub const STREAMING_PREFIX: &str = "/rackboot/v1/appliance/update";

#[derive(Clone)]
struct Ctx {
    data_dir: PathBuf,
    socket: PathBuf,
    busy: Arc<tokio::sync::Mutex<()>>,
}

pub fn router(data_dir: PathBuf) -> axum::Router {
    axum::Router::new()
        .route("/rackboot/v1/appliance", get(status))
        .route("/rackboot/v1/appliance/update", put(update))
        .with_state(Ctx {
            data_dir,
            socket: PathBuf::from(super::daemon::SOCKET),
            busy: Arc::default(),
        })
}

async fn status(State(ctx): State<Ctx>) -> Result<Json<Value>, Problem> {
    tokio::task::spawn_blocking(move || {
        super::cli::status_view(&ctx.data_dir, std::path::Path::new("/proc/cmdline"))
    })
    .await
    .map_err(Problem::internal)?
    .map(Json)
    .map_err(Problem::internal)
}

#[derive(Debug, Deserialize)]
struct UpdateQuery {
    #[serde(default)]
    reboot: Option<String>,
    /// Install a bundle older than the running version.
    #[serde(default)]
    allow_downgrade: bool,
}

async fn update(
    State(ctx): State<Ctx>,
    query: Result<Query<UpdateQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    // `at HH:MM` is resolved here, once: the updater gets an absolute time.
    let reboot: super::schedule::Reboot = q
        .reboot
        .as_deref()
        .unwrap_or("never")
        .parse()
        .map_err(Problem::bad_request)?;
    let Ok(_one) = ctx.busy.clone().try_lock_owned() else {
        return Err(Problem::conflict("an update is already being installed"));
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BUNDLE) {
        return Err(Problem::payload_too_large(format!(
            "an update bundle is at most {MAX_BUNDLE} bytes"
        )));
    }
    let path = super::daemon::incoming(&ctx.data_dir);
    let dir = path.parent().map(ToOwned::to_owned).unwrap_or_default();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(Problem::internal)?;
    let part = dir.join("incoming.rbu.part");
    let received = receive(body, &part).await;
    let bytes = match received {
        Ok(n) => n,
        Err(p) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(p);
        }
    };
    tokio::fs::rename(&part, &path)
        .await
        .map_err(Problem::internal)?;
    tracing::info!(bytes, reboot = %reboot, "appliance update uploaded; asking the updater to install it");

    let mut conn = tokio::net::UnixStream::connect(&ctx.socket).await.map_err(|e| {
        Problem::service_unavailable(format!(
            "the appliance updater is not running ({}: {e}): updates install only on the appliance image",
            ctx.socket.display()
        ))
    })?;
    let req = json!({ "reboot": reboot.to_string(), "allow_downgrade": q.allow_downgrade })
        .to_string()
        + "\n";
    conn.write_all(req.as_bytes())
        .await
        .map_err(Problem::internal)?;
    let mut lines = BufReader::new(conn).lines();
    let mut log = Vec::new();
    while let Some(line) = lines.next_line().await.map_err(Problem::internal)? {
        let v: Value = serde_json::from_str(&line).map_err(Problem::internal)?;
        if let Some(s) = v.get("say").and_then(Value::as_str) {
            tracing::info!("appliance update: {s}");
            log.push(s.to_owned());
            continue;
        }
        if v.get("ok") == Some(&Value::Bool(true)) {
            let mut done = v;
            if let Some(o) = done.as_object_mut() {
                o.insert("log".into(), json!(log));
            }
            return Ok(Json(done));
        }
        let error = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown error")
            .to_owned();
        tracing::warn!(%error, "appliance update refused");
        return Err(Problem::unprocessable(error));
    }
    Err(Problem::internal(
        "the updater closed the connection without an answer",
    ))
}

/// Streams the body into `part` (synced), at most [`MAX_BUNDLE`] bytes.
async fn receive(body: Body, part: &std::path::Path) -> Result<u64, Problem> {
    let mut file = tokio::fs::File::create(part)
        .await
        .map_err(Problem::internal)?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    loop {
        let chunk = match tokio::time::timeout(IDLE, stream.next()).await {
            Err(_) => {
                return Err(Problem::bad_request(format!(
                    "no data for {}s",
                    IDLE.as_secs()
                )));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(Problem::bad_request(format!("upload: {e}"))),
            Ok(Some(Ok(b))) => b,
        };
        total += chunk.len() as u64;
        if total > MAX_BUNDLE {
            return Err(Problem::payload_too_large(format!(
                "an update bundle is at most {MAX_BUNDLE} bytes"
            )));
        }
        file.write_all(&chunk).await.map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ENOSPC) {
                Problem::insufficient_storage("the data partition is full")
            } else {
                Problem::internal(e)
            }
        })?;
    }
    file.sync_all().await.map_err(Problem::internal)?;
    Ok(total)
}
