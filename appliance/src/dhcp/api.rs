//! `/rackboot/v1/leases`: the DHCP leases as the API and `rackboot lease list` show them.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// One lease, as shown by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    /// Lowercase `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    pub ip: Ipv4Addr,
    /// `static` (inventory reservation) or `dynamic` (pool).
    pub kind: String,
    pub hostname: Option<String>,
    /// RFC 3339 UTC.
    pub expires: String,
}

/// `GET /rackboot/v1/leases[?all=true]` (wrapped with the `dhcp` scope by `serve`).
pub fn router(store: crate::store::Store) -> axum::Router {
    axum::Router::new()
        .route("/rackboot/v1/leases", axum::routing::get(list))
        .with_state(store)
}

async fn list(
    axum::extract::State(store): axum::extract::State<crate::store::Store>,
    axum::extract::Query(q): axum::extract::Query<Vec<(String, String)>>,
) -> Result<crate::http::Json<Vec<LeaseView>>, crate::http::Problem> {
    let all = q.iter().any(|(k, v)| k == "all" && v == "true");
    let now = crate::store::now_ms();
    let leases = store
        .list_leases()
        .await?
        .into_iter()
        .filter(|l| all || l.expires_ms > now)
        .map(|l| LeaseView {
            mac: l.mac.to_string(),
            ip: l.ip,
            kind: l.kind.as_str().to_owned(),
            hostname: l.hostname,
            expires: humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_millis(u64::try_from(l.expires_ms).unwrap_or(0)),
            )
            .to_string(),
        })
        .collect();
    Ok(crate::http::Json(leases))
}
