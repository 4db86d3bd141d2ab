//! SMD operations a rack appliance does not offer, answered 501 with the reason (a bare 404
//! reads as "wrong URL" and sends people looking for a typo). docs/openchami-compat.md lists
//! them.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{MethodRouter, any};

use crate::http::Problem;

fn refuse<S: Clone + Send + Sync + 'static>(why: &'static str) -> MethodRouter<S> {
    any(move || async move { Problem::new(StatusCode::NOT_IMPLEMENTED, why) })
}

const LOCKS: &str = "SMD's component locks and reservations coordinate many management services acting on one system; a rackboot rack has one, so it offers none";
const POWERMAPS: &str = "power maps describe PDU wiring for CAPMC/PCS; rackboot powers nodes through their BMCs (/rackboot/v1/power)";
const SCN: &str = "state-change notification subscriptions are not offered: follow /rackboot/v1/events (server-sent events) instead";
const NODEMAPS: &str = "NID defaults maps are not offered: give NIDs in the Component (POST /State/Components or PATCH BulkNID)";
const HARDWARE: &str = "the hardware inventory is discovered, not written: POST /rackboot/v1/discovery re-crawls a BMC and refreshes it";
const HARDWARE_QUERY: &str = "the nested HWInventory formats are not offered: use GET /Inventory/Hardware?id=… or /Inventory/HardwareByFRU";
const HISTORY: &str =
    "hardware inventory history is not kept: a rack's FRUs are what its last discovery saw";
const DISCOVER: &str = "SMD-driven discovery is not offered: use POST /rackboot/v1/discovery (or discovery.bmc_pool for discovery on lease)";
const SERVICE_EPS: &str = "ServiceEndpoints are not derived: rackboot's discovery does not record a BMC's Redfish services";
const PARTITIONS: &str =
    "partitions are not offered: a rack is one partition; use groups (/groups) to divide it";

/// Every unsupported SMD path, for the scoped SMD router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut r = Router::new();
    for p in [
        "/locks/reservations",
        "/locks/reservations/remove",
        "/locks/reservations/release",
        "/locks/service/reservations",
        "/locks/service/reservations/release",
        "/locks/service/reservations/renew",
        "/locks/service/reservations/check",
        "/locks/status",
        "/locks/lock",
        "/locks/unlock",
        "/locks/repair",
        "/locks/disable",
    ] {
        r = r.route(&format!("/hsm/v2{p}"), refuse(LOCKS));
    }
    let table: &[(&str, &'static str)] = &[
        ("/sysinfo/powermaps", POWERMAPS),
        ("/sysinfo/powermaps/{xname}", POWERMAPS),
        ("/Subscriptions/SCN", SCN),
        ("/Subscriptions/SCN/{id}", SCN),
        ("/Defaults/NodeMaps", NODEMAPS),
        ("/Defaults/NodeMaps/{xname}", NODEMAPS),
        ("/Inventory/Hardware/Query/{xname}", HARDWARE_QUERY),
        ("/Inventory/Hardware/History", HISTORY),
        ("/Inventory/Hardware/History/{xname}", HISTORY),
        ("/Inventory/HardwareByFRU/History", HISTORY),
        ("/Inventory/HardwareByFRU/History/{fruid}", HISTORY),
        ("/Inventory/DiscoveryStatus", DISCOVER),
        ("/Inventory/DiscoveryStatus/{id}", DISCOVER),
        ("/Inventory/Discover", DISCOVER),
        ("/Inventory/ServiceEndpoints", SERVICE_EPS),
        ("/Inventory/ServiceEndpoints/{service}", SERVICE_EPS),
        (
            "/Inventory/ServiceEndpoints/{service}/RedfishEndpoints/{xname}",
            SERVICE_EPS,
        ),
        ("/partitions", PARTITIONS),
        ("/partitions/names", PARTITIONS),
        ("/partitions/{name}", PARTITIONS),
        ("/partitions/{name}/members", PARTITIONS),
        ("/partitions/{name}/members/{xname}", PARTITIONS),
    ];
    for (p, why) in table {
        r = r.route(&format!("/hsm/v2{p}"), refuse(why));
    }
    r
}

/// Writes to the hardware inventory (its GETs are in `hardware.rs`, which merges this in).
pub(super) fn hardware_changes<S: Clone + Send + Sync + 'static>() -> MethodRouter<S> {
    let h = || async { Problem::new(StatusCode::NOT_IMPLEMENTED, HARDWARE) };
    axum::routing::post(h).put(h).patch(h).delete(h)
}

/// BSS's legacy etcd-only routes at the root, and the IP addresses sub-resources rackboot does
/// not write through (for the scoped boot and SMD routers).
pub fn bss_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    const LEGACY: &str = "BSS's legacy cloud-init routes are not offered: nodes fetch cloud-init from /cloud-init/<xname>/ (NoCloud seed on their kernel command line)";
    Router::new()
        .route("/meta-data", refuse(LEGACY))
        .route("/user-data", refuse(LEGACY))
        .route("/phone-home", refuse(LEGACY))
}
