//! QEMU end-to-end harness.
