//! Configuration: flags, `RACKBOOT_*` env vars and the optional TOML file.
