//! The SMD-compatible inventory (/hsm/v2): Components, EthernetInterfaces, RedfishEndpoints, groups.

pub mod cli;
