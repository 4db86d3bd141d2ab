//! Hostile BMCs: fixture Redfish services (our own, next to the real emulator used in
//! qemu-tests) that answer garbage, 500s, hang, send huge bodies or fail half-way through a
//! crawl. Each gives a clear per-BMC error, the scan goes on, and nothing half-written lands
//! in the inventory.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use rackboot::config;
use rackboot::discovery::{Discovery, FirmwareImage};
use rackboot::seal::Sealer;
use rackboot::store::Store;
use serde_json::json;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Good,
    Garbage,
    Error500,
    Hang,
    Huge,
    /// The second system's NICs fail: the crawl fails half-way.
    HalfWay,
}

fn bmc(mode: Mode, mac_base: u8) -> Router {
    let root = move || async move {
        match mode {
            Mode::Garbage => "{not json".into_response(),
            Mode::Error500 => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
            _ => axum::Json(json!({
                "RedfishVersion": "1.6.0",
                "Systems": {"@odata.id": "/redfish/v1/Systems"},
                "Managers": {"@odata.id": "/redfish/v1/Managers"},
            }))
            .into_response(),
        }
    };
    let systems = move || async move {
        match mode {
            Mode::Hang => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "late".into_response()
            }
            Mode::Huge => {
                // 8 MiB of valid JSON: more than a BMC may make us buffer. Built as bytes, not
                // as 200k serde values, so a loaded debug build serves it well inside the
                // client's request timeout and the size limit is what trips.
                let mut body = String::with_capacity(9 << 20);
                body.push_str(r#"{"Members":["#);
                for i in 0..200_000 {
                    if i > 0 {
                        body.push(',');
                    }
                    body.push_str(r#"{"@odata.id":"/redfish/v1/Systems/"#);
                    body.push_str(&i.to_string());
                    body.push_str(r#""}"#);
                }
                body.push_str("]}");
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response()
            }
            _ => axum::Json(json!({"Members": [
                {"@odata.id": "/redfish/v1/Systems/1"},
                {"@odata.id": "/redfish/v1/Systems/2/"},
            ]}))
            .into_response(),
        }
    };
    let system = move |Path(id): Path<String>| async move {
        axum::Json(json!({
            "Id": id, "UUID": format!("0000000{id}-0000-0000-0000-000000000000"),
            "PowerState": "Off", "Model": "Fixture", "SerialNumber": 1234,
            "EthernetInterfaces": {"@odata.id": format!("/redfish/v1/Systems/{id}/EthernetInterfaces")},
            "Processors": {"@odata.id": format!("/redfish/v1/Systems/{id}/Processors")},
            "Memory": {"@odata.id": format!("/redfish/v1/Systems/{id}/Memory")},
            "Actions": {"#ComputerSystem.Reset": {"target": format!("/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset")}},
            "Oem": {"Vendor": {"Anything": [1, 2, 3]}},
        }))
    };
    let nics = move |Path(id): Path<String>| async move {
        if mode == Mode::HalfWay && id == "2" {
            return (StatusCode::INTERNAL_SERVER_ERROR, "nic table on fire").into_response();
        }
        axum::Json(json!({"Members": [
            {"@odata.id": format!("/redfish/v1/Systems/{id}/EthernetInterfaces/a")},
        ]}))
        .into_response()
    };
    let nic = move |Path((id, _)): Path<(String, String)>| async move {
        let n: u8 = id.parse().unwrap_or(0);
        axum::Json(json!({"MACAddress": format!("02:00:00:00:{mac_base:02x}:{n:02x}")}))
    };
    let managers = || async { axum::Json(json!({"Members": []})) };
    // One CPU and one DIMM per system; the second system's Memory collection is broken, which
    // must cost only its memory inventory, never the BMC's discovery.
    let units = |Path((id, kind)): Path<(String, String)>| async move {
        if kind == "Memory" && id == "2" {
            return (StatusCode::INTERNAL_SERVER_ERROR, "dimm table on fire").into_response();
        }
        axum::Json(
            json!({"Members": [{"@odata.id": format!("/redfish/v1/Systems/{id}/{kind}/0")}]}),
        )
        .into_response()
    };
    let unit = |Path((id, kind)): Path<(String, String)>| async move {
        axum::Json(
            json!({"Id": "0", "Model": format!("{kind}-model"), "SerialNumber": format!("{kind}-{id}"),
                          "PartNumber": "PN-1", "Manufacturer": "Fixture Inc.", "TotalCores": 8, "CapacityMiB": 16384,
                          "Oem": {"ignored": true}}),
        )
    };
    Router::new()
        .route("/redfish/v1/", get(root))
        .route("/redfish/v1/Systems", get(systems))
        .route("/redfish/v1/Systems/{id}", get(system))
        .route("/redfish/v1/Systems/{id}/EthernetInterfaces", get(nics))
        .route(
            "/redfish/v1/Systems/{id}/EthernetInterfaces/{nic}",
            get(nic),
        )
        .route("/redfish/v1/Managers", get(managers))
        .route("/redfish/v1/Systems/{id}/{kind}", get(units))
        .route("/redfish/v1/Systems/{id}/{kind}/0", get(unit))
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service()).await;
    });
    addr
}

#[tokio::test]
async fn hostile_bmcs_fail_alone_and_leave_no_half_written_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let cfg = config::Discovery {
        request_timeout: Duration::from_secs(2),
        node_ip_base: Some("192.0.2.100".parse().unwrap()),
        ..Default::default()
    };
    let d = Discovery::new(store.clone(), Sealer::open(dir.path()).unwrap(), cfg);
    d.set_credentials("default", "admin", "pw").await.unwrap();

    let mut targets = Vec::new();
    let mut names = Vec::new();
    for (i, mode) in [
        Mode::Good,
        Mode::Garbage,
        Mode::Error500,
        Mode::Hang,
        Mode::Huge,
        Mode::HalfWay,
    ]
    .into_iter()
    .enumerate()
    {
        let addr = serve(bmc(mode, i as u8)).await;
        targets.push(format!("http://{addr}"));
        names.push(mode);
    }
    let started = Instant::now();
    let results = d.discover(&targets, false).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a hanging BMC is cut off by the request timeout"
    );
    assert_eq!(results.len(), targets.len(), "{results:?}");
    let by_target = |t: &str| results.iter().find(|r| r.target.starts_with(t)).unwrap();
    let good = by_target(&targets[0]);
    assert!(good.ok, "{good:?}");
    assert_eq!(good.nodes.len(), 2, "{good:?}");
    for (t, want) in [
        (&targets[1], "not JSON"),
        (&targets[2], "500"),
        (&targets[3], "timed out"),
        (&targets[4], "larger than"),
        (&targets[5], "nic table on fire"),
    ] {
        let r = by_target(t);
        assert!(!r.ok, "{r:?}");
        let e = r.error.as_deref().unwrap_or("");
        assert!(e.contains(want), "{t}: expected {want:?} in {e:?}");
    }
    // Only the good BMC is in the inventory: its endpoint, two nodes, their NICs.
    let eps = store.list_redfish_endpoints().await.unwrap();
    assert_eq!(eps.len(), 1, "{eps:?}");
    let nics = store.list_ethernet_interfaces().await.unwrap();
    assert_eq!(nics.len(), 2, "{nics:?}");
    assert!(
        nics.iter()
            .all(|n| n.mac_address.starts_with("02:00:00:00:00:"))
    );
    let comps = store.list_components().await.unwrap();
    assert_eq!(comps.len(), 3, "a BMC and two nodes: {comps:?}");
    // The hardware inventory: each system's CPU; the first system's DIMM, none for the second
    // (its Memory collection failed, and only that was lost).
    let systems = eps[0].extra["Systems"].as_array().unwrap();
    let hw: Vec<&serde_json::Value> = systems.iter().map(|s| &s["Hardware"]).collect();
    assert_eq!(
        hw[0]["Processors"][0]["SerialNumber"], "Processors-1",
        "{hw:?}"
    );
    assert_eq!(hw[0]["Processors"][0]["TotalCores"], 8);
    assert!(hw[0]["Processors"][0].get("Oem").is_none());
    assert_eq!(hw[0]["Memory"][0]["CapacityMiB"], 16384);
    assert_eq!(hw[1]["Processors"][0]["SerialNumber"], "Processors-2");
    assert_eq!(hw[1]["Memory"], json!([]));
    // Addresses follow the node rule (base + NID).
    let mut ips: Vec<String> = nics
        .iter()
        .flat_map(|n| n.ip_addresses.iter().map(|a| a.ip_address.clone()))
        .collect();
    ips.sort();
    assert_eq!(ips, vec!["192.0.2.101", "192.0.2.102"]);

    // Bad targets are refused with a reason; an oversized range is refused outright.
    let r = d
        .discover(&["not a target".into(), "10.0.0.0/8".into()], false)
        .await;
    assert!(r.iter().all(|t| !t.ok && t.error.is_some()), "{r:?}");
}

#[derive(Default)]
struct Fw {
    image_uri: Option<String>,
    /// What a multipart push delivered: UpdateParameters JSON, the file, Content-Length.
    pushed: Option<(serde_json::Value, Vec<u8>, Option<String>)>,
    polls: u32,
    bios: String,
}

/// A BMC with an UpdateService (SimpleUpdate, or only MultipartHttpPushUri): the update starts a
/// task that runs for a few polls, then the BIOS version changes.
async fn firmware_bmc(push_only: bool) -> (String, std::sync::Arc<std::sync::Mutex<Fw>>) {
    use std::sync::{Arc, Mutex};
    let fw = Arc::new(Mutex::new(Fw {
        bios: "1.0.0".into(),
        ..Default::default()
    }));
    let root = || async {
        axum::Json(json!({
            "RedfishVersion": "1.6.0",
            "Systems": {"@odata.id": "/redfish/v1/Systems"},
            "UpdateService": {"@odata.id": "/redfish/v1/UpdateService"},
        }))
    };
    let systems =
        || async { axum::Json(json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1"}]})) };
    let f = fw.clone();
    let system = move || {
        let f = f.clone();
        async move {
            let bios = f.lock().unwrap().bios.clone();
            axum::Json(json!({"Id": "1", "PowerState": "On", "BiosVersion": bios,
                "EthernetInterfaces": {"@odata.id": "/redfish/v1/Systems/1/EthernetInterfaces"}}))
        }
    };
    let nics = || async {
        axum::Json(
            json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1/EthernetInterfaces/1"}]}),
        )
    };
    let nic = || async { axum::Json(json!({"MACAddress": "02:00:00:00:09:01"})) };
    let us = move || async move {
        if push_only {
            axum::Json(json!({"MultipartHttpPushUri": "/redfish/v1/UpdateService/upload"}))
        } else {
            axum::Json(json!({"Actions": {"#UpdateService.SimpleUpdate": {
                "target": "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate"}}}))
        }
    };
    let accepted = || {
        (
            StatusCode::ACCEPTED,
            [("location", "/redfish/v1/TaskService/Tasks/7")],
            axum::Json(json!({"@odata.id": "/redfish/v1/TaskService/Tasks/7"})),
        )
    };
    let f = fw.clone();
    let simple = move |axum::Json(body): axum::Json<serde_json::Value>| {
        let f = f.clone();
        async move {
            f.lock().unwrap().image_uri = body["ImageURI"].as_str().map(str::to_owned);
            accepted()
        }
    };
    let f = fw.clone();
    let upload = move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
        let f = f.clone();
        async move {
            let ct = headers["content-type"].to_str().unwrap().to_owned();
            let boundary = ct.split("boundary=").nth(1).unwrap().to_owned();
            let text = body.to_vec();
            let find = |hay: &[u8], needle: &[u8], from: usize| {
                hay[from..]
                    .windows(needle.len())
                    .position(|w| w == needle)
                    .map(|p| p + from)
            };
            let part = |name: &str| {
                let h = find(&text, format!("name=\"{name}\"").as_bytes(), 0).unwrap();
                let start = find(&text, b"\r\n\r\n", h).unwrap() + 4;
                let end = find(&text, format!("\r\n--{boundary}").as_bytes(), start).unwrap();
                text[start..end].to_vec()
            };
            let params = serde_json::from_slice(&part("UpdateParameters")).unwrap();
            let len = headers
                .get("content-length")
                .map(|v| v.to_str().unwrap().to_owned());
            f.lock().unwrap().pushed = Some((params, part("UpdateFile"), len));
            accepted()
        }
    };
    let f = fw.clone();
    let task = move || {
        let f = f.clone();
        async move {
            let mut g = f.lock().unwrap();
            g.polls += 1;
            if g.polls < 3 {
                axum::Json(json!({"TaskState": "Running", "PercentComplete": g.polls * 30}))
            } else {
                g.bios = "1.1.0".into();
                axum::Json(
                    json!({"TaskState": "Completed", "TaskStatus": "OK", "PercentComplete": 100}),
                )
            }
        }
    };
    let app = Router::new()
        .route("/redfish/v1/", get(root))
        .route("/redfish/v1/Systems", get(systems))
        .route("/redfish/v1/Systems/1", get(system))
        .route("/redfish/v1/Systems/1/EthernetInterfaces", get(nics))
        .route("/redfish/v1/Systems/1/EthernetInterfaces/1", get(nic))
        .route("/redfish/v1/UpdateService", get(us))
        .route(
            "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
            axum::routing::post(simple),
        )
        .route(
            "/redfish/v1/UpdateService/upload",
            axum::routing::post(upload).layer(axum::extract::DefaultBodyLimit::max(64 << 20)),
        )
        .route("/redfish/v1/TaskService/Tasks/7", get(task));
    let addr = serve(app).await;
    (format!("http://{addr}"), fw)
}

fn image(name: &str, data: Vec<u8>, push: bool) -> FirmwareImage {
    FirmwareImage {
        name: name.into(),
        uri: format!("http://192.0.2.1/images/{name}"),
        data: data.into(),
        push,
    }
}

/// SimpleUpdate with rackboot's image URL; the task is polled to the end and the new version
/// recorded.
#[tokio::test]
async fn firmware_update_polls_the_task_and_records_the_new_version() {
    let (bmc, fw) = firmware_bmc(false).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let d = Discovery::new(
        store.clone(),
        Sealer::open(dir.path()).unwrap(),
        config::Discovery::default(),
    );
    let r = d.discover(&[bmc], false).await;
    assert!(r[0].ok, "{r:?}");
    let node = r[0].nodes[0].xname.clone();
    let before = d.firmware_list().await.unwrap();
    assert_eq!(before[0].bios_version.as_deref(), Some("1.0.0"));
    let res = d
        .firmware_update(
            std::slice::from_ref(&node),
            image("bios-1.1", b"not sent".to_vec(), false),
            None,
        )
        .await;
    assert!(res[0].ok, "{res:?}");
    assert_eq!(res[0].bios_version.as_deref(), Some("1.1.0"));
    assert_eq!(res[0].power, None);
    assert!(
        res[0].detail.as_deref().unwrap().contains("1.0.0 -> 1.1.0"),
        "{res:?}"
    );
    assert_eq!(
        fw.lock().unwrap().image_uri.as_deref(),
        Some("http://192.0.2.1/images/bios-1.1")
    );
    assert!(fw.lock().unwrap().pushed.is_none(), "fetched, not pushed");
    assert!(
        fw.lock().unwrap().polls >= 3,
        "the task was polled to the end"
    );
    let after = d.firmware_list().await.unwrap();
    assert_eq!(
        after[0].bios_version.as_deref(),
        Some("1.1.0"),
        "new version recorded"
    );
    // Asking for a push where the BMC has no MultipartHttpPushUri is a clear error.
    let res = d
        .firmware_update(std::slice::from_ref(&node), image("b", vec![1], true), None)
        .await;
    assert!(
        !res[0].ok
            && res[0]
                .error
                .as_deref()
                .unwrap()
                .contains("MultipartHttpPushUri"),
        "{res:?}"
    );
    // A node rackboot has no BMC for fails alone.
    let res = d
        .firmware_update(&["x1000c0s9b0n0".into()], image("y", vec![], false), None)
        .await;
    assert!(
        !res[0].ok && res[0].error.as_deref().unwrap().contains("no BMC"),
        "{res:?}"
    );
}

/// A BMC that only takes pushed images gets the image as multipart/form-data: the
/// UpdateParameters part names the node, the file arrives byte for byte, with a Content-Length.
#[tokio::test]
async fn firmware_is_pushed_where_the_bmc_only_accepts_multipart() {
    let (bmc, fw) = firmware_bmc(true).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let d = Discovery::new(
        store.clone(),
        Sealer::open(dir.path()).unwrap(),
        config::Discovery::default(),
    );
    let r = d.discover(&[bmc], false).await;
    assert!(r[0].ok, "{r:?}");
    let node = r[0].nodes[0].xname.clone();
    // 3 MiB with every byte value, CRLFs and a fake boundary line inside.
    let mut data: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    data.extend_from_slice(b"\r\n--rackboot-0000\r\n");
    let res = d
        .firmware_update(
            std::slice::from_ref(&node),
            image("bios-1.1.bin", data.clone(), false),
            None,
        )
        .await;
    assert!(res[0].ok, "{res:?}");
    assert_eq!(res[0].bios_version.as_deref(), Some("1.1.0"));
    assert_eq!(res[0].power, None);
    let g = fw.lock().unwrap();
    let (params, file, len) = g.pushed.clone().expect("the image was pushed");
    assert_eq!(params["Targets"], json!(["/redfish/v1/Systems/1"]));
    assert_eq!(file.len(), data.len());
    assert!(file == data, "the file arrived byte for byte");
    assert!(len.is_some(), "sent with a Content-Length, not chunked");
    assert!(g.polls >= 3, "the task was polled to the end");
}

/// A blade-style BMC: its system has no EthernetInterfaces, the NICs are under the chassis's
/// NetworkAdapters, the chassis says which slot it is in, and the manager offers a console.
fn blade(slot: u32, mac_base: u8) -> Router {
    let doc = move |path: &str| -> Option<serde_json::Value> {
        let chassis = "/redfish/v1/Chassis/Blade";
        let adapter = format!("{chassis}/NetworkAdapters/NIC1");
        Some(match path {
            "" => json!({"Systems": {"@odata.id": "/redfish/v1/Systems"},
                         "Chassis": {"@odata.id": "/redfish/v1/Chassis"},
                         "Managers": {"@odata.id": "/redfish/v1/Managers"}}),
            "Systems" => json!({"Members": [{"@odata.id": "/redfish/v1/Systems/B"}]}),
            "Systems/B" => json!({"Id": "B", "PowerState": "On",
                                  "Links": {"Chassis": [{"@odata.id": chassis}]}}),
            // Two chassis: the system's own link must be followed, not a guess.
            "Chassis" => {
                json!({"Members": [{"@odata.id": chassis}, {"@odata.id": "/redfish/v1/Chassis/Enclosure"}]})
            }
            "Chassis/Blade" => json!({
                "Location": {"PartLocation": {"LocationType": "Slot", "LocationOrdinalValue": slot, "ServiceLabel": format!("Blade {slot}")}},
                "NetworkAdapters": {"@odata.id": format!("{chassis}/NetworkAdapters")}}),
            "Chassis/Blade/NetworkAdapters" => json!({"Members": [{"@odata.id": adapter}]}),
            "Chassis/Blade/NetworkAdapters/NIC1" => json!({
                "NetworkDeviceFunctions": {"@odata.id": format!("{adapter}/NetworkDeviceFunctions")},
                "Ports": {"@odata.id": format!("{adapter}/Ports")}}),
            "Chassis/Blade/NetworkAdapters/NIC1/NetworkDeviceFunctions" => {
                json!({"Members": [{"@odata.id": format!("{adapter}/NetworkDeviceFunctions/1")}]})
            }
            "Chassis/Blade/NetworkAdapters/NIC1/NetworkDeviceFunctions/1" => {
                json!({"Ethernet": {"MACAddress": format!("02:00:00:01:{mac_base:02X}:01")}})
            }
            "Chassis/Blade/NetworkAdapters/NIC1/Ports" => {
                json!({"Members": [{"@odata.id": format!("{adapter}/Ports/1")}]})
            }
            // The same MAC again (must not be doubled) and a second one.
            "Chassis/Blade/NetworkAdapters/NIC1/Ports/1" => {
                json!({"Ethernet": {"AssociatedMACAddresses": [
                format!("02:00:00:01:{mac_base:02x}:01"), format!("02-00-00-01-{mac_base:02x}-02"), "not a mac"]}})
            }
            "Managers" => json!({"Members": [{"@odata.id": "/redfish/v1/Managers/BMC"}]}),
            "Managers/BMC" => json!({"FirmwareVersion": "2.1",
                "SerialConsole": {"ServiceEnabled": true, "ConnectTypesSupported": ["SSH", "IPMI"]}}),
            _ => return None,
        })
    };
    Router::new().fallback(move |uri: axum::http::Uri| async move {
        let path = uri.path().trim_end_matches('/');
        let path = path
            .strip_prefix("/redfish/v1")
            .unwrap_or("?")
            .trim_start_matches('/');
        match doc(path) {
            Some(v) => axum::Json(v).into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        }
    })
}

async fn serve_at(ip: &str, app: Router) -> String {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service()).await;
    });
    format!("http://{addr}")
}

/// xname rules in order (map, relay port, Location, sequential), each falling through when its
/// xname is taken; NICs found through NetworkAdapters; consoles recorded.
#[tokio::test]
async fn xname_rules_network_adapters_and_consoles() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let cfg = config::Discovery {
        relay_ports: [("sw1/Gi1/0/7".to_owned(), 7), ("Gi1/0/8".to_owned(), 8)].into(),
        xnames: [("127.0.0.5".to_owned(), "x1000c0s30b0".to_owned())].into(),
        ..Default::default()
    };
    let d = Discovery::new(store.clone(), Sealer::open(dir.path()).unwrap(), cfg);
    d.set_credentials("default", "admin", "pw").await.unwrap();
    // Every BMC claims slot 9 in its Location; each sits on its own loopback address.
    let a = serve_at("127.0.0.2", blade(9, 2)).await;
    let b = serve_at("127.0.0.3", blade(9, 3)).await;
    let c = serve_at("127.0.0.4", blade(9, 4)).await;
    let e = serve_at("127.0.0.5", blade(9, 5)).await;
    // B came through switch sw1 port Gi1/0/7 (recorded from its DHCP lease's option 82).
    store
        .put_bmc_relay_port("127.0.0.3".into(), "Gi1/0/7".into(), "sw1".into())
        .await
        .unwrap();
    let mut got = Vec::new();
    for t in [&a, &b, &c, &e] {
        let r = d.discover(std::slice::from_ref(t), false).await;
        assert!(r[0].ok, "{r:?}");
        got.push(r[0].bmc.clone().unwrap());
    }
    assert_eq!(
        got,
        vec![
            "x1000c0s9b0",  // Location
            "x1000c0s7b0",  // relay port beats Location
            "x1000c0s0b0",  // slot 9 is taken: sequential
            "x1000c0s30b0", // the explicit map comes first
        ]
    );
    let eps = store.list_redfish_endpoints().await.unwrap();
    let ep = eps.iter().find(|e| e.id == "x1000c0s9b0").unwrap();
    assert_eq!(ep.extra["XnameRule"], "location");
    let sys = &ep.extra["Systems"][0];
    assert_eq!(sys["MACsFrom"], "NetworkAdapters");
    assert_eq!(sys["Location"]["PartLocation"]["ServiceLabel"], "Blade 9");
    assert_eq!(
        ep.extra["Managers"][0]["SerialConsole"]["ConnectTypesSupported"],
        json!(["SSH", "IPMI"])
    );
    let nics = store.list_ethernet_interfaces().await.unwrap();
    let mut macs: Vec<_> = nics
        .iter()
        .filter(|n| n.component_id.as_deref() == Some("x1000c0s9b0n0"))
        .map(|n| n.mac_address.clone())
        .collect();
    macs.sort();
    assert_eq!(macs, vec!["02:00:00:01:02:01", "02:00:00:01:02:02"]);
    // Re-discovery keeps the xname even though the rules would now say otherwise.
    let r = d.discover(std::slice::from_ref(&c), false).await;
    assert_eq!(r[0].bmc.as_deref(), Some("x1000c0s0b0"));
    assert_eq!(store.list_redfish_endpoints().await.unwrap().len(), 4);
    // The port key without remote-id also matches.
    store
        .put_bmc_relay_port("127.0.0.6".into(), "Gi1/0/8".into(), "sw9".into())
        .await
        .unwrap();
    let f = serve_at("127.0.0.6", blade(9, 6)).await;
    let r = d.discover(std::slice::from_ref(&f), false).await;
    assert_eq!(r[0].bmc.as_deref(), Some("x1000c0s8b0"), "{r:?}");
}
