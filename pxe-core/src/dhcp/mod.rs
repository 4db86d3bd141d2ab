//! DHCPv4: wire codec, server engine and address pool.
//!
//! The engine and pool need the `alloc` feature (on by default through `std`); the codec does not.

#[cfg(feature = "alloc")]
pub mod pool;
mod reply;
#[cfg(feature = "alloc")]
pub mod server;
pub mod wire;
