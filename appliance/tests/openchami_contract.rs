//! OpenCHAMI contract: the real `rackboot serve` (on 127.0.0.1, no DHCP/TFTP) driven with the
//! exact requests the `ochami` CLI (OpenCHAMI/ochami 9136dd6, pkg/client/{smd,bss}) and magellan
//! (b5b14f3, pkg/collect.go, pkg/client/smd.go) send, every answer checked for the status SMD
//! (b72ba92) and BSS (e4894b0) give and validated against our own JSON Schemas written from
//! their API definitions (`tests/contract/schemas/`, validated by `tests/contract/validate.py`
//! with build/venv's jsonschema, which `cargo xtask deps` installs).
//!
//! What ochami sends without a token (BSS's service, hosts, dumpstate, endpoint-history and
//! bootscript; SMD's ready, liveness and values) is sent here without one where rackboot serves
//! it open; docs/openchami-compat.md lists the routes rackboot keeps behind a token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use reqwest::Method;
use serde_json::{Value, json};

struct Server {
    child: Child,
    base: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only the process this test started, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rackboot")
}

/// Starts `rackboot serve` on a free loopback port and waits for its "rackboot ready" log line.
fn start() -> Server {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let ipxe = dir.path().join("ipxe");
        std::fs::create_dir(&ipxe).unwrap();
        for f in ["undionly.kpxe", "snponly.efi"] {
            std::fs::write(ipxe.join(f), b"ipxe").unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(bin())
            .args(["serve", "--interface", "lo", "--data-dir"])
            .arg(dir.path())
            .arg("--ipxe-dir")
            .arg(&ipxe)
            .args(["--http-listen", &format!("127.0.0.1:{port}")])
            .env_remove("RACKBOOT_CONFIG")
            .env("RACKBOOT_LOG", "info")
            .env("RACKBOOT_LOG_FORMAT", "text")
            .env("RACKBOOT_LISTEN__DHCP_PORT", "0")
            .env("RACKBOOT_LISTEN__TFTP_PORT", "0")
            .env("RACKBOOT_DNS__ENABLED", "false")
            .env("RACKBOOT_IDENTITY__ENABLED", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut log = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("rackboot ready") {
                    let _ = tx.send(Ok(()));
                }
                log.push_str(&line);
                log.push('\n');
            }
            // EOF: the process ended (a port taken between our probe and its bind).
            let _ = tx.send(Err(log));
        });
        match rx.recv().unwrap() {
            Ok(()) => {
                let out = Command::new(bin())
                    .args([
                        "token",
                        "create",
                        "--scope",
                        "admin",
                        "--ttl",
                        "30m",
                        "--data-dir",
                    ])
                    .arg(dir.path())
                    .output()
                    .unwrap();
                assert!(out.status.success(), "token create: {out:?}");
                return Server {
                    child,
                    base: format!("http://127.0.0.1:{port}"),
                    token: String::from_utf8(out.stdout).unwrap().trim().to_owned(),
                    _dir: dir,
                };
            }
            Err(log) => {
                let _ = child.wait();
                eprintln!("rackboot exited before it was ready; trying another port:\n{log}");
            }
        }
    }
    panic!("rackboot did not start in five attempts");
}

/// One exchange and the schema its body must match.
struct Contract {
    srv: Server,
    http: reqwest::Client,
    cases: Vec<Value>,
}

impl Contract {
    fn new() -> Self {
        Self {
            srv: start(),
            http: reqwest::Client::new(),
            cases: Vec::new(),
        }
    }

    /// Sends a request (with the admin token when `auth`): (status, body as JSON or as text).
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        auth: bool,
    ) -> (u16, Value) {
        let mut req = self.http.request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", self.srv.base),
        );
        if auth {
            req = req.bearer_auth(&self.srv.token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (code, v)
    }

    /// Expects `want` and records the body for validation against `schema` (`smd#Component`).
    async fn expect(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
        auth: bool,
        want: u16,
        schema: Option<&str>,
    ) -> Value {
        let (code, v) = self.send(method, path, body, auth).await;
        assert_eq!(code, want, "{method} {path}: {v}");
        if let Some(s) = schema {
            self.cases.push(
                json!({"label": format!("{method} {path} → {code}"), "schema": s, "instance": v}),
            );
        }
        v
    }

    async fn ok(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
        want: u16,
        schema: &str,
    ) -> Value {
        self.expect(method, path, body, true, want, Some(schema))
            .await
    }

    /// A refusal: `want` with an SMD problem body whose detail mentions `needle`.
    async fn refused(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
        want: u16,
        needle: &str,
    ) {
        let schema = if path.starts_with("/boot/") {
            "bss#Error"
        } else {
            "smd#Problem7807"
        };
        let v = self
            .expect(method, path, body, true, want, Some(schema))
            .await;
        let detail = v["detail"].as_str().unwrap_or("");
        assert!(
            detail.contains(needle),
            "{method} {path}: {detail:?} lacks {needle:?}"
        );
    }

    /// Runs the validator over every recorded body.
    fn validate(&self) {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let py = root.join("../build/venv/bin/python3");
        let has = Command::new(&py)
            .args(["-c", "import jsonschema"])
            .status()
            .is_ok_and(|s| s.success());
        if !has {
            let msg = "build/venv has no jsonschema: run `cargo xtask deps`";
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
            eprintln!(
                "SKIPPING schema validation ({} bodies): {msg}",
                self.cases.len()
            );
            return;
        }
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), serde_json::to_vec(&self.cases).unwrap()).unwrap();
        let out = Command::new(&py)
            .arg(root.join("tests/contract/validate.py"))
            .arg(f.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "schema validation failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn ids(v: &Value, list: &str) -> Vec<String> {
    let items = if list.is_empty() { v } else { &v[list] };
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["ID"]
                .as_str()
                .or(c["id"].as_str())
                .or(c["label"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect()
}

const N1: &str = "x1000c0s0b0n0";
const N2: &str = "x1000c0s1b0n0";
const BMC: &str = "x1000c0s0b0";

/// ochami's `smd component/iface/group/compep/rfe` commands and magellan's `send`.
#[tokio::test(flavor = "multi_thread")]
async fn smd_calls_of_ochami_and_magellan() {
    let mut c = Contract::new();

    // ochami smd status [--all]: no token.
    c.expect(
        "GET",
        "/hsm/v2/service/ready",
        None,
        false,
        200,
        Some("smd#Response"),
    )
    .await;
    c.expect("GET", "/hsm/v2/service/liveness", None, false, 204, None)
        .await;
    let v = c
        .expect(
            "GET",
            "/hsm/v2/service/values",
            None,
            false,
            200,
            Some("smd#Values"),
        )
        .await;
    assert!(v["State"].as_array().unwrap().contains(&json!("Ready")));
    let v = c
        .expect(
            "GET",
            "/hsm/v2/service/values/arch",
            None,
            false,
            200,
            Some("smd#Values"),
        )
        .await;
    assert_eq!(v.as_object().unwrap().len(), 1);

    // ochami smd component add: its Component struct (ID, Type, State, Enabled, Role, Arch, NID).
    let comps = json!({"Components": [
        {"ID": N1, "Type": "Node", "State": "Ready", "Enabled": true, "Role": "Compute", "Arch": "X86", "NID": 101},
        {"ID": N2, "Type": "Node", "State": "Off", "Enabled": false, "Role": "Service", "Arch": "ARM", "NID": 102},
        {"ID": BMC, "Type": "NodeBMC", "State": "Ready", "Enabled": true},
    ]});
    c.expect(
        "POST",
        "/hsm/v2/State/Components",
        Some(comps),
        true,
        204,
        None,
    )
    .await;
    // Values SMD refuses are refused, and nothing of the request is stored.
    for (field, bad) in [
        ("State", "Bogus"),
        ("Flag", "Meh"),
        ("Arch", "sparc"),
        ("Class", "Valley"),
    ] {
        let mut comp = json!({"ID": "x1000c0s9b0n0", "Type": "Node", "State": "On"});
        comp[field] = json!(bad);
        c.refused(
            "POST",
            "/hsm/v2/State/Components",
            Some(json!({"Components": [comp]})),
            400,
            bad,
        )
        .await;
    }
    c.refused(
        "GET",
        "/hsm/v2/State/Components/x1000c0s9b0n0",
        None,
        404,
        "x1000c0s9b0n0",
    )
    .await;
    // SMD normalises the case of enumerated values.
    c.expect(
        "POST",
        "/hsm/v2/State/Components",
        Some(json!({"Components": [{"ID": "x1000c0s2b0n0", "State": "on", "Flag": "warning", "Arch": "x86", "Class": "river"}]})),
        true,
        204,
        None,
    )
    .await;
    let v = c
        .ok(
            "GET",
            "/hsm/v2/State/Components/x1000c0s2b0n0",
            None,
            200,
            "smd#Component",
        )
        .await;
    assert_eq!(
        (v["State"].as_str(), v["Flag"].as_str(), v["Arch"].as_str()),
        (Some("On"), Some("Warning"), Some("X86"))
    );
    assert_eq!(v["Type"], "Node");

    // ochami smd component get (all), by xname, by NID.
    let v = c
        .ok(
            "GET",
            "/hsm/v2/State/Components",
            None,
            200,
            "smd#ComponentArray",
        )
        .await;
    assert_eq!(ids(&v, "Components").len(), 4);
    c.ok(
        "GET",
        &format!("/hsm/v2/State/Components/{N1}"),
        None,
        200,
        "smd#Component",
    )
    .await;
    let v = c
        .ok(
            "GET",
            "/hsm/v2/State/Components/ByNID/102",
            None,
            200,
            "smd#Component",
        )
        .await;
    assert_eq!(v["ID"], N2);
    c.refused(
        "GET",
        "/hsm/v2/State/Components/ByNID/999",
        None,
        404,
        "999",
    )
    .await;
    c.refused(
        "GET",
        "/hsm/v2/State/Components/not-an-xname",
        None,
        400,
        "xname",
    )
    .await;

    // Filters are honoured…
    for (query, want) in [
        ("enabled=true", vec![N1, BMC, "x1000c0s2b0n0"]),
        ("enabled=false", vec![N2]),
        ("type=Node&state=ready", vec![N1]),
        ("role=Service", vec![N2]),
        ("arch=ARM", vec![N2]),
        ("nid_start=102&nid_end=200", vec![N2]),
        ("nid=101,102", vec![N1, N2]),
        ("id=X1000C0S0B0N0", vec![N1]),
        ("flag=Warning", vec!["x1000c0s2b0n0"]),
    ] {
        let v = c
            .ok(
                "GET",
                &format!("/hsm/v2/State/Components?{query}"),
                None,
                200,
                "smd#ComponentArray",
            )
            .await;
        let mut got = ids(&v, "Components");
        got.sort();
        let mut want: Vec<String> = want.into_iter().map(str::to_owned).collect();
        want.sort();
        assert_eq!(got, want, "?{query}");
    }
    let v = c
        .ok(
            "GET",
            "/hsm/v2/State/Components?type=Node&stateonly=true",
            None,
            200,
            "smd#ComponentArray",
        )
        .await;
    assert!(v["Components"][0].get("Role").is_none(), "{v}");
    assert!(v["Components"][0].get("State").is_some(), "{v}");
    // …or refused, naming the parameter or value.
    c.refused(
        "GET",
        "/hsm/v2/State/Components?bogus=1",
        None,
        400,
        "bogus",
    )
    .await;
    c.refused(
        "GET",
        "/hsm/v2/State/Components?state=Sleeping",
        None,
        400,
        "Sleeping",
    )
    .await;
    c.refused(
        "GET",
        "/hsm/v2/State/Components?enabled=maybe",
        None,
        400,
        "enabled",
    )
    .await;
    c.refused(
        "GET",
        "/hsm/v2/State/Components?partition=p1",
        None,
        400,
        "partition",
    )
    .await;

    // ochami smd component update: PUT {"Component": …, "Force": true}.
    c.expect(
        "PUT",
        &format!("/hsm/v2/State/Components/{N2}"),
        Some(json!({"Component": {"ID": N2, "Type": "Node", "State": "On", "Enabled": true, "Role": "Compute", "Arch": "X86", "NID": 102}, "Force": true})),
        true,
        204,
        None,
    )
    .await;
    let v = c
        .ok(
            "GET",
            &format!("/hsm/v2/State/Components/{N2}"),
            None,
            200,
            "smd#Component",
        )
        .await;
    assert_eq!(
        (v["State"].as_str(), v["Enabled"].as_bool()),
        (Some("On"), Some(true))
    );
    c.refused(
        "PUT",
        &format!("/hsm/v2/State/Components/{N2}"),
        Some(json!({"Component": {"ID": N1, "State": "On"}, "Force": true})),
        400,
        "do not match",
    )
    .await;
    // ochami smd component update --nid: PATCH BulkNID with ID and NID (Type "" as Go sends it).
    c.expect(
        "PATCH",
        "/hsm/v2/State/Components/BulkNID",
        Some(json!({"Components": [{"ID": N2, "Type": "", "NID": 202}]})),
        true,
        204,
        None,
    )
    .await;
    let v = c
        .ok(
            "GET",
            "/hsm/v2/State/Components/ByNID/202",
            None,
            200,
            "smd#Component",
        )
        .await;
    assert_eq!(v["ID"], N2);
    // The per-field and bulk PATCHes.
    for (path, body) in [
        (
            format!("/hsm/v2/State/Components/{N1}/StateData"),
            json!({"State": "standby", "Flag": "Alert"}),
        ),
        (
            format!("/hsm/v2/State/Components/{N1}/FlagOnly"),
            json!({"Flag": "OK"}),
        ),
        (
            format!("/hsm/v2/State/Components/{N1}/Enabled"),
            json!({"Enabled": false}),
        ),
        (
            format!("/hsm/v2/State/Components/{N1}/SoftwareStatus"),
            json!({"SoftwareStatus": "AdminDown"}),
        ),
        (
            format!("/hsm/v2/State/Components/{N1}/Role"),
            json!({"Role": "service", "SubRole": "worker"}),
        ),
        (
            format!("/hsm/v2/State/Components/{N1}/NID"),
            json!({"NID": 111}),
        ),
        (
            "/hsm/v2/State/Components/BulkEnabled".into(),
            json!({"ComponentIDs": [N1, N2], "Enabled": true}),
        ),
        (
            "/hsm/v2/State/Components/BulkStateData".into(),
            json!({"ComponentIDs": [N1], "State": "Ready"}),
        ),
    ] {
        c.expect("PATCH", &path, Some(body), true, 204, None).await;
    }
    let v = c
        .ok(
            "GET",
            &format!("/hsm/v2/State/Components/{N1}"),
            None,
            200,
            "smd#Component",
        )
        .await;
    assert_eq!(
        (
            v["State"].as_str(),
            v["Flag"].as_str(),
            v["Enabled"].as_bool(),
            v["Role"].as_str(),
            v["SubRole"].as_str(),
            v["NID"].as_i64(),
            v["SoftwareStatus"].as_str()
        ),
        (
            Some("Ready"),
            Some("OK"),
            Some(true),
            Some("Service"),
            Some("Worker"),
            Some(111),
            Some("AdminDown")
        )
    );
    c.refused(
        "PATCH",
        &format!("/hsm/v2/State/Components/{N1}/StateData"),
        Some(json!({"State": "Asleep"})),
        400,
        "Asleep",
    )
    .await;
    c.refused(
        "PATCH",
        "/hsm/v2/State/Components/BulkFlagOnly",
        Some(json!({"ComponentIDs": [N1, "x1000c0s7b0n0"], "Flag": "OK"})),
        404,
        "x1000c0s7b0n0",
    )
    .await;
    // Query forms.
    let v = c
        .ok(
            "POST",
            "/hsm/v2/State/Components/Query",
            Some(json!({"ComponentIDs": ["x1000c0s0"], "type": ["Node"]})),
            200,
            "smd#ComponentArray",
        )
        .await;
    assert_eq!(ids(&v, "Components"), [N1]);
    let v = c
        .ok(
            "GET",
            "/hsm/v2/State/Components/Query/x1000c0?type=NodeBMC",
            None,
            200,
            "smd#ComponentArray",
        )
        .await;
    assert_eq!(ids(&v, "Components"), [BMC]);
    let v = c
        .ok(
            "POST",
            "/hsm/v2/State/Components/ByNID/Query",
            Some(json!({"NIDRanges": ["100-150"]})),
            200,
            "smd#ComponentArray",
        )
        .await;
    assert_eq!(ids(&v, "Components"), [N1]);

    // ochami smd iface add/get/update/delete: its EthernetInterface struct.
    let ei = json!({"ID": "", "ComponentID": N1, "Type": "Node", "Description": "boot NIC", "MACAddress": "52:54:00:AA:00:01",
                    "IPAddresses": [{"IPAddress": "192.0.2.11", "Network": "NMN"}]});
    c.expect(
        "POST",
        "/hsm/v2/Inventory/EthernetInterfaces",
        Some(ei.clone()),
        true,
        201,
        None,
    )
    .await;
    c.refused(
        "POST",
        "/hsm/v2/Inventory/EthernetInterfaces",
        Some(ei),
        409,
        "",
    )
    .await;
    let ei2 = json!({"ID": "", "ComponentID": N2, "Type": "Node", "Description": "", "MACAddress": "52:54:00:aa:00:02",
                     "IPAddresses": [{"IPAddress": "192.0.2.12", "Network": "HMN"}]});
    c.expect(
        "POST",
        "/hsm/v2/Inventory/EthernetInterfaces",
        Some(ei2),
        true,
        201,
        None,
    )
    .await;
    for (query, want) in [
        ("", 2),
        ("MACAddress=52:54:00:aa:00:01", 1),
        ("IPAddress=192.0.2.12", 1),
        ("Network=HMN", 1),
        (&format!("ComponentID={N1}"), 1),
        ("Type=Node", 2),
    ] {
        let v = c
            .ok(
                "GET",
                &format!("/hsm/v2/Inventory/EthernetInterfaces?{query}"),
                None,
                200,
                "smd#EthernetInterfaceArray",
            )
            .await;
        assert_eq!(v.as_array().unwrap().len(), want, "?{query}: {v}");
    }
    c.refused(
        "GET",
        "/hsm/v2/Inventory/EthernetInterfaces?NewerThan=2025-01-01T00:00:00Z",
        None,
        400,
        "NewerThan",
    )
    .await;
    c.ok(
        "GET",
        "/hsm/v2/Inventory/EthernetInterfaces/525400aa0001",
        None,
        200,
        "smd#EthernetInterface",
    )
    .await;
    let v = c
        .ok(
            "GET",
            "/hsm/v2/Inventory/EthernetInterfaces/525400aa0001/IPAddresses",
            None,
            200,
            "smd#IPAddressMappingArray",
        )
        .await;
    assert_eq!(v[0]["IPAddress"], "192.0.2.11");
    let v = c
        .ok(
            "POST",
            "/hsm/v2/Inventory/EthernetInterfaces/525400aa0001/IPAddresses",
            Some(json!({"IPAddress": "198.51.100.11", "Network": "HSN"})),
            201,
            "smd#ResourceURI",
        )
        .await;
    assert_eq!(
        v["URI"],
        "/hsm/v2/Inventory/EthernetInterfaces/525400aa0001/IPAddresses/198.51.100.11"
    );
    c.refused(
        "POST",
        "/hsm/v2/Inventory/EthernetInterfaces/525400aa0001/IPAddresses",
        Some(json!({"IPAddress": "198.51.100.11"})),
        409,
        "198.51.100.11",
    )
    .await;
    c.ok(
        "PATCH",
        "/hsm/v2/Inventory/EthernetInterfaces/525400aa0001/IPAddresses/198.51.100.11",
        Some(json!({"Network": "MGMT"})),
        200,
        "smd#IPAddressMapping",
    )
    .await;
    let v = c
        .ok(
            "GET",
            "/hsm/v2/Inventory/EthernetInterfaces/525400aa0001/IPAddresses",
            None,
            200,
            "smd#IPAddressMappingArray",
        )
        .await;
    assert_eq!(
        v[1],
        json!({"IPAddress": "198.51.100.11", "Network": "MGMT"})
    );
    c.ok(
        "DELETE",
        "/hsm/v2/Inventory/EthernetInterfaces/525400aa0001/IPAddresses/198.51.100.11",
        None,
        200,
        "smd#Response",
    )
    .await;
    c.refused(
        "DELETE",
        "/hsm/v2/Inventory/EthernetInterfaces/525400aa0001/IPAddresses/198.51.100.11",
        None,
        404,
        "198.51.100.11",
    )
    .await;
    c.expect(
        "PATCH",
        "/hsm/v2/Inventory/EthernetInterfaces/525400aa0001",
        Some(json!({"ID": "525400aa0001", "ComponentID": N1, "Type": "Node", "Description": "renamed", "MACAddress": "52:54:00:aa:00:01",
                    "IPAddresses": [{"IPAddress": "192.0.2.21", "Network": "NMN"}]})),
        true,
        200,
        Some("smd#EthernetInterface"),
    )
    .await;

    // magellan send: POST, then PUT /{xname} on a later run.
    let rfe = json!({"ID": BMC, "Type": "", "Name": "", "FQDN": "192.0.2.100", "User": "root", "MACRequired": true,
                     "RediscoverOnUpdate": false, "SchemaVersion": 1, "MACAddr": "52:54:00:aa:00:ff",
                     "Systems": [{"uri": "/redfish/v1/Systems/1", "uuid": "bf9362ad-b29c-40ed-9881-18a5dba3a26b", "name": "System",
                                  "ethernet_interfaces": [{"uri": "/redfish/v1/Systems/1/EthernetInterfaces/1", "mac": "52:54:00:aa:00:01"}]}],
                     "Managers": [{"uri": "/redfish/v1/Managers/1", "name": "BMC", "type": "BMC",
                                   "ethernet_interfaces": [{"mac": "52:54:00:aa:00:ff"}]}]});
    let v = c
        .ok(
            "POST",
            "/hsm/v2/Inventory/RedfishEndpoints",
            Some(rfe.clone()),
            201,
            "smd#ResourceURIArray",
        )
        .await;
    assert_eq!(
        v[0]["URI"],
        format!("/hsm/v2/Inventory/RedfishEndpoints/{BMC}")
    );
    c.refused(
        "POST",
        "/hsm/v2/Inventory/RedfishEndpoints",
        Some(rfe.clone()),
        409,
        BMC,
    )
    .await;
    c.ok(
        "PUT",
        &format!("/hsm/v2/Inventory/RedfishEndpoints/{BMC}"),
        Some(rfe),
        200,
        "smd#RedfishEndpoint",
    )
    .await;
    // ochami smd rfe add: {"RedfishEndpoints": [csm.RedfishEndpoint…]}, one POST each.
    c.ok(
        "POST",
        "/hsm/v2/Inventory/RedfishEndpoints",
        Some(json!({"ID": "x1000c0s1b0", "Type": "NodeBMC", "Hostname": "x1000c0s1b0", "FQDN": "x1000c0s1b0.local", "Enabled": true,
                    "User": "root", "Password": "secret", "MACAddr": "52:54:00:bb:00:ff", "IPAddress": "192.0.2.101"})),
        201,
        "smd#ResourceURIArray",
    )
    .await;
    c.refused(
        "POST",
        "/hsm/v2/Inventory/RedfishEndpoints",
        Some(json!({"ID": "garbage"})),
        400,
        "xname",
    )
    .await;
    let v = c
        .ok(
            "GET",
            &format!("/hsm/v2/Inventory/RedfishEndpoints/{BMC}"),
            None,
            200,
            "smd#RedfishEndpoint",
        )
        .await;
    assert_eq!(v["Type"], "NodeBMC", "SMD derives the type from the xname");
    c.refused(
        "GET",
        "/hsm/v2/Inventory/RedfishEndpoints/bad-name",
        None,
        400,
        "xname",
    )
    .await;
    for (query, want) in [
        ("", vec![BMC, "x1000c0s1b0"]),
        (&format!("id={BMC}") as &str, vec![BMC]),
        ("type=NodeBMC", vec![BMC, "x1000c0s1b0"]),
        ("fqdn=x1000c0s1b0.local", vec!["x1000c0s1b0"]),
        ("macaddr=525400bb00ff", vec!["x1000c0s1b0"]),
        ("ipaddress=192.0.2.101", vec!["x1000c0s1b0"]),
        ("type=RouterBMC", vec![]),
    ] {
        let v = c
            .ok(
                "GET",
                &format!("/hsm/v2/Inventory/RedfishEndpoints?{query}"),
                None,
                200,
                "smd#RedfishEndpointArray",
            )
            .await;
        assert_eq!(ids(&v, "RedfishEndpoints"), want, "?{query}");
    }
    c.refused(
        "GET",
        "/hsm/v2/Inventory/RedfishEndpoints?xname=x1",
        None,
        400,
        "xname",
    )
    .await;
    // ochami smd compep get/delete: derived from the endpoint's Systems and Managers.
    let v = c
        .ok(
            "GET",
            "/hsm/v2/Inventory/ComponentEndpoints",
            None,
            200,
            "smd#ComponentEndpointArray",
        )
        .await;
    let mut got = ids(&v, "ComponentEndpoints");
    got.sort();
    assert_eq!(got, [BMC, N1]);
    let v = c
        .ok(
            "GET",
            &format!("/hsm/v2/Inventory/ComponentEndpoints/{N1}"),
            None,
            200,
            "smd#ComponentEndpoint",
        )
        .await;
    assert_eq!(
        v["RedfishSystemInfo"]["EthernetNICInfo"][0]["MACAddress"],
        "52:54:00:aa:00:01"
    );
    c.ok(
        "DELETE",
        &format!("/hsm/v2/Inventory/ComponentEndpoints/{N1}"),
        None,
        200,
        "smd#Response",
    )
    .await;
    c.refused(
        "GET",
        &format!("/hsm/v2/Inventory/ComponentEndpoints/{N1}"),
        None,
        404,
        N1,
    )
    .await;

    // ochami smd group add/get/update, member add/set/delete, membership.
    let v = c
        .ok(
            "POST",
            "/hsm/v2/groups",
            Some(json!({"label": "compute", "description": "all compute", "tags": ["Blue"], "members": {"ids": [N1]}})),
            201,
            "smd#ResourceURIArray",
        )
        .await;
    assert_eq!(v[0]["URI"], "/hsm/v2/groups/compute");
    c.ok(
        "POST",
        "/hsm/v2/groups",
        Some(json!({"label": "io:nodes", "description": "", "members": {"ids": [N2]}})),
        201,
        "smd#ResourceURIArray",
    )
    .await;
    c.refused(
        "POST",
        "/hsm/v2/groups",
        Some(json!({"label": "bad label"})),
        400,
        "bad label",
    )
    .await;
    let v = c
        .ok(
            "GET",
            "/hsm/v2/groups?group=compute",
            None,
            200,
            "smd#GroupArray",
        )
        .await;
    assert_eq!(ids(&v, ""), ["compute"]);
    let v = c
        .ok(
            "GET",
            "/hsm/v2/groups?tag=blue",
            None,
            200,
            "smd#GroupArray",
        )
        .await;
    assert_eq!(ids(&v, ""), ["compute"]);
    let v = c
        .ok("GET", "/hsm/v2/groups", None, 200, "smd#GroupArray")
        .await;
    assert_eq!(v.as_array().unwrap().len(), 2);
    c.refused("GET", "/hsm/v2/groups?name=compute", None, 400, "name")
        .await;
    let v = c
        .ok("GET", "/hsm/v2/groups/labels", None, 200, "smd#GroupLabels")
        .await;
    assert_eq!(v, json!(["compute", "io:nodes"]));
    c.ok("GET", "/hsm/v2/groups/compute", None, 200, "smd#Group")
        .await;
    // PatchGroups sends the whole group struct.
    c.expect(
        "PATCH",
        "/hsm/v2/groups/compute",
        Some(json!({"label": "compute", "description": "patched", "members": {}})),
        true,
        204,
        None,
    )
    .await;
    let v = c
        .ok(
            "POST",
            "/hsm/v2/groups/compute/members",
            Some(json!({"id": N2})),
            201,
            "smd#ResourceURIArray",
        )
        .await;
    assert_eq!(v[0]["URI"], format!("/hsm/v2/groups/compute/members/{N2}"));
    c.refused(
        "POST",
        "/hsm/v2/groups/compute/members",
        Some(json!({"id": N2})),
        409,
        N2,
    )
    .await;
    let v = c
        .ok(
            "GET",
            "/hsm/v2/groups/compute/members",
            None,
            200,
            "smd#Members",
        )
        .await;
    assert_eq!(v["ids"], json!([N1, N2]));
    let v = c
        .ok(
            "PUT",
            "/hsm/v2/groups/compute/members",
            Some(json!({"group": "compute", "ids": [N1]})),
            201,
            "smd#ResourceURIArray",
        )
        .await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    let v = c
        .ok(
            "GET",
            "/hsm/v2/State/Components?group=compute",
            None,
            200,
            "smd#ComponentArray",
        )
        .await;
    assert_eq!(ids(&v, "Components"), [N1]);
    let v = c
        .ok(
            "GET",
            &format!("/hsm/v2/memberships/{N1}"),
            None,
            200,
            "smd#Membership",
        )
        .await;
    assert_eq!(v["groupLabels"], json!(["compute"]));
    c.refused(
        "GET",
        "/hsm/v2/memberships/x1000c0s30b0n0",
        None,
        404,
        "x1000c0s30b0n0",
    )
    .await;
    c.refused("GET", "/hsm/v2/memberships/nonsense", None, 400, "xname")
        .await;
    let v = c
        .ok(
            "GET",
            "/hsm/v2/memberships",
            None,
            200,
            "smd#MembershipArray",
        )
        .await;
    assert_eq!(v.as_array().unwrap().len(), 4);
    let v = c
        .ok(
            "GET",
            "/hsm/v2/memberships?id=x1000c0s1b0n0&type=Node",
            None,
            200,
            "smd#MembershipArray",
        )
        .await;
    assert_eq!(v[0]["groupLabels"], json!(["io:nodes"]));
    c.ok(
        "DELETE",
        &format!("/hsm/v2/groups/compute/members/{N1}"),
        None,
        200,
        "smd#Response",
    )
    .await;
    c.ok(
        "DELETE",
        "/hsm/v2/groups/io:nodes",
        None,
        200,
        "smd#Response",
    )
    .await;

    // As SMD, magellan's Systems and Managers become Components and EthernetInterfaces (no
    // addresses: in rackboot those are DHCP reservations).
    let fresh = json!({"ID": "x1000c0s5b0", "Type": "", "Name": "", "FQDN": "192.0.2.105", "User": "root", "MACRequired": true,
                       "RediscoverOnUpdate": false, "SchemaVersion": 1,
                       "Systems": [{"uri": "/redfish/v1/Systems/1", "ethernet_interfaces": [{"mac": "52:54:00:cc:00:01", "ip": "192.0.2.150"}]}],
                       "Managers": [{"uri": "/redfish/v1/Managers/1", "ethernet_interfaces": [{"mac": "52:54:00:cc:00:ff", "ip": "192.0.2.105"}]}]});
    c.ok(
        "POST",
        "/hsm/v2/Inventory/RedfishEndpoints",
        Some(fresh),
        201,
        "smd#ResourceURIArray",
    )
    .await;
    let v = c
        .ok(
            "GET",
            "/hsm/v2/State/Components/x1000c0s5b0n0",
            None,
            200,
            "smd#Component",
        )
        .await;
    assert_eq!(
        (
            v["Type"].as_str(),
            v["State"].as_str(),
            v["Enabled"].as_bool()
        ),
        (Some("Node"), Some("On"), Some(true))
    );
    let v = c
        .ok(
            "GET",
            "/hsm/v2/State/Components/x1000c0s5b0",
            None,
            200,
            "smd#Component",
        )
        .await;
    assert_eq!(v["Type"], "NodeBMC");
    for (owner, mac) in [
        ("x1000c0s5b0n0", "52:54:00:cc:00:01"),
        ("x1000c0s5b0", "52:54:00:cc:00:ff"),
    ] {
        let v = c
            .ok(
                "GET",
                &format!("/hsm/v2/Inventory/EthernetInterfaces?ComponentID={owner}"),
                None,
                200,
                "smd#EthernetInterfaceArray",
            )
            .await;
        assert_eq!(v[0]["MACAddress"], mac, "{v}");
        assert_eq!(v[0]["IPAddresses"], json!([]), "{v}");
    }

    // Hardware inventory, from the FRUs discovery stored in an endpoint (discovery.rs tests
    // the crawl that fills them).
    let hw = json!({"ID": "x1000c0s6b0", "Type": "NodeBMC", "FQDN": "192.0.2.106",
        "Managers": [{"URI": "/redfish/v1/Managers/1", "Model": "BMC-9", "SerialNumber": "BMC6", "Manufacturer": "Acme"}],
        "Systems": [{"Node": "x1000c0s6b0n0", "URI": "/redfish/v1/Systems/1", "Model": "R1", "Manufacturer": "Acme",
                     "SerialNumber": "SYS6", "UUID": "bf9362ad-b29c-40ed-9881-18a5dba3a26b",
                     "Hardware": {
                         "Enclosure": {"Id": "1", "Model": "Chassis-1", "SerialNumber": "CH6", "PartNumber": "CP-1", "ChassisType": "RackMount"},
                         "Processors": [{"Id": "CPU0", "Model": "Epyc", "Manufacturer": "AMD", "SerialNumber": "C6", "PartNumber": "100-1",
                                         "TotalCores": 64, "TotalThreads": 128, "MaxSpeedMHz": 3700, "Socket": "P0"}],
                         "Memory": [{"Id": "DIMM0", "Manufacturer": "Hynix", "SerialNumber": "M6", "PartNumber": "HMA", "CapacityMiB": 65536},
                                    {"Id": "DIMM1", "State": "Absent"}]}}]});
    c.ok(
        "PUT",
        "/hsm/v2/Inventory/RedfishEndpoints/x1000c0s6b0",
        Some(hw),
        200,
        "smd#RedfishEndpoint",
    )
    .await;
    let v = c
        .ok(
            "GET",
            "/hsm/v2/Inventory/Hardware",
            None,
            200,
            "smd#HWInvByLocArray",
        )
        .await;
    assert_eq!(
        v.as_array().unwrap().len(),
        6,
        "BMC, node, enclosure, CPU, two DIMM slots: {v}"
    );
    let v = c
        .ok(
            "GET",
            "/hsm/v2/Inventory/Hardware?type=Processor",
            None,
            200,
            "smd#HWInvByLocArray",
        )
        .await;
    assert_eq!(v[0]["ID"], "x1000c0s6b0n0p0");
    assert_eq!(v[0]["PopulatedFRU"]["ProcessorFRUInfo"]["TotalCores"], 64);
    let v = c
        .ok(
            "GET",
            "/hsm/v2/Inventory/Hardware?serialnumber=M6",
            None,
            200,
            "smd#HWInvByLocArray",
        )
        .await;
    assert_eq!(v[0]["ID"], "x1000c0s6b0n0d0");
    let v = c
        .ok(
            "GET",
            "/hsm/v2/Inventory/Hardware/x1000c0s6b0n0d1",
            None,
            200,
            "smd#HWInvByLoc",
        )
        .await;
    assert_eq!(v["Status"], "Empty");
    c.ok(
        "GET",
        "/hsm/v2/Inventory/Hardware/x1000c0s6e0",
        None,
        200,
        "smd#HWInvByLoc",
    )
    .await;
    c.refused(
        "GET",
        "/hsm/v2/Inventory/Hardware/x1000c0s7e0",
        None,
        404,
        "x1000c0s7e0",
    )
    .await;
    let v = c
        .ok(
            "GET",
            "/hsm/v2/Inventory/HardwareByFRU?manufacturer=AMD",
            None,
            200,
            "smd#HWInvByFRUArray",
        )
        .await;
    let fruid = v[0]["FRUID"].as_str().unwrap().to_owned();
    assert_eq!(fruid, "Processor.AMD.100-1.C6");
    c.ok(
        "GET",
        &format!("/hsm/v2/Inventory/HardwareByFRU/{fruid}"),
        None,
        200,
        "smd#HWInvByFRU",
    )
    .await;
    let v = c
        .ok(
            "GET",
            "/hsm/v2/Inventory/HardwareByFRU",
            None,
            200,
            "smd#HWInvByFRUArray",
        )
        .await;
    assert_eq!(
        v.as_array().unwrap().len(),
        5,
        "the empty slot has no FRU: {v}"
    );
    c.refused(
        "GET",
        "/hsm/v2/Inventory/Hardware?color=red",
        None,
        400,
        "color",
    )
    .await;
    c.refused(
        "DELETE",
        "/hsm/v2/Inventory/Hardware",
        None,
        501,
        "discovery",
    )
    .await;

    // What a rack does not offer is a 501 that says why.
    for path in [
        "/hsm/v2/locks/status",
        "/hsm/v2/partitions",
        "/hsm/v2/Inventory/Hardware/Query/x1000c0s6b0",
        "/hsm/v2/sysinfo/powermaps",
    ] {
        c.refused("GET", path, None, 501, "").await;
    }

    // ochami smd component/rfe/iface delete <id>.
    c.ok(
        "DELETE",
        "/hsm/v2/State/Components/x1000c0s2b0n0",
        None,
        200,
        "smd#Response",
    )
    .await;
    c.refused(
        "DELETE",
        "/hsm/v2/State/Components/x1000c0s2b0n0",
        None,
        404,
        "x1000c0s2b0n0",
    )
    .await;
    c.ok(
        "DELETE",
        "/hsm/v2/Inventory/RedfishEndpoints/x1000c0s6b0",
        None,
        200,
        "smd#Response",
    )
    .await;
    c.refused(
        "DELETE",
        "/hsm/v2/Inventory/RedfishEndpoints/x1000c0s6b0",
        None,
        404,
        "x1000c0s6b0",
    )
    .await;
    c.ok(
        "DELETE",
        "/hsm/v2/Inventory/EthernetInterfaces/525400aa0002",
        None,
        200,
        "smd#Response",
    )
    .await;
    c.refused(
        "DELETE",
        "/hsm/v2/Inventory/EthernetInterfaces/525400aa0002",
        None,
        404,
        "525400aa0002",
    )
    .await;

    // ochami smd … delete --all.
    c.ok(
        "DELETE",
        "/hsm/v2/Inventory/ComponentEndpoints",
        None,
        200,
        "smd#Response",
    )
    .await;
    c.ok(
        "DELETE",
        "/hsm/v2/Inventory/EthernetInterfaces",
        None,
        200,
        "smd#Response",
    )
    .await;
    c.ok(
        "DELETE",
        "/hsm/v2/Inventory/RedfishEndpoints",
        None,
        200,
        "smd#Response",
    )
    .await;
    let v = c
        .ok(
            "DELETE",
            "/hsm/v2/State/Components",
            None,
            200,
            "smd#Response",
        )
        .await;
    assert_eq!(v["message"], "deleted 5 entries");
    c.refused(
        "DELETE",
        "/hsm/v2/State/Components",
        None,
        404,
        "no entries",
    )
    .await;
    let v = c
        .ok(
            "GET",
            "/hsm/v2/State/Components",
            None,
            200,
            "smd#ComponentArray",
        )
        .await;
    assert_eq!(v["Components"], json!([]));

    c.validate();
}

/// ochami's `bss boot params/script`, `bss hosts`, `bss dumpstate`, `bss history`, `bss status`.
#[tokio::test(flavor = "multi_thread")]
async fn bss_calls_of_ochami() {
    let mut c = Contract::new();
    for (path, schema) in [
        ("/boot/v1/service/status", "bss#Status"),
        ("/boot/v1/service/status/all", "bss#StatusAll"),
        ("/boot/v1/service/storage/status", "bss#StorageStatus"),
        ("/boot/v1/service/hsm", "bss#HsmStatus"),
        ("/boot/v1/service/version", "bss#Version"),
    ] {
        c.expect("GET", path, None, false, 200, Some(schema)).await;
    }
    // The node, its NIC, its boot parameters by MAC (ochami smd component/iface add, bss boot
    // params add with bssTypes.BootParams).
    c.expect(
        "POST",
        "/hsm/v2/State/Components",
        Some(json!({"Components": [{"ID": N1, "Type": "Node", "State": "Ready", "Enabled": true, "Role": "Compute", "Arch": "X86", "NID": 101}]})),
        true,
        204,
        None,
    )
    .await;
    c.expect(
        "POST",
        "/hsm/v2/Inventory/EthernetInterfaces",
        Some(json!({"ID": "", "ComponentID": N1, "Type": "Node", "Description": "", "MACAddress": "52:54:00:aa:00:01", "IPAddresses": [{"IPAddress": "192.0.2.11", "Network": ""}]})),
        true,
        201,
        None,
    )
    .await;
    let bp = json!({"macs": ["52:54:00:AA:00:01"], "kernel": "http://192.0.2.1/images/kernel", "initrd": "http://192.0.2.1/images/initrd",
                    "params": "console=ttyS0", "cloud-init": {"meta-data": null, "user-data": null, "phone-home": null}});
    c.expect(
        "POST",
        "/boot/v1/bootparameters",
        Some(bp.clone()),
        true,
        201,
        None,
    )
    .await;
    c.refused("POST", "/boot/v1/bootparameters", Some(bp), 400, "")
        .await;
    for q in ["mac=52:54:00:aa:00:01", "mac=52:54:00:AA:00:01"] {
        let v = c
            .ok(
                "GET",
                &format!("/boot/v1/bootparameters?{q}"),
                None,
                200,
                "bss#BootParamsArray",
            )
            .await;
        assert_eq!(v[0]["macs"][0], "52:54:00:aa:00:01");
    }
    c.ok(
        "GET",
        "/boot/v1/bootparameters",
        None,
        200,
        "bss#BootParamsArray",
    )
    .await;
    c.refused(
        "GET",
        "/boot/v1/bootparameters?name=x1000c0s9b0n0",
        None,
        404,
        "",
    )
    .await;
    c.expect(
        "PATCH",
        "/boot/v1/bootparameters",
        Some(json!({"macs": ["52:54:00:aa:00:01"], "params": "console=ttyS0 quiet"})),
        true,
        200,
        None,
    )
    .await;

    // ochami bss boot script get --nid 101: the NID resolves to the node (its MAC has the
    // parameters). Watch the event stream so endpoint-history is read after the fetch is stored.
    let events = c
        .http
        .get(format!("{}/rackboot/v1/events", c.srv.base))
        .bearer_auth(&c.srv.token)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status().as_u16(), 200);
    let (code, script) = c
        .send("GET", "/boot/v1/bootscript?nid=101", None, false)
        .await;
    assert_eq!(code, 200, "{script}");
    let script = script.as_str().unwrap().to_owned();
    assert!(
        script.contains("kernel --name kernel http://192.0.2.1/images/kernel"),
        "{script}"
    );
    assert!(
        script.contains(&format!("xname={N1}")) && script.contains("nid=101"),
        "{script}"
    );
    assert!(script.contains("console=ttyS0 quiet"), "{script}");
    let mut stream = events;
    let mut seen = String::new();
    while !seen.contains("\"bootscript\"") {
        let chunk = stream.chunk().await.unwrap().expect("event stream ended");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let (code, by_mac) = c
        .send(
            "GET",
            "/boot/v1/bootscript?mac=52:54:00:aa:00:01",
            None,
            false,
        )
        .await;
    assert_eq!(code, 200);
    assert!(by_mac.as_str().unwrap().contains("nid=101"), "{by_mac}");
    let (code, by_name) = c
        .send(
            "GET",
            &format!("/boot/v1/bootscript?name={N1}"),
            None,
            false,
        )
        .await;
    assert_eq!(code, 200);
    assert!(
        by_name.as_str().unwrap().contains("kernel --name kernel"),
        "{by_name}"
    );

    // ochami bss hosts get / dumpstate / history (a token: see docs/openchami-compat.md).
    let v = c
        .ok(
            "GET",
            &format!("/boot/v1/hosts?name={N1}"),
            None,
            200,
            "bss#HostInfo",
        )
        .await;
    assert_eq!(v[0]["MAC"], json!(["52:54:00:aa:00:01"]));
    assert_eq!(v[0]["NID"], 101);
    c.expect("POST", "/boot/v1/hosts", None, true, 204, None)
        .await;
    let v = c
        .ok("GET", "/boot/v1/dumpstate", None, 200, "bss#StateInfo")
        .await;
    assert_eq!(v["params"].as_array().unwrap().len(), 1);
    let v = c
        .ok(
            "GET",
            &format!("/boot/v1/endpoint-history?name={N1}&endpoint=bootscript"),
            None,
            200,
            "bss#EndpointAccessArray",
        )
        .await;
    assert_eq!(v[0]["name"], N1);
    assert!(v[0]["last_epoch"].as_i64().unwrap() > 1_600_000_000, "{v}");
    let v = c
        .ok(
            "GET",
            "/boot/v1/endpoint-history?name=x1000c0s5b0n0&endpoint=user-data",
            None,
            200,
            "bss#EndpointAccessArray",
        )
        .await;
    assert_eq!(v[0]["last_epoch"], 0);
    c.refused(
        "GET",
        "/boot/v1/endpoint-history?endpoint=kernel",
        None,
        400,
        "kernel",
    )
    .await;
    c.refused("GET", "/boot/v1/hosts?xname=x1", None, 400, "xname")
        .await;
    c.refused(
        "GET",
        "/boot/v1/bootparameters?xname=x1",
        None,
        400,
        "xname",
    )
    .await;

    // ochami bss boot params update (PUT) and delete (selector in the body).
    c.expect(
        "PUT",
        "/boot/v1/bootparameters",
        Some(json!({"hosts": [N1], "kernel": "http://192.0.2.1/images/k2", "initrd": "http://192.0.2.1/images/i2", "params": ""})),
        true,
        200,
        None,
    )
    .await;
    c.expect(
        "DELETE",
        "/boot/v1/bootparameters",
        Some(json!({"macs": ["52:54:00:aa:00:01"]})),
        true,
        200,
        None,
    )
    .await;
    c.refused(
        "GET",
        "/boot/v1/bootparameters?mac=52:54:00:aa:00:01",
        None,
        404,
        "",
    )
    .await;

    c.validate();
}
