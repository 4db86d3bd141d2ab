//! The TFTP service: the tokio driver around `pxe_core::tftp`.
