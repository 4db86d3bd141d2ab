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
//!
//! One module per capability; every test starts its own server, seeds the state it needs and
//! validates the bodies it recorded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod bss;
mod smd_deletes;
mod smd_endpoints;
mod smd_groups;
mod smd_interfaces;
mod smd_service_and_components;

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

// Seeding shared by the tests.

/// ochami smd component add: its Component struct (ID, Type, State, Enabled, Role, Arch, NID).
async fn post_components(c: &mut Contract) {
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
}

/// A node sent with lower-case enumerated values (SMD normalises them).
async fn post_lowercase_component(c: &mut Contract) {
    c.expect(
        "POST",
        "/hsm/v2/State/Components",
        Some(json!({"Components": [{"ID": "x1000c0s2b0n0", "State": "on", "Flag": "warning", "Arch": "x86", "Class": "river"}]})),
        true,
        204,
        None,
    )
    .await;
}

/// The four components the component tests start from.
async fn seed_components(c: &mut Contract) {
    post_components(c).await;
    post_lowercase_component(c).await;
}

/// ochami smd iface add: its EthernetInterface struct, N1's boot NIC.
fn nic1() -> Value {
    json!({"ID": "", "ComponentID": N1, "Type": "Node", "Description": "boot NIC", "MACAddress": "52:54:00:AA:00:01",
           "IPAddresses": [{"IPAddress": "192.0.2.11", "Network": "NMN"}]})
}

/// N2's NIC.
fn nic2() -> Value {
    json!({"ID": "", "ComponentID": N2, "Type": "Node", "Description": "", "MACAddress": "52:54:00:aa:00:02",
           "IPAddresses": [{"IPAddress": "192.0.2.12", "Network": "HMN"}]})
}

/// What magellan send posts for BMC: its system (N1, with N1's NIC) and its manager.
fn magellan_bmc() -> Value {
    json!({"ID": BMC, "Type": "", "Name": "", "FQDN": "192.0.2.100", "User": "root", "MACRequired": true,
           "RediscoverOnUpdate": false, "SchemaVersion": 1, "MACAddr": "52:54:00:aa:00:ff",
           "Systems": [{"uri": "/redfish/v1/Systems/1", "uuid": "bf9362ad-b29c-40ed-9881-18a5dba3a26b", "name": "System",
                        "ethernet_interfaces": [{"uri": "/redfish/v1/Systems/1/EthernetInterfaces/1", "mac": "52:54:00:aa:00:01"}]}],
           "Managers": [{"uri": "/redfish/v1/Managers/1", "name": "BMC", "type": "BMC",
                         "ethernet_interfaces": [{"mac": "52:54:00:aa:00:ff"}]}]})
}

/// What magellan send posts for x1000c0s5b0, a BMC nothing else names.
fn magellan_fresh() -> Value {
    json!({"ID": "x1000c0s5b0", "Type": "", "Name": "", "FQDN": "192.0.2.105", "User": "root", "MACRequired": true,
           "RediscoverOnUpdate": false, "SchemaVersion": 1,
           "Systems": [{"uri": "/redfish/v1/Systems/1", "ethernet_interfaces": [{"mac": "52:54:00:cc:00:01", "ip": "192.0.2.150"}]}],
           "Managers": [{"uri": "/redfish/v1/Managers/1", "ethernet_interfaces": [{"mac": "52:54:00:cc:00:ff", "ip": "192.0.2.105"}]}]})
}

/// x1000c0s6b0 with the FRUs discovery stores in an endpoint.
fn hardware_endpoint() -> Value {
    json!({"ID": "x1000c0s6b0", "Type": "NodeBMC", "FQDN": "192.0.2.106",
        "Managers": [{"URI": "/redfish/v1/Managers/1", "Model": "BMC-9", "SerialNumber": "BMC6", "Manufacturer": "Acme"}],
        "Systems": [{"Node": "x1000c0s6b0n0", "URI": "/redfish/v1/Systems/1", "Model": "R1", "Manufacturer": "Acme",
                     "SerialNumber": "SYS6", "UUID": "bf9362ad-b29c-40ed-9881-18a5dba3a26b",
                     "Hardware": {
                         "Enclosure": {"Id": "1", "Model": "Chassis-1", "SerialNumber": "CH6", "PartNumber": "CP-1", "ChassisType": "RackMount"},
                         "Processors": [{"Id": "CPU0", "Model": "Epyc", "Manufacturer": "AMD", "SerialNumber": "C6", "PartNumber": "100-1",
                                         "TotalCores": 64, "TotalThreads": 128, "MaxSpeedMHz": 3700, "Socket": "P0"}],
                         "Memory": [{"Id": "DIMM0", "Manufacturer": "Hynix", "SerialNumber": "M6", "PartNumber": "HMA", "CapacityMiB": 65536},
                                    {"Id": "DIMM1", "State": "Absent"}]}}]})
}
