//! The DHCP service: the tokio driver around `pxe_core::dhcp`, and durable leases.

pub mod api;
pub mod cli;
pub mod inventory;
pub mod queue;
pub mod service;
pub mod socket;
