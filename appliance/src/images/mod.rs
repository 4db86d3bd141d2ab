//! Boot images: content-addressed storage (sha256) served at /images/NAME.

pub mod cli;

/// Where the admin image routes live; uploads under it stream (no body limit, no request timeout
/// in the server loop; the upload handler enforces its own).
pub const ADMIN_PREFIX: &str = "/rackboot/v1/images/";
