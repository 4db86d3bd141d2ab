//! SMD's groups and memberships.

use super::*;

/// ochami smd group add: "compute" (N1) and "io:nodes" (N2).
async fn post_groups(c: &mut Contract) {
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
}

/// ochami smd group add/get/update (PatchGroups sends the whole group struct).
#[tokio::test(flavor = "multi_thread")]
async fn group_add_get_update() {
    let mut c = Contract::new();
    post_groups(&mut c).await;
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

    c.validate();
}

/// ochami smd group member add/set/delete, and the memberships.
#[tokio::test(flavor = "multi_thread")]
async fn group_members_and_memberships() {
    let mut c = Contract::new();
    seed_components(&mut c).await;
    post_groups(&mut c).await;

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

    c.validate();
}
