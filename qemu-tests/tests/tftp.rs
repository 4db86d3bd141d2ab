//! TFTP against the real `rackboot serve` (issue 20): a retransmitted RRQ gets no second
//! transfer; an ERROR 5 from the client ends its transfer (also the new transfer a late
//! duplicate starts); another file from the same client port abandons the running transfer; a
//! read request past `listen.tftp_max_transfers` is left unanswered (no ERROR) and served when
//! the client retries after a slot frees; and storms of curl downloads all come through
//! byte-exact.
//!
//! rackboot serves a directory the test fills (`RACKBOOT_IPXE_DIR`); clients run in a second
//! namespace (192.0.2.10 on a veth into rackboot's bridge). The raw-socket clients are small
//! Python scripts (Debian's python3), so every packet's source port can be checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use qemu_tests::{Netns, Rackboot, SERVER, preflight_with};

const CLIENT_CIDR: &str = "192.0.2.10/24";
const PYTHON: &str = "/usr/bin/python3";

/// The session's retransmission timeout when the client asks for none
/// (`SessionConfig::default().default_timeout`).
const SESSION_TIMEOUT_S: u32 = 1;

/// Prerequisites: the e2e ones (root, ip, curl) and python3 for the raw clients. Missing ones
/// fail under `CI=true` (`preflight` panics; python3 is checked the same way here).
fn ready() -> bool {
    preflight_with(false, &[PYTHON])
}

/// rackboot serving `dir`, and a client namespace on its bridge.
fn setup(tag: &str, dir: &Path) -> (Netns, Rackboot, Netns) {
    setup_with(tag, dir, &[])
}

fn setup_with(tag: &str, dir: &Path, env: &[(&str, &str)]) -> (Netns, Rackboot, Netns) {
    let ns = Netns::new(tag).unwrap();
    let mut env = env.to_vec();
    env.push(("RACKBOOT_IPXE_DIR", dir.to_str().unwrap()));
    let rb = Rackboot::start_with_env(&ns, &env).unwrap();
    let client = ns.add_client_ns().unwrap();
    client
        .ip(&["addr", "add", CLIENT_CIDR, "dev", "vc"])
        .unwrap();
    (ns, rb, client)
}

fn random_file(path: &Path, len: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .take(len)
        .read_to_end(&mut bytes)
        .unwrap();
    std::fs::write(path, &bytes).unwrap();
    bytes
}

/// The value of `rackboot_tftp_transfers_total{outcome="…"}` (0 when absent).
fn transfers(rb: &Rackboot, outcome: &str) -> u64 {
    let (code, text) = rb.http("GET", "/metrics", None).unwrap();
    assert_eq!(code, 200, "{text}");
    let key = format!("rackboot_tftp_transfers_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Polls `/metrics` until `outcome` reaches `want` (the transfer tasks count when they end).
fn wait_for_transfers(rb: &Rackboot, outcome: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while transfers(rb, outcome) < want {
        assert!(
            Instant::now() < deadline,
            "no {want} {outcome:?} transfers:\n{}",
            rb.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a Python client script in `ns` with `args`; returns its JSON report.
fn python(ns: &Netns, script: &str, args: &[&str]) -> serde_json::Value {
    let out = ns
        .cmd(PYTHON)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// A lock-step RFC 1350/2348 client on one UDP socket that sends its RRQ, and the same RRQ again
/// `gap` seconds later, before reading anything (a client whose first answer was slow). It ACKs
/// the first TID it hears from, answers any other TID with ERROR 5 (RFC 1350 §4), and after the
/// last block keeps listening for `linger` seconds. Reports every source port heard from.
const DUPLICATE_RRQ_CLIENT: &str = r#"
import hashlib, json, socket, sys, time
server, name, gap, linger = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
blksize = 1468
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 0))
rrq = b"\0\x01" + name.encode() + b"\0octet\0blksize\0" + str(blksize).encode() + b"\0tsize\x000\0"
s.sendto(rrq, (server, 69))
time.sleep(gap)
s.sendto(rrq, (server, 69))
packets, tid, data, expect, done, errors = {}, None, bytearray(), 1, None, []
while True:
    if done is None:
        s.settimeout(30)
    else:
        left = done + linger - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
    try:
        pkt, peer = s.recvfrom(65536)
    except socket.timeout:
        break
    packets[str(peer[1])] = packets.get(str(peer[1]), 0) + 1
    if tid is None:
        tid = peer
    if peer != tid:
        s.sendto(b"\0\x05\0\x05unknown transfer ID\0", peer)
        continue
    op = pkt[1]
    if op == 6:
        s.sendto(b"\0\x04\0\0", peer)
    elif op == 3:
        block = int.from_bytes(pkt[2:4], "big")
        if block == expect & 0xFFFF:
            data += pkt[4:]
            expect += 1
            if len(pkt) - 4 < blksize and done is None:
                done = time.monotonic()
        s.sendto(b"\0\x04" + ((expect - 1) & 0xFFFF).to_bytes(2, "big"), peer)
    elif op == 5:
        errors.append(pkt[2:].decode("latin-1"))
        break
print(json.dumps({"ports": packets, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                  "done": done is not None, "errors": errors}))
"#;

#[test]
fn retransmitted_rrq_gets_one_transfer_from_one_tid() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let blob = random_file(&dir.path().join("blob.bin"), 256 * 1024);
    let (_ns, rb, client) = setup("tftpdup", dir.path());
    // Linger 3× the session timeout after the last block: a second transfer's OACK (and its
    // retransmissions) would have arrived by then.
    let linger = (3 * SESSION_TIMEOUT_S).to_string();
    let report = python(
        &client,
        DUPLICATE_RRQ_CLIENT,
        &[SERVER, "blob.bin", "0.1", &linger],
    );
    assert_eq!(report["done"], true, "{report}\n{}", rb.log_text());
    assert_eq!(report["bytes"], blob.len(), "{report}");
    let ports = report["ports"].as_object().unwrap();
    assert_eq!(
        ports.len(),
        1,
        "every OACK/DATA must come from one TID: {report}\n{}",
        rb.log_text()
    );
    assert!(report["errors"].as_array().unwrap().is_empty(), "{report}");
    let want = sha256_hex(&blob, &client);
    assert_eq!(report["sha256"], want.as_str(), "{report}");
    // rackboot recorded one transfer for it, and the duplicate as a duplicate.
    wait_for_transfers(&rb, "complete", 1);
    assert_eq!(transfers(&rb, "complete"), 1, "{}", rb.log_text());
    assert_eq!(transfers(&rb, "duplicate"), 1, "{}", rb.log_text());
    assert_eq!(transfers(&rb, "failed"), 0, "{}", rb.log_text());
    let log = rb.log_text();
    assert_eq!(
        log.matches("TFTP transfer started").count(),
        1,
        "one transfer started:\n{log}"
    );
    assert!(
        log.contains("retransmitted read request ignored"),
        "the duplicate is logged:\n{log}"
    );
}

/// A client that takes the transfer's TID for an unknown one: it answers the first DATA with
/// ERROR 5, then listens `quiet` seconds and reports every packet that TID still sends.
const ERROR_5_CLIENT: &str = r#"
import json, socket, sys, time
server, name, quiet = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 0))
s.settimeout(30)
s.sendto(b"\0\x01" + name.encode() + b"\0octet\0blksize\x001468\0", (server, 69))
pkt, tid = s.recvfrom(65536)
assert pkt[1] == 6, pkt[:4]
s.sendto(b"\0\x04\0\0", tid)
while True:
    pkt, peer = s.recvfrom(65536)
    if peer == tid and pkt[1] == 3:
        break
first_block = int.from_bytes(pkt[2:4], "big")
s.sendto(b"\0\x05\0\x05unknown transfer ID\0", tid)
after, end = [], time.monotonic() + quiet
while True:
    left = end - time.monotonic()
    if left <= 0:
        break
    s.settimeout(left)
    try:
        pkt, peer = s.recvfrom(65536)
    except socket.timeout:
        break
    after.append({"port": peer[1], "op": pkt[1], "block": int.from_bytes(pkt[2:4], "big")})
print(json.dumps({"first_block": first_block, "after_error": after}))
"#;

#[test]
fn error_5_from_the_client_stops_that_tid() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    random_file(&dir.path().join("blob.bin"), 1024 * 1024);
    let (_ns, rb, client) = setup("tftperr", dir.path());
    // 3× the session timeout: without the ERROR the session would retransmit DATA 1 after one
    // timeout, and again after two more (exponential backoff).
    let quiet = (3 * SESSION_TIMEOUT_S).to_string();
    let report = python(&client, ERROR_5_CLIENT, &[SERVER, "blob.bin", &quiet]);
    assert_eq!(report["first_block"], 1, "{report}");
    assert!(
        report["after_error"].as_array().unwrap().is_empty(),
        "the TID must stop sending after ERROR 5: {report}\n{}",
        rb.log_text()
    );
    wait_for_transfers(&rb, "failed", 1);
    assert_eq!(transfers(&rb, "complete"), 0);
    assert!(
        rb.log_text().contains("ClientError(5)"),
        "{}",
        rb.log_text()
    );
}

/// A client that completes its transfer, then sends the same RRQ again from the same port (a
/// retransmission delayed past the end of its transfer, which no server can tell from a new
/// request). The new transfer's TID is unknown to the client: it answers ERROR 5, and that TID
/// must stop at once rather than send the file a second time.
const LATE_DUPLICATE_CLIENT: &str = r#"
import json, socket, sys, time
server, name, quiet = sys.argv[1], sys.argv[2], float(sys.argv[3])
blksize = 1468
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 0))
s.settimeout(30)
rrq = b"\0\x01" + name.encode() + b"\0octet\0blksize\x001468\0"
s.sendto(rrq, (server, 69))
pkt, first = s.recvfrom(65536)
assert pkt[1] == 6, pkt[:4]
s.sendto(b"\0\x04\0\0", first)
size, expect = 0, 1
while True:
    pkt, peer = s.recvfrom(65536)
    assert peer == first and pkt[1] == 3, (peer, pkt[:4])
    block = int.from_bytes(pkt[2:4], "big")
    if block == expect:
        size += len(pkt) - 4
        expect += 1
    s.sendto(b"\0\x04" + block.to_bytes(2, "big"), peer)
    if len(pkt) - 4 < blksize:
        break
# The final ACK and this RRQ race inside the server: while the first transfer has not seen its
# last ACK, the RRQ is its duplicate and is ignored, so retransmit it as a client does.
s.settimeout(1)
for _ in range(30):
    s.sendto(rrq, (server, 69))
    try:
        pkt, second = s.recvfrom(65536)
    except socket.timeout:
        continue
    if second != first:
        break
second_op = pkt[1]
s.sendto(b"\0\x05\0\x05unknown transfer ID\0", second)
after, end = [], time.monotonic() + quiet
while True:
    left = end - time.monotonic()
    if left <= 0:
        break
    s.settimeout(left)
    try:
        pkt, peer = s.recvfrom(65536)
    except socket.timeout:
        break
    after.append({"port": peer[1], "op": pkt[1]})
print(json.dumps({"size": size, "first": first[1], "second": second[1], "second_op": second_op,
                  "after_error": after}))
"#;

#[test]
fn late_duplicate_after_the_transfer_is_stopped_by_error_5() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let blob = random_file(&dir.path().join("blob.bin"), 64 * 1024);
    let (_ns, rb, client) = setup("tftplate", dir.path());
    let quiet = (3 * SESSION_TIMEOUT_S).to_string();
    let report = python(
        &client,
        LATE_DUPLICATE_CLIENT,
        &[SERVER, "blob.bin", &quiet],
    );
    assert_eq!(report["size"], blob.len(), "{report}");
    assert_ne!(report["first"], report["second"], "{report}");
    let second = report["second"].as_u64().unwrap();
    let from_second: Vec<_> = report["after_error"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["port"] == second)
        .collect();
    assert!(
        from_second.is_empty(),
        "the second TID must stop after ERROR 5: {report}\n{}",
        rb.log_text()
    );
    wait_for_transfers(&rb, "complete", 1);
    wait_for_transfers(&rb, "failed", 1);
    assert_eq!(transfers(&rb, "complete"), 1, "{}", rb.log_text());
}

/// A client that asks for one file, takes the OACK, then asks for another file from the same
/// port (tftp-hpa's interactive client keeps one port for successive `get`s). It downloads the
/// second file and keeps listening `quiet` seconds; reports what each TID sent after the switch.
const SWITCH_FILE_CLIENT: &str = r#"
import hashlib, json, socket, sys, time
server, first_name, second_name, quiet = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
blksize = 1468
def rrq(name):
    return b"\0\x01" + name.encode() + b"\0octet\0blksize\x001468\0"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 0))
s.settimeout(30)
s.sendto(rrq(first_name), (server, 69))
pkt, old = s.recvfrom(65536)
assert pkt[1] == 6, pkt[:4]
s.sendto(rrq(second_name), (server, 69))
new, data, expect, done, stray = None, bytearray(), 1, None, []
while True:
    if done is not None:
        left = done + quiet - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
    try:
        pkt, peer = s.recvfrom(65536)
    except socket.timeout:
        break
    if peer == old or (new is not None and peer != new):
        stray.append({"port": peer[1], "op": pkt[1]})
        continue
    new = peer
    if pkt[1] == 6:
        s.sendto(b"\0\x04\0\0", peer)
    elif pkt[1] == 3:
        block = int.from_bytes(pkt[2:4], "big")
        if block == expect & 0xFFFF:
            data += pkt[4:]
            expect += 1
            if len(pkt) - 4 < blksize and done is None:
                done = time.monotonic()
        s.sendto(b"\0\x04" + ((expect - 1) & 0xFFFF).to_bytes(2, "big"), peer)
print(json.dumps({"old": old[1], "new": new[1] if new else None, "bytes": len(data),
                  "sha256": hashlib.sha256(data).hexdigest(), "stray": stray}))
"#;

#[test]
fn another_file_from_the_same_port_abandons_the_running_transfer() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    random_file(&dir.path().join("first.bin"), 512 * 1024);
    let second = random_file(&dir.path().join("second.bin"), 64 * 1024);
    let (_ns, rb, client) = setup("tftpswitch", dir.path());
    // 3× the session timeout after the second file: the abandoned transfer would have
    // retransmitted its OACK by then.
    let quiet = (3 * SESSION_TIMEOUT_S).to_string();
    let report = python(
        &client,
        SWITCH_FILE_CLIENT,
        &[SERVER, "first.bin", "second.bin", &quiet],
    );
    assert_eq!(report["bytes"], second.len(), "{report}\n{}", rb.log_text());
    assert_eq!(report["sha256"], sha256_hex(&second, &client).as_str());
    assert_ne!(report["old"], report["new"], "{report}");
    assert!(
        report["stray"].as_array().unwrap().is_empty(),
        "the abandoned transfer must stop: {report}\n{}",
        rb.log_text()
    );
    wait_for_transfers(&rb, "complete", 1);
    wait_for_transfers(&rb, "abandoned", 1);
    assert_eq!(transfers(&rb, "failed"), 0, "{}", rb.log_text());
}

/// Two clients against a server allowing one transfer. A sends its RRQ, reads the OACK and holds
/// the slot without acknowledging. B sends its RRQ and listens for `quiet` seconds: it must hear
/// nothing (no ERROR, no DATA). A then cancels (ERROR 0). B, retransmitting its RRQ every second
/// as firmware does, gets the file. Reports what B heard while A held the slot, its attempts,
/// every ERROR it received, and the file's sha256.
const BUSY_CLIENT: &str = r#"
import hashlib, json, socket, sys, time
server, name, quiet = sys.argv[1], sys.argv[2], float(sys.argv[3])
blksize = 1468
rrq = b"\0\x01" + name.encode() + b"\0octet\0blksize\x001468\0"
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
a.bind(("0.0.0.0", 0))
a.settimeout(30)
a.sendto(rrq, (server, 69))
pkt, a_tid = a.recvfrom(65536)
assert pkt[1] == 6, pkt[:4]
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
b.bind(("0.0.0.0", 0))
b.sendto(rrq, (server, 69))
heard_while_held, end = [], time.monotonic() + quiet
while True:
    left = end - time.monotonic()
    if left <= 0:
        break
    b.settimeout(left)
    try:
        pkt, peer = b.recvfrom(65536)
    except socket.timeout:
        break
    heard_while_held.append({"port": peer[1], "op": pkt[1]})
a.sendto(b"\0\x05\0\0cancelled\0", a_tid)
attempts, errors, data, expect, tid = 1, [], bytearray(), 1, None
b.settimeout(1)
while tid is None and attempts < 30:
    b.sendto(rrq, (server, 69))
    attempts += 1
    try:
        pkt, peer = b.recvfrom(65536)
    except socket.timeout:
        continue
    if pkt[1] == 5:
        errors.append(pkt[2:].decode("latin-1"))
        continue
    tid = peer
b.settimeout(10)
while tid is not None:
    if pkt[1] == 6:
        b.sendto(b"\0\x04\0\0", tid)
    elif pkt[1] == 3:
        block = int.from_bytes(pkt[2:4], "big")
        if block == expect & 0xFFFF:
            data += pkt[4:]
            expect += 1
        b.sendto(b"\0\x04" + block.to_bytes(2, "big"), tid)
        if block == (expect - 1) & 0xFFFF and len(pkt) - 4 < blksize:
            break
    elif pkt[1] == 5:
        errors.append(pkt[2:].decode("latin-1"))
        break
    pkt, peer = b.recvfrom(65536)
print(json.dumps({"heard_while_held": heard_while_held, "attempts": attempts, "errors": errors,
                  "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}))
"#;

#[test]
fn past_the_transfer_limit_a_request_is_left_for_the_client_to_retry() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let blob = random_file(&dir.path().join("blob.bin"), 256 * 1024);
    let (_ns, rb, client) = setup_with(
        "tftpbusy",
        dir.path(),
        &[("RACKBOOT_LISTEN__TFTP_MAX_TRANSFERS", "1")],
    );
    // 2× the session timeout: long enough for an ERROR "busy" to have arrived.
    let quiet = (2 * SESSION_TIMEOUT_S).to_string();
    let report = python(&client, BUSY_CLIENT, &[SERVER, "blob.bin", &quiet]);
    assert!(
        report["heard_while_held"].as_array().unwrap().is_empty(),
        "a request past the limit must get no answer: {report}\n{}",
        rb.log_text()
    );
    assert!(report["errors"].as_array().unwrap().is_empty(), "{report}");
    assert_eq!(report["bytes"], blob.len(), "{report}\n{}", rb.log_text());
    assert_eq!(report["sha256"], sha256_hex(&blob, &client).as_str());
    assert!(transfers(&rb, "busy") >= 1, "{}", rb.log_text());
    wait_for_transfers(&rb, "complete", 1);
    assert!(
        rb.log_text().contains("at listen.tftp_max_transfers"),
        "{}",
        rb.log_text()
    );
}

/// 20 storms of 50 parallel `curl --tftp-blksize 1468` downloads of a 1 MiB random file; every
/// download must succeed byte-exact. Only correctness is asserted: the time belongs in the
/// storm bench.
#[test]
fn curl_storms_download_byte_exact() {
    if !ready() {
        return;
    }
    const STORMS: usize = 20;
    const CLIENTS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let blob = random_file(&dir.path().join("blob.bin"), 1024 * 1024);
    let (_ns, rb, client) = setup("tftpstorm", dir.path());
    let want = sha256_hex(&blob, &client);
    let out = tempfile::tempdir().unwrap();
    for storm in 0..STORMS {
        let runs: Vec<(usize, Child)> = (0..CLIENTS)
            .map(|i| {
                let child = client
                    .cmd("curl")
                    // --max-time only bounds a hang; it asserts nothing about speed.
                    .args(["-sS", "--max-time", "600", "--tftp-blksize", "1468", "-o"])
                    .arg(out.path().join(format!("{i}.bin")))
                    .arg(format!("tftp://{SERVER}/blob.bin"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (i, child)
            })
            .collect();
        let mut failures = Vec::new();
        for (i, child) in runs {
            let res = child.wait_with_output().unwrap();
            if !res.status.success() {
                failures.push(format!(
                    "client {i}: {:?}: {}",
                    res.status.code(),
                    String::from_utf8_lossy(&res.stderr).trim()
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "storm {storm}: {} of {CLIENTS} downloads failed:\n{}\n---- rackboot log tail ----\n{}",
            failures.len(),
            failures.join("\n"),
            tail(&rb.log_text(), 40)
        );
        let sums = sha256sums(&client, out.path(), CLIENTS);
        for (i, sum) in sums.iter().enumerate() {
            assert_eq!(
                sum, &want,
                "storm {storm}: client {i}'s file differs from blob.bin"
            );
        }
        for i in 0..CLIENTS {
            std::fs::remove_file(out.path().join(format!("{i}.bin"))).unwrap();
        }
    }
    wait_for_transfers(&rb, "complete", (STORMS * CLIENTS) as u64);
}

/// sha256 of `bytes`, computed by coreutils' `sha256sum` (no hashing crate in the harness).
fn sha256_hex(bytes: &[u8], ns: &Netns) -> String {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), bytes).unwrap();
    sha256sums_of(ns, &[f.path()]).remove(0)
}

/// sha256 of `dir/0.bin` … `dir/{n-1}.bin`, in that order.
fn sha256sums(ns: &Netns, dir: &Path, n: usize) -> Vec<String> {
    let files: Vec<_> = (0..n).map(|i| dir.join(format!("{i}.bin"))).collect();
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    sha256sums_of(ns, &refs)
}

fn sha256sums_of(ns: &Netns, files: &[&Path]) -> Vec<String> {
    let out = ns.cmd("sha256sum").args(files).output().unwrap();
    assert!(
        out.status.success(),
        "sha256sum: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
        .collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
