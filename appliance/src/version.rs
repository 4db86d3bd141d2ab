//! What this binary is: the package version, the git commit it was built from and whether that
//! tree had uncommitted changes (`appliance/build.rs`). Shown by `rackboot --version` and in
//! `/rackboot/v1/status`.
//!
//! Owns: the build's version, commit and dirty flag. May call: nothing of ours.

use serde::{Deserialize, Serialize};

/// The package version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
// `COMMIT` (the full hash, or `unknown` outside git without `RACKBOOT_GIT_COMMIT`), `DIRTY`
// (tracked files differed from it) and `LONG` (`rackboot --version`'s text after the name).
include!(concat!(env!("OUT_DIR"), "/build_info.rs"));

/// The build as JSON (`/rackboot/v1/status`'s `build`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: String,
    pub commit: String,
    pub dirty: bool,
}

impl BuildInfo {
    pub fn current() -> Self {
        Self {
            version: VERSION.to_owned(),
            commit: COMMIT.to_owned(),
            dirty: DIRTY,
        }
    }
}
