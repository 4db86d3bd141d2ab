//! The DHCP service: the tokio driver around `pxe_core::dhcp`, and durable leases.
//!
//! Owns: the DHCP service (:67: reader, engine, committer tasks), `leases`, `/rackboot/v1/leases`,
//! `rackboot lease`. May call: `client`, `http`, `metrics`, `netif`, `output`, `store`,
//! `timeline`.

pub mod api;
pub mod cli;
mod commit;
pub mod inventory;
pub mod queue;
pub mod service;
pub mod socket;
