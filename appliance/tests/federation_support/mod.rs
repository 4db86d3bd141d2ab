//! The OpenCHAMI-shaped upstream fixture shared by the federation tests (federation_*.rs).
#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use rackboot::config::Upstream;
use rackboot::store::Store;
use serde_json::{Value, json};

#[derive(Default)]
pub struct Seen {
    /// (method, path?query, authorization header, body)
    pub requests: Vec<(String, String, String, String)>,
    pub endpoints: Vec<String>,
}

pub fn problem(status: StatusCode, detail: &str) -> axum::response::Response {
    (
        status,
        [("content-type", "application/problem+json")],
        json!({"type": "about:blank", "title": status.canonical_reason(), "status": status.as_u16(), "detail": detail}).to_string(),
    )
        .into_response()
}

/// SMD + BSS as OpenCHAMI serves them.
pub fn openchami(seen: Arc<Mutex<Seen>>, empty_bss: bool) -> Router {
    Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let seen = seen.clone();
        async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let pq = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
            seen.lock().unwrap().requests.push((
                method.to_string(),
                pq.clone(),
                auth.clone(),
                String::from_utf8_lossy(&body).into_owned(),
            ));
            if auth != "Bearer upstream-token" {
                return problem(StatusCode::UNAUTHORIZED, "missing or invalid token");
            }
            let path = uri.path();
            let query = uri.query().unwrap_or("");
            match (method.as_str(), path) {
                ("GET", "/hsm/v2/State/Components") => {
                    let all = json!([
                        {"ID": "x1000c0s0b0n0", "Type": "Node", "State": "Ready", "Flag": "OK", "Enabled": true,
                         "Role": "Compute", "NID": 1, "NetType": "Sling", "Arch": "X86", "Class": "River"},
                        {"ID": "x1000c0s0b0", "Type": "NodeBMC", "State": "Ready", "Flag": "OK", "Enabled": true,
                         "NetType": "Sling", "Arch": "X86", "Class": "River"},
                        {"ID": "x1001c0s0b0n0", "Type": "Node", "State": "Ready", "Flag": "OK", "Enabled": true,
                         "Role": "Compute", "NID": 2, "NetType": "Sling", "Arch": "X86", "Class": "River"},
                    ]);
                    let list: Vec<Value> = all
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|c| match query.strip_prefix("id=") {
                            Some(id) => c["ID"] == id,
                            None => true,
                        })
                        .cloned()
                        .collect();
                    axum::Json(json!({"Components": list})).into_response()
                }
                ("GET", "/hsm/v2/Inventory/EthernetInterfaces") => {
                    let all = json!([
                        {"ID": "a4bf0138ee60", "Description": "", "MACAddress": "A4:BF:01:38:EE:60",
                         "LastUpdate": "2025-01-01T00:00:00.000000Z", "ComponentID": "x1000c0s0b0n0", "Type": "Node",
                         "IPAddresses": [{"IPAddress": "10.20.0.1", "Network": ""}]},
                        {"ID": "a4bf0138ee61", "Description": "", "MACAddress": "a4:bf:01:38:ee:61",
                         "LastUpdate": "2025-01-01T00:00:00.000000Z", "ComponentID": "x1001c0s0b0n0", "Type": "Node",
                         "IPAddresses": [{"IPAddress": "10.20.0.2", "Network": ""}]},
                    ]);
                    let list: Vec<Value> = all
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|e| match query.strip_prefix("MACAddress=") {
                            Some(m) => e["MACAddress"].as_str().unwrap().eq_ignore_ascii_case(m),
                            None => true,
                        })
                        .cloned()
                        .collect();
                    // SMD answers an empty filter result with an empty array, not 404.
                    axum::Json(Value::Array(list)).into_response()
                }
                ("GET", "/hsm/v2/groups") => axum::Json(json!([
                    {"label": "compute", "description": "", "tags": [], "exclusiveGroup": "",
                     "members": {"ids": ["x1000c0s0b0n0", "x1001c0s0b0n0"]}}
                ]))
                .into_response(),
                ("GET", "/boot/v1/bootparameters") if empty_bss => {
                    // BSS's quirk: "nothing" is a 404, the same as "unknown".
                    problem(StatusCode::NOT_FOUND, "Not Found")
                }
                ("GET", "/boot/v1/bootparameters") => axum::Json(json!([
                    {"macs": ["a4:bf:01:38:ee:60"], "kernel": "http://s3/kernel", "initrd": "http://s3/initrd",
                     "params": "console=ttyS0", "cloud-init": {"meta-data": null, "user-data": null, "phone-home": null}},
                    {"hosts": ["x1001c0s0b0n0"], "kernel": "http://s3/other", "initrd": "", "params": ""},
                ]))
                .into_response(),
                ("POST", "/hsm/v2/Inventory/RedfishEndpoints") => {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let id = v["ID"].as_str().unwrap_or("").to_owned();
                    let mut s = seen.lock().unwrap();
                    if s.endpoints.contains(&id) {
                        return problem(StatusCode::CONFLICT, &format!("operation would conflict with an existing resource {id}"));
                    }
                    s.endpoints.push(id);
                    (StatusCode::CREATED, axum::Json(json!([{"URI": "/hsm/v2/Inventory/RedfishEndpoints/x"}]))).into_response()
                }
                ("PATCH", "/hsm/v2/State/Components/x1000c0s0b0n0/StateData")
                | ("PATCH", "/hsm/v2/State/Components/x1000c0s0b0n0/FlagOnly") => {
                    StatusCode::NO_CONTENT.into_response()
                }
                ("PUT", p) if p.starts_with("/hsm/v2/Inventory/RedfishEndpoints/") => {
                    axum::Json(serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)).into_response()
                }
                _ => problem(StatusCode::NOT_FOUND, "no such route"),
            }
        }
    })
}

pub async fn serve(app: Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app.into_make_service()).await;
    });
    format!("http://{addr}")
}

pub fn upstream(url: &str, token_file: std::path::PathBuf) -> Upstream {
    Upstream {
        smd: url.into(),
        bss: None,
        cloud_init: None,
        xname_prefix: Some("x1000c0".into()),
        group: None,
        token_file: Some(token_file),
        oauth2: None,
        client_cert: None,
        client_key: None,
        ca_bundle: None,
        interval: Duration::from_secs(3600),
        timeout: Duration::from_secs(5),
        lookup_deadline: Duration::from_secs(2),
        lookup_concurrency: 8,
        lookup_rate: 20.0,
        lookup_burst: 20,
        lookup_negative_ttl: Duration::from_secs(60),
        max_body: rackboot::config::ByteSize(32 << 20),
        allow_local: true,
    }
}

/// What most federation tests start from: the fixture serving (`seen` records its requests),
/// a store in a temporary directory and an upstream token file in it.
pub struct Fixture {
    pub seen: Arc<Mutex<Seen>>,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub token: std::path::PathBuf,
    pub store: Store,
}

pub async fn fixture(empty_bss: bool) -> Fixture {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let url = serve(openchami(seen.clone(), empty_bss)).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "upstream-token\n").unwrap();
    let store = Store::open(dir.path()).unwrap();
    Fixture {
        seen,
        url,
        dir,
        token,
        store,
    }
}
