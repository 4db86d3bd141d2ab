//! HTTP plumbing shared by every route: problem errors, the JSON extractor, the server loop.

pub mod problem;
pub mod server;

pub use problem::{Json, Problem};
