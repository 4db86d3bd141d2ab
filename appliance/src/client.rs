//! The HTTP client the CLI uses to talk to a running rackboot, and output formatting.
