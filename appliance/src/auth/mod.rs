//! API tokens: a local ES256 issuer, optional external issuers (JWKS), and per-area scopes.
//!
//! Every admin route is wrapped with [`require`]: `router.layer(auth::require(authn, "boot"))`.
//! Reads (GET/HEAD) need `<area>:read` or `<area>:write`, everything else `<area>:write`;
//! `admin` grants everything. Areas: `boot`, `inventory`, `images`, `dhcp`, `rackboot`.
//!
//! Owns: JWT issuer/verifier, scopes, `rackboot token`. May call: `config`, `http`, `output`, `seal`.

pub mod cli;
pub mod issuer;
mod middleware;
pub mod scope;
mod verify;

pub use issuer::{LOCAL_AUDIENCE, LOCAL_ISSUER, LocalIssuer};
pub use middleware::{RequireLayer, RequireService, jwks_router, require};
#[cfg(feature = "fuzzing")]
pub use verify::parse_jwks_for_fuzzing;
pub use verify::{
    Authenticator, DEFAULT_LEEWAY_SECS, DEFAULT_MIN_REFRESH, ExternalIssuer, Principal, Rejection,
};

use std::path::PathBuf;

/// Errors of the auth module outside request handling (keys, minting, JWKS).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("issuer key {0}: {1}")]
    KeyIo(PathBuf, #[source] std::io::Error),
    #[error("issuer key {0} is not a PKCS#8 P-256 private key in PEM form")]
    BadKey(PathBuf),
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
    #[error("cannot sign the token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}
