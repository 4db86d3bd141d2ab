//! API tokens: a local ES256 issuer, optional external issuers (JWKS), and per-area scopes.

pub mod cli;
