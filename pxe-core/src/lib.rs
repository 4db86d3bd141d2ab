//! `pxe-core`: the protocol decisions of a PXE boot server, with no IO.
//!
//! This crate is `#![no_std]` and sans-IO in the style of `quinn-proto`: callers pass
//! received bytes, where they came from and the current time (`now`), and get back the
//! bytes to transmit, where to send them and which state changes to make durable first.
//! It never opens a socket, never reads a clock and never panics on any input.
//!
//! - [`dhcp`]: DHCPv4 wire codec ([`dhcp::wire`]) and the server engine ([`dhcp::server`]),
//!   with its dynamic address pool ([`dhcp::pool`]).
//! - [`boot`]: which boot file or URL a PXE / iPXE / UEFI HTTP client gets.
//! - [`tftp`]: the read-only TFTP server session state machine and path normalisation.
//!
//! - [`embassy`] (feature `embassy`): the DHCP and TFTP loops as embassy-net tasks.
//!
//! The same engines run under tokio (the `rackboot` appliance) and under embassy-net. Nothing
//! needs an allocator: with `--no-default-features` the DHCP engine keeps its dynamic pool in
//! fixed storage ([`dhcp::fixed_pool::FixedPool`]).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod boot;
pub mod dhcp;
#[cfg(feature = "embassy")]
pub mod embassy;
pub mod mac;
pub mod tftp;
pub mod time;

pub use mac::MacAddr;
pub use time::{Duration, Instant};
