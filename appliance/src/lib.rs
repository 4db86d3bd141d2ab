//! rackboot: the per-rack boot appliance. See `ARCHITECTURE.md` at the repository root for the map.
//!
//! Modules are cut by capability: each owns its routes, its store tables and its tests.

// Command output goes through `outln!`/`out!` (crate::output), which end quietly when the
// reader has gone away (`rackboot … | head`); `println!` would panic.
#![deny(clippy::print_stdout)]

pub(crate) mod ansible;
pub mod auth;
pub mod backup;
pub(crate) mod boot;
pub mod cli;
pub mod client;
pub(crate) mod cloudinit;
pub mod config;
pub(crate) mod dhcp;
pub mod discovery;
pub(crate) mod dns;
pub mod federation;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod identity;
pub mod images;
pub(crate) mod inventory;
pub(crate) mod ipxe;
pub mod metrics;
pub(crate) mod netif;
pub(crate) mod output;
pub mod seal;
pub(crate) mod serve;
pub(crate) mod services;
pub mod store;
#[cfg(feature = "storm")]
pub(crate) mod storm;
pub(crate) mod sys;
pub use sys::limit_malloc_arenas;
pub(crate) mod tftp;
pub mod timeline;
pub(crate) mod update;
pub mod version;
