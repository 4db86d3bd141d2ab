//! DHCPv4: wire codec, server engine and address pools.
//!
//! Nothing here needs an allocator: the engine is generic over its pool, and
//! [`fixed_pool::FixedPool`] keeps one in fixed storage. The heap-backed [`pool::Pool`]
//! (any size, the appliance's default) needs the `alloc` feature.

pub mod fixed_pool;
pub mod pool;
mod reply;
mod respond;
pub mod server;
pub mod wire;
