//! DHCPv4: wire codec, server engine and address pool.

pub mod wire;
