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
