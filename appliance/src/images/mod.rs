//! Boot images: content-addressed storage (sha256) served at /images/NAME.

pub mod cli;
