//! SMD's EthernetInterfaces.

use super::*;

/// ochami smd iface add/get: its EthernetInterface struct, the filters.
#[tokio::test(flavor = "multi_thread")]
async fn iface_add_and_get() {
    let mut c = Contract::new();
    c.expect(
        "POST",
        "/hsm/v2/Inventory/EthernetInterfaces",
        Some(nic1()),
        true,
        201,
        None,
    )
    .await;
    c.refused(
        "POST",
        "/hsm/v2/Inventory/EthernetInterfaces",
        Some(nic1()),
        409,
        "",
    )
    .await;
    c.expect(
        "POST",
        "/hsm/v2/Inventory/EthernetInterfaces",
        Some(nic2()),
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

    c.validate();
}

/// ochami smd iface update, and the IPAddresses of an interface.
#[tokio::test(flavor = "multi_thread")]
async fn iface_ip_addresses_and_update() {
    let mut c = Contract::new();
    c.expect(
        "POST",
        "/hsm/v2/Inventory/EthernetInterfaces",
        Some(nic1()),
        true,
        201,
        None,
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

    c.validate();
}
