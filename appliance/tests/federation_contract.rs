//! Contract tests: rackboot's upstream client against fixtures written from OpenCHAMI's SMD and
//! BSS API definitions (smd api/swagger_v2.yaml, bss: bare arrays, 404 for "no match", RFC 7807
//! errors). The fixture answers exactly as those services do, including their quirks, and
//! records every request so the requests are held to the same shapes.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use rackboot::config::Upstream;
use rackboot::federation::Federation;
use rackboot::store::{RedfishEndpoint, Store};
use rackboot::timeline::Admission;
use serde_json::{Value, json};

#[derive(Default)]
struct Seen {
    /// (method, path?query, authorization header, body)
    requests: Vec<(String, String, String, String)>,
    endpoints: Vec<String>,
}

fn problem(status: StatusCode, detail: &str) -> axum::response::Response {
    (
        status,
        [("content-type", "application/problem+json")],
        json!({"type": "about:blank", "title": status.canonical_reason(), "status": status.as_u16(), "detail": detail}).to_string(),
    )
        .into_response()
}

/// SMD + BSS as OpenCHAMI serves them.
fn openchami(seen: Arc<Mutex<Seen>>, empty_bss: bool) -> Router {
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

async fn serve(app: Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app.into_make_service()).await;
    });
    format!("http://{addr}")
}

fn upstream(url: &str, token_file: std::path::PathBuf) -> Upstream {
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

#[tokio::test]
async fn pull_lookup_and_push_follow_openchami_shapes() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let url = serve(openchami(seen.clone(), false)).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "upstream-token\n").unwrap();
    let store = Store::open(dir.path()).unwrap();
    let fed = Federation::new(upstream(&url, token.clone()), store.clone()).unwrap();

    // Pull: wrapped Components, bare EthernetInterfaces (an uppercase MAC), groups, BSS.
    let stats = fed.pull().await.unwrap();
    assert!(stats.written > 0, "{stats:?}");
    let comps = store.list_components().await.unwrap();
    let ids: Vec<&str> = comps.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["x1000c0s0b0", "x1000c0s0b0n0"],
        "scope x1000c0 only"
    );
    assert_eq!(comps[1].extra["NetType"], "Sling", "unknown fields survive");
    let eis = store.list_ethernet_interfaces().await.unwrap();
    assert_eq!(eis.len(), 1);
    assert_eq!(
        eis[0].mac_address, "a4:bf:01:38:ee:60",
        "MACs stored lowercase"
    );
    let bp = store
        .boot_parameters_for(Some("a4:bf:01:38:ee:60".into()), None, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bp.kernel, "http://s3/kernel");
    let groups = store.list_groups().await.unwrap();
    assert_eq!(
        groups[0].members.ids,
        vec!["x1000c0s0b0n0"],
        "members outside scope dropped"
    );
    // A second pull of the same data writes nothing.
    let again = fed.pull().await.unwrap();
    assert_eq!(again.written + again.deleted, 0, "{again:?}");

    // The requests: the paths OpenCHAMI serves, every one with the bearer token.
    {
        let s = seen.lock().unwrap();
        let paths: Vec<&str> = s.requests.iter().map(|r| r.1.as_str()).collect();
        for want in [
            "/hsm/v2/State/Components",
            "/hsm/v2/Inventory/EthernetInterfaces",
            "/hsm/v2/groups",
            "/boot/v1/bootparameters",
        ] {
            assert!(paths.contains(&want), "{want} not requested: {paths:?}");
        }
        assert!(s.requests.iter().all(|r| r.2 == "Bearer upstream-token"));
    }

    // On-demand lookup uses SMD's own filters; out of scope stays out.
    assert!(!fed.lookup_mac("a4:bf:01:38:ee:61").await);
    {
        let s = seen.lock().unwrap();
        assert!(
            s.requests
                .iter()
                .any(|r| r.1 == "/hsm/v2/Inventory/EthernetInterfaces?MACAddress=a4:bf:01:38:ee:61"),
            "{:?}",
            s.requests
        );
    }
    assert_eq!(store.list_components().await.unwrap().len(), 2);

    // Push: magellan's POST form; a conflict becomes a PUT of the same object.
    for fqdn in ["10.1.0.5", "10.1.0.55"] {
        store
            .put_redfish_endpoint(
                RedfishEndpoint {
                    id: "x1000c0s5b0".into(),
                    extra: serde_json::from_value(json!({
                        "FQDN": fqdn, "User": "root", "MACRequired": false, "MACAddr": "",
                        "Systems": [], "Managers": [], "SchemaVersion": 1
                    }))
                    .unwrap(),
                },
                true,
            )
            .await
            .unwrap();
    }
    assert_eq!(fed.drain().await.unwrap(), 2);
    {
        let s = seen.lock().unwrap();
        let pushes: Vec<(&str, &str)> = s
            .requests
            .iter()
            .filter(|r| r.1.starts_with("/hsm/v2/Inventory/RedfishEndpoints"))
            .map(|r| (r.0.as_str(), r.1.as_str()))
            .collect();
        assert_eq!(
            pushes,
            vec![
                ("POST", "/hsm/v2/Inventory/RedfishEndpoints"),
                ("POST", "/hsm/v2/Inventory/RedfishEndpoints"),
                ("PUT", "/hsm/v2/Inventory/RedfishEndpoints/x1000c0s5b0"),
            ]
        );
        let last: Value = serde_json::from_str(&s.requests.last().unwrap().3).unwrap();
        assert_eq!(last["ID"], "x1000c0s5b0");
        assert_eq!(
            last["FQDN"], "10.1.0.55",
            "the later write is the one that lands"
        );
        assert_eq!(last["SchemaVersion"], 1);
    }
    assert_eq!(store.outbox_depth().await.unwrap().0, 0);
    // A node's state (it phoned home): SMD's StateData PATCH.
    store
        .outbox_push(
            "ComponentState",
            "x1000c0s0b0n0".into(),
            json!({"State": "Ready", "Flag": "OK"}),
        )
        .await
        .unwrap();
    assert_eq!(fed.drain().await.unwrap(), 1);
    {
        let s = seen.lock().unwrap();
        let r = s.requests.last().unwrap();
        assert_eq!(
            (r.0.as_str(), r.1.as_str()),
            ("PATCH", "/hsm/v2/State/Components/x1000c0s0b0n0/StateData")
        );
        assert_eq!(
            serde_json::from_str::<Value>(&r.3).unwrap(),
            json!({"State": "Ready", "Flag": "OK"})
        );
    }

    // A failed boot: SMD's FlagOnly PATCH.
    store
        .outbox_push(
            "ComponentFlag",
            "x1000c0s0b0n0".into(),
            json!({"Flag": "Alert"}),
        )
        .await
        .unwrap();
    assert_eq!(fed.drain().await.unwrap(), 1);
    {
        let s = seen.lock().unwrap();
        let r = s.requests.last().unwrap();
        assert_eq!(
            (r.0.as_str(), r.1.as_str(), r.3.as_str()),
            (
                "PATCH",
                "/hsm/v2/State/Components/x1000c0s0b0n0/FlagOnly",
                r#"{"Flag":"Alert"}"#
            )
        );
    }
    assert_eq!(
        fed.status().await.unwrap().pushed,
        4,
        "each delivery counted once"
    );

    // A refused token is an error that says what to do, and the outbox keeps its items.
    std::fs::write(&token, "stale").unwrap();
    let e = fed.pull().await.unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("401") && msg.contains("upstream.token_file"),
        "{msg}"
    );
    let status = fed.status().await.unwrap();
    assert!(status.last_error.unwrap().contains("expired or revoked"));
}

/// BSS's "empty is 404" quirk is an empty list, not an error (and not a reason to delete
/// everything: the components still come through).
#[tokio::test]
async fn an_empty_bss_is_a_404_and_means_nothing_to_boot() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let url = serve(openchami(seen, true)).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "upstream-token").unwrap();
    let store = Store::open(dir.path()).unwrap();
    let fed = Federation::new(upstream(&url, token), store.clone()).unwrap();
    fed.pull().await.unwrap();
    assert_eq!(store.list_components().await.unwrap().len(), 2);
    assert!(
        store
            .boot_parameters_for(Some("a4:bf:01:38:ee:60".into()), None, None)
            .await
            .unwrap()
            .is_none()
    );
}

/// OAuth2 client credentials: the token endpoint gets a form POST with the client's id and
/// secret; the token is reused for its lifetime, then fetched again.
#[tokio::test]
async fn oauth2_client_credentials_are_fetched_reused_and_refreshed() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let issued = Arc::new(Mutex::new(Vec::<String>::new()));
    let issued2 = issued.clone();
    let token = axum::routing::post(move |headers: HeaderMap, body: Bytes| {
        let issued = issued2.clone();
        async move {
            let form = String::from_utf8_lossy(&body).into_owned();
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if ct != "application/x-www-form-urlencoded"
                || !form.contains("grant_type=client_credentials")
                || !form.contains("client_id=rack-x1000c0")
                || !form.contains("client_secret=s%26cret")
            {
                return problem(StatusCode::BAD_REQUEST, &format!("bad form {ct} {form}"));
            }
            issued.lock().unwrap().push(form);
            axum::Json(
                json!({"access_token": "upstream-token", "token_type": "Bearer", "expires_in": 1}),
            )
            .into_response()
        }
    });
    let app = Router::new()
        .route("/oauth2/token", token)
        .merge(openchami(seen.clone(), false));
    let url = serve(app).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "s&cret\n").unwrap();
    let mut cfg = upstream(&url, dir.path().join("unused"));
    cfg.token_file = None;
    cfg.oauth2 = Some(rackboot::config::OAuth2 {
        token_url: format!("{url}/oauth2/token"),
        client_id: "rack-x1000c0".into(),
        client_secret_file: dir.path().join("secret"),
        scope: None,
    });
    let store = Store::open(dir.path()).unwrap();
    let fed = Federation::new(cfg, store.clone()).unwrap();
    fed.pull().await.unwrap();
    assert_eq!(
        issued.lock().unwrap().len(),
        1,
        "one token for the whole pull"
    );
    assert_eq!(store.list_components().await.unwrap().len(), 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fed.pull().await.unwrap();
    assert_eq!(
        issued.lock().unwrap().len(),
        2,
        "fetched again after expires_in"
    );
    assert!(
        seen.lock()
            .unwrap()
            .requests
            .iter()
            .all(|r| r.2 == "Bearer upstream-token")
    );
}

/// mTLS to the upstream: the client certificate from `client_cert`/`client_key` is presented,
/// and `ca_bundle` is the only trust for the upstream's certificate.
#[tokio::test]
async fn mtls_to_the_upstream_presents_the_client_certificate() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    use rackboot::http::server::{HttpLimits, PeerCertificate, TlsSource, serve_tls};
    // A CA, a server certificate for 127.0.0.1 and a client certificate, all from rcgen.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(ca_cert.der(), ca_key).unwrap();
    let leaf = |names: Vec<String>, eku: rcgen::ExtendedKeyUsagePurpose| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(names).unwrap();
        p.extended_key_usages = vec![eku];
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert, key)
    };
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into()],
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(
        vec!["rack-x1000c0".into()],
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let server_cfg = Arc::new(
        rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .unwrap(),
    );
    let source: TlsSource = Arc::new(move || Some(server_cfg.clone()));
    // The fixture: OpenCHAMI's shapes, and the client certificate must have come through.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let certs = Arc::new(Mutex::new(0usize));
    let certs2 = certs.clone();
    let app = openchami(seen, false).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let certs = certs2.clone();
            async move {
                if req.extensions().get::<PeerCertificate>().is_some() {
                    *certs.lock().unwrap() += 1;
                }
                next.run(req).await
            }
        },
    ));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve_tls(
        l,
        app,
        HttpLimits::default(),
        source,
        std::future::pending(),
    ));

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let mut cfg = upstream(
        &format!("https://{addr}"),
        write("token", "upstream-token".into()),
    );
    cfg.ca_bundle = Some(write("ca.pem", ca_cert.pem()));
    cfg.client_cert = Some(write("client.pem", client_cert.pem()));
    cfg.client_key = Some(write("client.key", client_key.serialize_pem()));
    let store = Store::open(dir.path()).unwrap();
    let fed = Federation::new(cfg.clone(), store.clone()).unwrap();
    fed.pull().await.unwrap();
    assert!(
        *certs.lock().unwrap() >= 4,
        "every request carried the client certificate"
    );
    assert_eq!(store.list_components().await.unwrap().len(), 2);
    // Without the client certificate the upstream refuses the handshake: a clear error.
    cfg.client_cert = None;
    cfg.client_key = None;
    let bare = Federation::new(cfg, Store::open(&dir.path().join("b")).unwrap()).unwrap();
    assert!(bare.pull().await.is_err());
}

/// A MAC flood cannot become an upstream flood: at most `lookup_concurrency` lookups are
/// admitted at once, at most `lookup_burst` + `lookup_rate` × elapsed reach the upstream, an
/// unknown MAC is not asked about again, a refused MAC asking again goes first, and every
/// refusal is counted.
#[tokio::test]
async fn on_demand_lookups_are_bounded_and_counted() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let url = serve(openchami(seen.clone(), false)).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "upstream-token\n").unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut cfg = upstream(&url, token);
    cfg.lookup_concurrency = 4;
    cfg.lookup_rate = 5.0;
    cfg.lookup_burst = 8;
    let metrics = Arc::new(rackboot::metrics::Metrics::new());
    let fed = Federation::with_metrics(cfg, store.clone(), metrics.clone()).unwrap();
    let lookup = fed.unknown_lookup();
    let mac = |i: u32| {
        let b = i.to_be_bytes();
        pxe_core::MacAddr([0x02, 0x42, b[0], b[1], b[2], b[3]])
    };
    let started = std::time::Instant::now();
    // A known MAC is found (and stored); it takes one of the eight tokens.
    assert!(fed.lookup_mac("a4:bf:01:38:ee:60").await);
    assert_eq!(store.list_components().await.unwrap().len(), 1);

    // 500 new MACs at once: four are admitted, the rest refused at once (no task, no wait).
    let mut admitted = Vec::new();
    for i in 0..500 {
        match lookup(mac(i)) {
            Admission::Asking(f) => admitted.push((i, f)),
            Admission::Deferred => {}
            Admission::Unknown => panic!("{i} is not known to be unknown"),
        }
    }
    assert_eq!(admitted.len(), 4, "lookup_concurrency");
    assert_eq!(fed.lookups_in_flight(), 4);
    // The same MAC while its lookup runs is not asked twice.
    assert!(matches!(lookup(mac(admitted[0].0)), Admission::Deferred));
    let asked: Vec<u32> = admitted.iter().map(|(i, _)| *i).collect();
    for (_, f) in admitted {
        assert!(!f.await, "random MACs are unknown upstream");
    }
    assert_eq!(fed.lookups_in_flight(), 0);
    // Unknown: not asked again within the negative TTL (answered as unknown).
    for i in &asked {
        assert!(matches!(lookup(mac(*i)), Admission::Unknown));
    }
    // New MACs take tokens down to the reserve (a quarter of 8) and are refused there; the
    // MAC just refused, asking again, takes a reserved token.
    let refused = (600..700)
        .find(|i| match lookup(mac(*i)) {
            Admission::Asking(f) => {
                drop(f);
                false
            }
            _ => true,
        })
        .expect("the bucket runs down to its reserve");
    let retry = lookup(mac(refused))
        .asking()
        .expect("a retransmission goes first");
    assert!(!retry.await);

    // Keep asking about new MACs for a while: the bucket (burst 8, 5/s) admits the rest.
    let mut i = 1000;
    while started.elapsed() < Duration::from_millis(1500) {
        let mut batch = Vec::new();
        for _ in 0..50 {
            i += 1;
            if let Some(f) = lookup(mac(i)).asking() {
                batch.push(f);
            }
        }
        for f in batch {
            f.await;
        }
        tokio::task::yield_now().await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let to_upstream = seen
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(|r| r.1.contains("MACAddress="))
        .count();
    let bound = 8.0 + 5.0 * elapsed;
    assert!(
        (to_upstream as f64) <= bound,
        "{to_upstream} lookups reached the upstream in {elapsed:.2}s; the limit allows {bound:.1}"
    );

    let text = metrics.encode();
    for outcome in [
        "found",
        "unknown",
        "dropped_busy",
        "dropped_rate",
        "cached_negative",
        "in_flight",
    ] {
        assert!(
            text.contains(&format!(
                "rackboot_upstream_lookups_total{{outcome=\"{outcome}\"}}"
            )),
            "{outcome} not counted:\n{text}"
        );
    }
}

/// A hostile upstream: endless or oversized answers on every route, and a token endpoint that
/// never stops talking. Every read stops at `upstream.max_body` with an error naming the URL and
/// the cap; nothing panics and nothing is stored.
#[tokio::test]
async fn endless_and_oversized_upstream_answers_are_capped() {
    use axum::body::Body;
    use futures_util::stream;

    fn endless() -> Body {
        let chunk = Bytes::from(vec![b' '; 8192]);
        Body::from_stream(stream::repeat_with(move || {
            Ok::<_, std::convert::Infallible>(chunk.clone())
        }))
    }
    let app = Router::new()
        // Chunked, no end: only the cap stops it.
        .route(
            "/hsm/v2/State/Components",
            axum::routing::get(|| async { endless() }),
        )
        .route(
            "/hsm/v2/Inventory/EthernetInterfaces",
            axum::routing::get(|| async { endless() }),
        )
        // Announced as oversized: refused before reading.
        .route(
            "/boot/v1/bootparameters",
            axum::routing::get(|| async { vec![b' '; 200 * 1024] }),
        )
        .route("/token", axum::routing::post(|| async { endless() }));
    let url = serve(app).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "upstream-token\n").unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let mut cfg = upstream(&url, token);
    cfg.max_body = rackboot::config::ByteSize(64 * 1024);
    let fed = Federation::new(cfg.clone(), store.clone()).unwrap();

    let err = format!("{:#}", fed.pull().await.unwrap_err());
    assert!(
        err.contains(&format!("{url}/hsm/v2/State/Components"))
            && err.contains("upstream.max_body")
            && err.contains("65536-byte cap"),
        "{err}"
    );
    assert!(!fed.lookup_mac("02:00:00:00:00:01").await);
    let status = fed.status().await.unwrap();
    assert!(
        status.last_error.as_deref().unwrap_or("").contains("cap"),
        "{status:?}"
    );
    assert!(store.list_components().await.unwrap().is_empty());

    // SMD answers (empty lists); BSS announces an oversized body: refused before reading.
    let smd = serve(Router::new().route(
        "/hsm/v2/{*rest}",
        axum::routing::get(|| async { axum::Json(json!([])) }),
    ))
    .await;
    let mut bss_only = cfg.clone();
    bss_only.smd = smd;
    bss_only.bss = Some(url.clone());
    let fed = Federation::new(bss_only, store.clone()).unwrap();
    let err = format!("{:#}", fed.pull().await.unwrap_err());
    assert!(
        err.contains(&format!("{url}/boot/v1/bootparameters")) && err.contains("cap"),
        "{err}"
    );

    // The OAuth2 token endpoint is capped as well.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let mut oauth = cfg;
    oauth.token_file = None;
    oauth.oauth2 = Some(rackboot::config::OAuth2 {
        token_url: format!("{url}/token"),
        client_id: "rack".into(),
        client_secret_file: secret,
        scope: None,
    });
    let fed = Federation::new(oauth, store).unwrap();
    let err = format!("{:#}", fed.pull().await.unwrap_err());
    assert!(
        err.contains(&format!("token endpoint {url}/token")) && err.contains("cap"),
        "{err}"
    );
}
