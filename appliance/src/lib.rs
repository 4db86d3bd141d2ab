//! rackboot: the per-rack boot appliance. See `ARCHITECTURE.md` at the repository root for the map.
//!
//! Modules are cut by capability: each owns its routes, its store tables and its tests.

pub mod auth;
pub mod boot;
pub mod cli;
pub mod client;
pub mod cloudinit;
pub mod config;
pub mod dhcp;
pub mod discovery;
pub mod federation;
pub mod http;
pub mod identity;
pub mod images;
pub mod inventory;
pub mod ipxe;
pub mod metrics;
pub mod netif;
pub mod output;
pub mod seal;
pub mod serve;
pub mod services;
pub mod store;
pub mod sys;
pub mod tftp;
pub mod timeline;
