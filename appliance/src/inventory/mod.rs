//! The SMD-compatible inventory (`/hsm/v2`): Components, EthernetInterfaces, RedfishEndpoints,
//! groups and memberships, with OpenCHAMI's shapes and status codes.
//!
//! EthernetInterfaces drive static DHCP leases: a node's MAC gets its `IPAddresses[0]`.
//!
//! Owns: SMD routes (`/hsm/v2`: components, interfaces, RedfishEndpoints, ComponentEndpoints
//! and hardware derived from them, groups, memberships; 501s for what a rack does not offer;
//! docs/openchami-compat.md), `rackboot node`. May call: `client`, `http`, `output`, `store`.

pub mod cli;
mod components;
pub(crate) mod endpoints;
mod enums;
pub(crate) mod groups;
pub(crate) mod hardware;
mod magellan;
pub(crate) mod query;
mod routes;
pub(crate) mod unsupported;
pub mod xname;

pub use routes::{health_router, router};

use pxe_core::MacAddr;

use crate::http::Problem;

/// Parses a NIC's MAC in any case and separator style ([`MacAddr::parse_nic`]: no all-zero,
/// broadcast or multicast address); stores the lowercase colon form.
pub fn normalize_mac(s: &str) -> Result<String, Problem> {
    MacAddr::parse_nic(s)
        .map(|m| m.to_string())
        .map_err(|e| Problem::bad_request(format!("invalid MAC address {s:?}: {e}")))
}

/// SMD's EthernetInterface ID: the lowercase MAC without separators.
pub fn interface_id(mac: &str) -> String {
    mac.chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}
