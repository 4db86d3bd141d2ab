//! SMD's service status and Components.

use super::*;

/// ochami smd status [--all]: no token.
#[tokio::test(flavor = "multi_thread")]
async fn smd_status() {
    let mut c = Contract::new();
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

    c.validate();
}

/// ochami smd component add: values SMD refuses are refused, its case is normalised.
#[tokio::test(flavor = "multi_thread")]
async fn component_add() {
    let mut c = Contract::new();
    post_components(&mut c).await;
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
    post_lowercase_component(&mut c).await;
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

    c.validate();
}

/// ochami smd component get: all, by xname, by NID, and the filters.
#[tokio::test(flavor = "multi_thread")]
async fn component_get_and_filters() {
    let mut c = Contract::new();
    seed_components(&mut c).await;

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

    c.validate();
}

/// ochami smd component update (PUT, --nid), the per-field and bulk PATCHes, the Query forms.
#[tokio::test(flavor = "multi_thread")]
async fn component_update_patch_and_query() {
    let mut c = Contract::new();
    seed_components(&mut c).await;

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

    c.validate();
}
