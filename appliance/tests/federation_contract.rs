//! Contract tests: rackboot's upstream client against fixtures written from OpenCHAMI's SMD and
//! BSS API definitions (smd api/swagger_v2.yaml, bss: bare arrays, 404 for "no match", RFC 7807
//! errors). The fixture answers exactly as those services do, including their quirks, and
//! records every request so the requests are held to the same shapes.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use rackboot::federation::Federation;
use rackboot::store::{RedfishEndpoint, Store};
use serde_json::{Value, json};

mod federation_support;

use federation_support::*;

#[tokio::test]
async fn pull_lookup_and_push_follow_openchami_shapes() {
    let Fixture {
        seen,
        url,
        dir: _dir,
        token,
        store,
    } = fixture(false).await;
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
    let Fixture {
        url,
        token,
        store,
        dir: _dir,
        ..
    } = fixture(true).await;
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
