//! BSS, as ochami calls it.

use super::*;

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
