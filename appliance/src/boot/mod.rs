//! The BSS-compatible boot API (/boot/v1): boot parameters and iPXE boot scripts.

pub mod cli;
