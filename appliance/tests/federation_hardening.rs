//! The federation client against a demanding or hostile upstream: mTLS with a client
//! certificate, on-demand lookups bounded under a MAC flood, endless and oversized answers
//! capped. The fixture (OpenCHAMI's SMD and BSS shapes): `federation_support`; the API shapes
//! themselves: `federation_contract.rs`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use rackboot::federation::Federation;
use rackboot::store::Store;
use rackboot::timeline::Admission;
use serde_json::json;

mod federation_support;

use federation_support::*;

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
    let Fixture {
        seen,
        url,
        dir: _dir,
        token,
        store,
    } = fixture(false).await;
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
