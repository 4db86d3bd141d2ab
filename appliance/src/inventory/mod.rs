//! The SMD-compatible inventory (`/hsm/v2`): Components, EthernetInterfaces, RedfishEndpoints,
//! groups and memberships, with OpenCHAMI's shapes and status codes.
//!
//! EthernetInterfaces drive static DHCP leases: a node's MAC gets its `IPAddresses[0]`.

pub mod cli;
mod routes;
pub mod xname;

pub use routes::{health_router, router};

use pxe_core::MacAddr;

use crate::http::Problem;

/// Parses a MAC in any case and separator style; stores the lowercase colon form.
pub fn normalize_mac(s: &str) -> Result<String, Problem> {
    s.trim()
        .parse::<MacAddr>()
        .map(|m| m.to_string())
        .map_err(|_| {
            Problem::bad_request(format!(
                "invalid MAC address {s:?}: expected six hex octets like 52:54:00:aa:00:01"
            ))
        })
}

/// SMD's EthernetInterface ID: the lowercase MAC without separators.
pub fn interface_id(mac: &str) -> String {
    mac.chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}
