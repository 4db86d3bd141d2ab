//! rackboot's DNS against real peers: `dig` (A, PTR, SOA, NS, AXFR and a refused one, TCP
//! fallback), malformed datagrams, BIND 9 `named` as a secondary (AXFR, then NOTIFY), and
//! dnsmasq as the forwarder. Clients sit in a second namespace on a veth, at their own
//! addresses, as a site's DNS would.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qemu_tests::{Netns, Rackboot, preflight};

const DOMAIN: &str = "rack1.cluster";
const SECONDARY: &str = "192.0.2.53";
const STRANGER: &str = "192.0.2.250";

/// The DNS peers a test needs, or `false` (a failure under `CI=true`).
fn have_tools(tools: &[&str]) -> bool {
    let missing: Vec<&&str> = tools.iter().filter(|t| !qemu_tests::have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "DNS peers missing: {missing:?} (bind9-dnsutils, bind9, dnsmasq-base; `cargo xtask deps`)"
    );
    assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "{msg}");
    eprintln!("SKIPPED (not in CI): {msg}");
    false
}

/// A client namespace on the bridge holding `addrs`.
fn clients(ns: &Netns, addrs: &[&str]) -> Netns {
    let c = ns.add_client_ns().unwrap();
    for a in addrs {
        c.ip(&["addr", "add", &format!("{a}/24"), "dev", "vc"])
            .unwrap();
    }
    c
}

/// `dig` from `ns` (source `from`) to rackboot; the whole output.
fn dig(ns: &Netns, from: &str, args: &[&str]) -> String {
    let out = ns
        .cmd("dig")
        .args(["@192.0.2.1", "-b", from, "+time=2", "+tries=2"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `dig +short`: the answer's data lines.
fn short(ns: &Netns, from: &str, args: &[&str]) -> Vec<String> {
    let mut a = vec!["+short"];
    a.extend_from_slice(args);
    dig(ns, from, &a)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(str::to_owned)
        .collect()
}

fn serial(ns: &Netns, from: &str) -> u64 {
    let soa = short(ns, from, &[DOMAIN, "SOA"]);
    soa.first()
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no SOA serial in {soa:?}"))
}

/// Polls `f` until it returns true; the inventory → zone path is asynchronous (an event, then
/// a rebuild), so tests wait for the event's effect, with a generous bound for a loaded CI.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut e = vec![
        ("RACKBOOT_DNS__DOMAIN", DOMAIN),
        ("RACKBOOT_DNS__ALIASES", r#"{ head = "nid0001" }"#),
    ];
    e.extend_from_slice(extra);
    e
}

#[test]
fn dns_serves_the_inventory_and_refuses_what_it_must() {
    if !preflight(false) || !have_tools(&["dig", "python3"]) {
        return;
    }
    let ns = Netns::new("dns").unwrap();
    let rb = Rackboot::start_with_env(
        &ns,
        &env(&[("RACKBOOT_DNS__SECONDARIES", r#"["192.0.2.53"]"#)]),
    )
    .unwrap();
    let c = clients(&ns, &[SECONDARY, STRANGER]);
    rb.register_node("x1000c0s0b0n0", 1, "52:54:00:aa:00:01", "192.0.2.11")
        .unwrap();
    let (code, body) = rb
        .http(
            "POST",
            "/hsm/v2/Inventory/RedfishEndpoints",
            Some(r#"{"ID":"x1000c0s0b0","FQDN":"192.0.2.200","User":"root","Password":"x"}"#),
        )
        .unwrap();
    assert_eq!(code, 201, "{body}");

    // A by hostname and xname, the BMC by xname, the alias, PTR, the appliance, NS.
    eventually("the BMC is in the zone", || {
        short(&c, STRANGER, &["x1000c0s0b0.rack1.cluster", "A"]) == ["192.0.2.200"]
    });
    assert_eq!(
        short(&c, STRANGER, &["nid0001.rack1.cluster"]),
        ["192.0.2.11"]
    );
    assert_eq!(
        short(&c, STRANGER, &["X1000C0S0B0N0.rack1.cluster"]),
        ["192.0.2.11"]
    );
    assert_eq!(
        short(&c, STRANGER, &["head.rack1.cluster"]),
        ["nid0001.rack1.cluster.", "192.0.2.11"]
    );
    assert_eq!(
        short(&c, STRANGER, &["-x", "192.0.2.11"]),
        ["nid0001.rack1.cluster."]
    );
    assert_eq!(
        short(&c, STRANGER, &["rackboot.rack1.cluster"]),
        ["192.0.2.1"]
    );
    assert_eq!(short(&c, STRANGER, &[DOMAIN, "NS"]), ["ns.rack1.cluster."]);
    let out = dig(&c, STRANGER, &["nosuch.rack1.cluster"]);
    assert!(
        out.contains("status: NXDOMAIN") && out.contains("flags: qr aa"),
        "{out}"
    );

    // A new node is answered without a restart, under a larger serial.
    let before = serial(&c, STRANGER);
    rb.register_node("x1000c0s1b0n0", 2, "52:54:00:aa:00:02", "192.0.2.12")
        .unwrap();
    eventually("the new node resolves", || {
        short(&c, STRANGER, &["nid0002.rack1.cluster"]) == ["192.0.2.12"]
    });
    assert!(serial(&c, STRANGER) > before);

    // AXFR: the listed secondary gets the zone, anyone else REFUSED.
    let axfr = dig(&c, SECONDARY, &[DOMAIN, "AXFR"]);
    assert!(
        axfr.contains("nid0002.rack1.cluster.") && axfr.contains("XFR size"),
        "{axfr}"
    );
    let rev = dig(&c, SECONDARY, &["2.0.192.in-addr.arpa", "AXFR"]);
    assert!(rev.contains("11.2.0.192.in-addr.arpa."), "{rev}");
    let refused = dig(&c, STRANGER, &[DOMAIN, "AXFR"]);
    assert!(
        refused.contains("Transfer failed") || refused.contains("REFUSED"),
        "{refused}"
    );

    // Names outside the rack with no forwarders: REFUSED (not an open resolver).
    let out = dig(&c, STRANGER, &["example.com"]);
    assert!(out.contains("status: REFUSED"), "{out}");

    // TCP fallback: 60 addresses do not fit 512 bytes of UDP.
    let many: Vec<String> = (100..160)
        .map(|i| format!(r#"{{"IPAddress":"198.51.100.{i}"}}"#))
        .collect();
    let (code, body) = rb
        .http(
            "POST",
            "/hsm/v2/Inventory/EthernetInterfaces",
            Some(&format!(
                r#"{{"MACAddress":"52:54:00:aa:00:09","ComponentID":"x1000c0s2b0n0","IPAddresses":[{}]}}"#,
                many.join(",")
            )),
        )
        .unwrap();
    assert_eq!(code, 201, "{body}");
    let name = "x1000c0s2b0n0.rack1.cluster";
    eventually("the big name exists", || {
        short(&c, STRANGER, &["+tcp", name]).len() == 60
    });
    let udp = dig(&c, STRANGER, &["+ignore", "+noedns", name]);
    assert!(udp.contains(" tc") && udp.contains("ANSWER: 0"), "{udp}");
    assert_eq!(
        short(&c, STRANGER, &["+noedns", name]).len(),
        60,
        "dig retries over TCP"
    );

    // Malformed datagrams: FORMERR with the request's ID, or nothing when there is no header;
    // counted, and the server keeps answering.
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.250", 0))
s.settimeout(3)
s.sendto(b"\x12", ("192.0.2.1", 53))
# ID 0xbeef, a query claiming one question that is not there.
s.sendto(b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07garbage", ("192.0.2.1", 53))
r, _ = s.recvfrom(4096)
print(r[0:2].hex(), r[3] & 0x0f, r[2] >> 7)
"#;
    let out = c.cmd("python3").args(["-c", script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "beef 1 1",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        short(&c, STRANGER, &["nid0001.rack1.cluster"]),
        ["192.0.2.11"]
    );
    let (_, metrics) = rb.http("GET", "/metrics", None).unwrap();
    let formerr = metrics
        .lines()
        .find(|l| l.starts_with("rackboot_dns_responses_total") && l.contains("FORMERR"))
        .unwrap_or_else(|| panic!("no FORMERR counter:\n{metrics}"));
    assert!(formerr.ends_with(" 1"), "{formerr}");
    assert!(
        metrics.contains(r#"rackboot_dns_responses_total{transport="udp",rcode="dropped"} 1"#),
        "{metrics}"
    );
}

/// The TSIG key rackboot and the secondary share (32 bytes, as `tsig-keygen` makes).
const KEY_NAME: &str = "xfr.rack1";
const SECRET: &str = "K2tyZWJvb3QtdHNpZy10ZXN0LXNlY3JldC0zMmJ5dGU=";
const WRONG_SECRET: &str = "d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmc0MiE=";

/// `named` as a secondary of both zones, in the client namespace, signing its requests to
/// rackboot with the TSIG key.
fn start_named(c: &Netns, dir: &std::path::Path) -> Child {
    let d = dir.display();
    let conf = format!(
        r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    listen-on port 53 {{ {SECONDARY}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{SECRET}"; }};
server 192.0.2.1 {{ keys {{ "{KEY_NAME}"; }}; }};
zone "{DOMAIN}" {{ type secondary; primaries {{ 192.0.2.1 key "{KEY_NAME}"; }}; file "{d}/fwd.db"; }};
zone "2.0.192.in-addr.arpa" {{ type secondary; primaries {{ 192.0.2.1 key "{KEY_NAME}"; }}; file "{d}/rev.db"; }};
"#
    );
    let path = dir.join("named.conf");
    std::fs::write(&path, conf).unwrap();
    c.cmd("named")
        .args(["-g", "-4", "-n", "1", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("named.log")).unwrap())
        .spawn()
        .unwrap()
}

fn ask_secondary(c: &Netns, name: &str) -> Vec<String> {
    let out = c
        .cmd("dig")
        .args([
            &format!("@{SECONDARY}"),
            "+short",
            "+time=1",
            "+tries=1",
            name,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(str::to_owned)
        .collect()
}

/// BIND 9 as a TSIG-keyed secondary: it holds the zone after a signed transfer and the new
/// record after a signed NOTIFY; `dig -y` with the key transfers, a wrong key or none is refused.
#[test]
fn bind_secondary_transfers_the_zone_with_tsig_and_follows_notify() {
    if !preflight(false) || !have_tools(&["dig", "named"]) {
        return;
    }
    let ns = Netns::new("dnsxfr").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("xfr.key");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let keys: &'static str = Box::leak(
        format!(
            r#"[{{ name = "{KEY_NAME}", algorithm = "hmac-sha256", secret_file = "{}", secondaries = ["{SECONDARY}"] }}]"#,
            secret_file.display()
        )
        .into_boxed_str(),
    );
    let rb = Rackboot::start_with_env(
        &ns,
        &env(&[
            ("RACKBOOT_DNS__SECONDARIES", r#"["192.0.2.53"]"#),
            ("RACKBOOT_DNS__TSIG_KEYS", keys),
        ]),
    )
    .unwrap();
    let c = clients(&ns, &[SECONDARY]);
    rb.register_node("x1000c0s0b0n0", 1, "52:54:00:aa:00:01", "192.0.2.11")
        .unwrap();

    // 3 names of 90 addresses (BIND takes at most 100 per RRset): the transfer takes more
    // than one message, each signed.
    for n in 0..3u32 {
        let ips: Vec<String> = (1..=90)
            .map(|i| format!(r#"{{"IPAddress":"198.51.{}.{i}"}}"#, 100 + n))
            .collect();
        let (code, body) = rb
            .http(
                "POST",
                "/hsm/v2/Inventory/EthernetInterfaces",
                Some(&format!(
                    r#"{{"MACAddress":"52:54:00:aa:01:0{n}","ComponentID":"x1000c0s{}b0n0","IPAddresses":[{}]}}"#,
                    n + 2,
                    ips.join(",")
                )),
            )
            .unwrap();
        assert_eq!(code, 201, "{body}");
    }
    eventually("the big names exist", || {
        short(&c, SECONDARY, &["+tcp", "x1000c0s4b0n0.rack1.cluster"]).len() == 90
    });

    // dig -y: the right key transfers (and dig verifies every message's signature), a wrong
    // secret, an unknown key name and no key at all are refused.
    let right = format!("hmac-sha256:{KEY_NAME}:{SECRET}");
    let axfr = dig(&c, SECONDARY, &["-y", &right, DOMAIN, "AXFR"]);
    assert!(
        axfr.contains("nid0001.rack1.cluster.")
            && !axfr.contains("failure")
            && !axfr.contains("Couldn't verify")
            && !axfr.contains("Transfer failed"),
        "{axfr}"
    );
    let messages = axfr
        .split("(messages ")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .and_then(|n| n.parse::<u32>().ok());
    assert!(
        messages.is_some_and(|n| n > 1),
        "a multi-message transfer: {axfr}"
    );
    let wrong = format!("hmac-sha256:{KEY_NAME}:{WRONG_SECRET}");
    let out = dig(&c, SECONDARY, &["-y", &wrong, DOMAIN, "AXFR"]);
    assert!(!out.contains("nid0001.rack1.cluster."), "{out}");
    assert!(
        out.contains("Transfer failed") || out.contains("NOTAUTH"),
        "{out}"
    );
    let unknown = format!("hmac-sha256:someone.else:{SECRET}");
    let out = dig(&c, SECONDARY, &["-y", &unknown, DOMAIN, "AXFR"]);
    assert!(!out.contains("nid0001.rack1.cluster."), "{out}");
    let out = dig(&c, SECONDARY, &[DOMAIN, "AXFR"]);
    assert!(!out.contains("nid0001.rack1.cluster."), "{out}");
    assert!(
        out.contains("Transfer failed") || out.contains("REFUSED"),
        "{out}"
    );
    let (_, metrics) = rb.http("GET", "/metrics", None).unwrap();
    for label in ["BADSIG", "BADKEY", "tsig_required"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("rackboot_dns_responses_total") && l.contains(label)),
            "no {label} counter:\n{metrics}"
        );
    }
    let log = rb.log_text();
    assert!(log.contains("TSIG verification failed"), "{log}");
    assert!(!log.contains(SECRET), "the secret is never logged");

    let mut named = start_named(&c, dir.path());
    let log = || std::fs::read_to_string(dir.path().join("named.log")).unwrap_or_default();
    // The secondary holds the zone after its first transfer (AXFR at start-up).
    let deadline = Instant::now() + Duration::from_secs(60);
    while ask_secondary(&c, "nid0001.rack1.cluster") != ["192.0.2.11"] {
        assert!(
            Instant::now() < deadline,
            "the secondary never got the zone:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A change: NOTIFY makes the secondary transfer again long before its refresh (3600 s).
    rb.register_node("x1000c0s1b0n0", 2, "52:54:00:aa:00:02", "192.0.2.12")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ask_secondary(&c, "nid0002.rack1.cluster") != ["192.0.2.12"] {
        assert!(
            Instant::now() < deadline,
            "the secondary never followed the NOTIFY:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(log().contains("notify from 192.0.2.1"), "{}", log());
    // named verified our signatures on the transfers and on the NOTIFY.
    assert!(
        log().contains("transferred serial") && log().contains(": TSIG 'xfr.rack1'"),
        "{}",
        log()
    );
    assert!(
        log().contains("/key xfr.rack1: received notify for zone 'rack1.cluster'"),
        "{}",
        log()
    );
    let _ = named.kill();
    let _ = named.wait();
}

#[test]
fn names_outside_the_rack_are_forwarded_and_cached() {
    if !preflight(false) || !have_tools(&["dig", "dnsmasq"]) {
        return;
    }
    let ns = Netns::new("dnsfwd").unwrap();
    let rb = Rackboot::start_with_env(
        &ns,
        &env(&[("RACKBOOT_DNS__FORWARDERS", r#"["192.0.2.54:53"]"#)]),
    )
    .unwrap();
    let c = clients(&ns, &[STRANGER, "192.0.2.54"]);
    // dnsmasq answers a test zone, nothing else (no upstream, no /etc/hosts).
    let mut fwd = c
        .cmd("dnsmasq")
        .args([
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--port=53",
            "--listen-address=192.0.2.54",
            "--bind-interfaces",
            "--address=/example.test/198.51.100.7",
            "--local-ttl=300",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("dnsmasq answers", || {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &c.name,
                "dig",
                "@192.0.2.54",
                "+short",
                "+time=1",
                "+tries=1",
                "www.example.test",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "198.51.100.7"
    });
    eventually("rackboot forwards", || {
        short(&c, STRANGER, &["www.example.test"]) == ["198.51.100.7"]
    });
    let out = dig(&c, STRANGER, &["www.example.test"]);
    assert!(
        out.contains(" ra") && !out.contains(" aa"),
        "recursion available, not authoritative: {out}"
    );
    // With the forwarder gone, the cached answer is still served.
    let _ = fwd.kill();
    let _ = fwd.wait();
    assert_eq!(short(&c, STRANGER, &["www.example.test"]), ["198.51.100.7"]);
    // The rack's own names never leave.
    rb.register_node("x1000c0s0b0n0", 1, "52:54:00:aa:00:01", "192.0.2.11")
        .unwrap();
    eventually("own names still answered", || {
        short(&c, STRANGER, &["nid0001.rack1.cluster"]) == ["192.0.2.11"]
    });
    let out = dig(&c, STRANGER, &["www.uncached.test"]);
    assert!(out.contains("status: SERVFAIL"), "no forwarder left: {out}");
}

/// One QEMU boot: DHCP hands the node rackboot as its resolver (option 6), the rack's domain
/// (15) and its hostname (12); busybox `nslookup` on the node resolves its own name and the
/// appliance's (images/node/init prints what it got).
#[test]
fn qemu_node_resolves_its_own_name_and_the_appliance() {
    if !preflight(true) || !have_tools(&["dig"]) {
        return;
    }
    let mut ns = Netns::new("dnsvm").unwrap();
    let rb = Rackboot::start_with_env(&ns, &env(&[])).unwrap();
    rb.import_node_images().unwrap();
    let (mac, ip) = ("52:54:00:aa:00:21", "192.0.2.21");
    rb.register_node("x1000c0s4b0n0", 21, mac, ip).unwrap();
    let mut vm = qemu_tests::Qemu::start(&mut ns, qemu_tests::Firmware::SeaBiosIpxe, mac).unwrap();
    let line = vm
        .wait_for("RACKBOOT-DNS", Duration::from_secs(400))
        .unwrap_or_else(|e| panic!("{e:#}\n---- rackboot log ----\n{}", rb.log_text()));
    let field = |k| qemu_tests::field(&line, k);
    assert_eq!(field("server"), Some("192.0.2.1"), "option 6: {line}");
    assert_eq!(
        field("name"),
        Some("nid0021.rack1.cluster"),
        "options 12 + 15: {line}"
    );
    assert_eq!(field("self"), Some(ip), "{line}");
    assert_eq!(field("appliance"), Some("192.0.2.1"), "{line}");
}

/// DNS listens on the rack device only (SO_BINDTODEVICE): a query for the rack address that
/// arrives through another interface of the appliance is not answered, over UDP or TCP.
#[test]
fn dns_is_not_answered_on_another_interface() {
    if !preflight(false) || !have_tools(&["dig", "python3"]) {
        return;
    }
    let ns = Netns::new("dnsdev").unwrap();
    let rb = Rackboot::start_with_env(&ns, &env(&[])).unwrap();
    let c = clients(&ns, &[STRANGER]);
    rb.register_node("x1000c0s0b0n0", 1, "52:54:00:aa:00:01", "192.0.2.11")
        .unwrap();
    eventually("answered on the rack interface", || {
        short(&c, STRANGER, &["nid0001.rack1.cluster"]) == ["192.0.2.11"]
    });
    // Another interface of the appliance (198.51.100.1), a host behind it routing the rack
    // subnet through it.
    let o = Netns::new("dnsother").unwrap();
    o.ip(&["link", "del", "br0"]).unwrap();
    ns.ip(&[
        "link", "add", "oth0", "type", "veth", "peer", "name", "othc", "netns", &o.name,
    ])
    .unwrap();
    ns.ip(&["addr", "add", "198.51.100.1/24", "dev", "oth0"])
        .unwrap();
    ns.ip(&["link", "set", "oth0", "up"]).unwrap();
    o.ip(&["addr", "add", "198.51.100.2/24", "dev", "othc"])
        .unwrap();
    o.ip(&["link", "set", "othc", "up"]).unwrap();
    o.ip(&["route", "add", "192.0.2.0/24", "via", "198.51.100.1"])
        .unwrap();
    // The rack address is reachable from there: the kernel answers a TCP connect to a closed
    // port on any interface with a reset …
    let probe = r#"
import socket
try:
    socket.create_connection(("192.0.2.1", 9), timeout=1)
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print(e)
"#;
    eventually("192.0.2.1 is reachable from the other side", || {
        o.cmd("python3")
            .args(["-c", probe])
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "refused")
    });
    // … but DNS is not answered there, over UDP or TCP.
    for transport in ["+notcp", "+tcp"] {
        let out = o
            .cmd("dig")
            .args([
                "@192.0.2.1",
                transport,
                "+time=2",
                "+tries=1",
                "nid0001.rack1.cluster",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("status:") && !text.contains("192.0.2.11"),
            "answered through another interface ({transport}):\n{text}"
        );
    }
    // The rack side still is.
    assert_eq!(
        short(&c, STRANGER, &["+tcp", "nid0001.rack1.cluster"]),
        ["192.0.2.11"]
    );
}
