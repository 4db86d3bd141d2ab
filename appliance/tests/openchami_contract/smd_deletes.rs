//! What SMD routes rackboot does not offer, and ochami's deletes.

use super::*;

/// What a rack does not offer is a 501 that says why.
#[tokio::test(flavor = "multi_thread")]
async fn not_offered_is_501() {
    let mut c = Contract::new();
    for path in [
        "/hsm/v2/locks/status",
        "/hsm/v2/partitions",
        "/hsm/v2/Inventory/Hardware/Query/x1000c0s6b0",
        "/hsm/v2/sysinfo/powermaps",
    ] {
        c.refused("GET", path, None, 501, "").await;
    }

    c.validate();
}

/// ochami smd component/rfe/iface delete <id>.
#[tokio::test(flavor = "multi_thread")]
async fn delete_by_id() {
    let mut c = Contract::new();
    seed_components(&mut c).await;
    c.ok(
        "PUT",
        "/hsm/v2/Inventory/RedfishEndpoints/x1000c0s6b0",
        Some(hardware_endpoint()),
        200,
        "smd#RedfishEndpoint",
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

    c.validate();
}

/// ochami smd compep/iface/rfe/component delete --all, over N1, N2, BMC and what magellan's two
/// endpoints add.
#[tokio::test(flavor = "multi_thread")]
async fn delete_all() {
    let mut c = Contract::new();
    post_components(&mut c).await;
    for rfe in [magellan_bmc(), magellan_fresh()] {
        c.ok(
            "POST",
            "/hsm/v2/Inventory/RedfishEndpoints",
            Some(rfe),
            201,
            "smd#ResourceURIArray",
        )
        .await;
    }

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
