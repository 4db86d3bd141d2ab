//! SMD's RedfishEndpoints, ComponentEndpoints and hardware inventory, as ochami and magellan
//! send them.

use super::*;

/// magellan send (POST, then PUT /{xname} on a later run) and ochami smd rfe add/get.
#[tokio::test(flavor = "multi_thread")]
async fn magellan_send_and_rfe() {
    let mut c = Contract::new();
    let rfe = magellan_bmc();
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

    c.validate();
}

/// ochami smd compep get/delete: derived from the endpoint's Systems and Managers.
#[tokio::test(flavor = "multi_thread")]
async fn compep_get_and_delete() {
    let mut c = Contract::new();
    c.ok(
        "POST",
        "/hsm/v2/Inventory/RedfishEndpoints",
        Some(magellan_bmc()),
        201,
        "smd#ResourceURIArray",
    )
    .await;

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

    c.validate();
}

/// magellan send: as SMD, magellan's Systems and Managers become Components and
/// EthernetInterfaces (no addresses: in rackboot those are DHCP reservations).
#[tokio::test(flavor = "multi_thread")]
async fn magellan_systems_become_components() {
    let mut c = Contract::new();
    c.ok(
        "POST",
        "/hsm/v2/Inventory/RedfishEndpoints",
        Some(magellan_fresh()),
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

    c.validate();
}

/// Hardware inventory, from the FRUs discovery stored in an endpoint (discovery.rs tests the
/// crawl that fills them).
#[tokio::test(flavor = "multi_thread")]
async fn hardware_inventory() {
    let mut c = Contract::new();
    c.ok(
        "PUT",
        "/hsm/v2/Inventory/RedfishEndpoints/x1000c0s6b0",
        Some(hardware_endpoint()),
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

    c.validate();
}
