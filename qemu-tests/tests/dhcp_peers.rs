//! DHCP against real clients: udhcpc (static and pool leases) and perfdhcp (relay mode, many
//! clients, address uniqueness).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use qemu_tests::{Netns, PerfdhcpStats, Rackboot, preflight_with};

#[test]
fn udhcpc_gets_its_inventory_address_then_unknown_gets_pool() {
    if !preflight_with(false, &["udhcpc"]) {
        return;
    }
    let ns = Netns::new("udhcpc").unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    let client = ns.add_client_ns().unwrap();
    let mac = "52:54:00:bb:00:01";
    client.ip(&["link", "set", "vc", "address", mac]).unwrap();
    rb.register_node("x1000c0s2b0n0", 7, mac, "192.0.2.70")
        .unwrap();
    let lease = |c: &Netns| {
        let out = c
            .cmd("udhcpc")
            .args([
                "-i",
                "vc",
                "-n",
                "-q",
                "-f",
                "-t",
                "5",
                "-T",
                "1",
                "-s",
                "/bin/true",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
    };
    let out = lease(&client);
    assert!(
        out.contains("lease of 192.0.2.70 obtained"),
        "{out}\n{}",
        rb.log_text()
    );
    // An unknown MAC gets an address from the upper half.
    client
        .ip(&["link", "set", "vc", "address", "52:54:00:bb:00:02"])
        .unwrap();
    let out = lease(&client);
    assert!(out.contains("lease of 192.0.2.128 obtained"), "{out}");
    // Both leases are durable and listed.
    let (_, leases) = rb.http("GET", "/rackboot/v1/leases", None).unwrap();
    assert!(
        leases.contains("192.0.2.70") && leases.contains("192.0.2.128"),
        "{leases}"
    );
    // Malformed datagrams are counted drops, and the server still answers afterwards.
    let st = client
        .cmd("sh")
        .args(["-c", "ip addr add 192.0.2.9/24 dev vc; head -c 100 /dev/urandom > /tmp/rb-junk; \
                for i in 1 2 3; do curl -s -m 1 -T /tmp/rb-junk tftp://192.0.2.1:67/x >/dev/null 2>&1; done; \
                ip addr flush dev vc; true"])
        .status()
        .unwrap();
    assert!(st.success());
    client.ip(&["link", "set", "vc", "address", mac]).unwrap();
    assert!(lease(&client).contains("lease of 192.0.2.70 obtained"));
}

#[test]
fn perfdhcp_relay_mode_many_clients_unique_addresses() {
    if !preflight_with(false, &["perfdhcp"]) {
        return;
    }
    let ns = Netns::new("perf").unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    let client = ns.add_client_ns().unwrap();
    // perfdhcp acts as a relay: it sends from 192.0.2.10:67 with giaddr set, so replies are
    // unicast back to giaddr:67 (RFC 2131 §4.1).
    client
        .ip(&["addr", "add", "192.0.2.10/24", "dev", "vc"])
        .unwrap();
    let out = client
        .cmd("perfdhcp")
        .args([
            "-4",
            "-l",
            "192.0.2.10",
            "-r",
            "100",
            "-R",
            "100",
            "-n",
            "100",
            "-u",
            "-W",
            "2000000",
            "192.0.2.1",
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let st = PerfdhcpStats::parse(&text).unwrap_or_else(|| panic!("no perfdhcp report:\n{text}"));
    let (sent, offers, acks, dups) = (st.discovers, st.offers, st.acks, st.non_unique);
    assert!(sent >= 100, "{text}");
    // ≤ 1% loss on a quiet namespace link.
    assert!(
        offers * 100 >= sent * 99,
        "offers {offers} of {sent}\n{text}"
    );
    assert!(acks * 100 >= offers * 99, "acks {acks} of {offers}\n{text}");
    // perfdhcp may send a few DISCOVERs beyond `-n`, reusing MACs; that client gets its own
    // address again and `-u` counts it. More than that would be a real duplicate.
    assert!(
        dups <= sent - 100,
        "{dups} non-unique for {sent} DISCOVERs\n{text}"
    );
    let (_, leases) = rb.http("GET", "/rackboot/v1/leases", None).unwrap();
    let leases: serde_json::Value = serde_json::from_str(&leases).unwrap();
    let leases = leases.as_array().unwrap();
    assert!(
        leases.len() as u64 >= acks.min(100) * 99 / 100,
        "every ACK is a stored lease"
    );
    let ips: std::collections::HashSet<&str> =
        leases.iter().map(|l| l["ip"].as_str().unwrap()).collect();
    assert_eq!(
        ips.len(),
        leases.len(),
        "an address leased twice: {leases:?}"
    );
}
