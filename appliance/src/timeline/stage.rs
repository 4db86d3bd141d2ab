//! Stage names (stable: they are API and metric label values) and their order in a boot.

pub const DHCP_DISCOVER: &str = "dhcp_discover";
pub const DHCP_OFFER: &str = "dhcp_offer";
pub const DHCP_ACK: &str = "dhcp_ack";
pub const DHCP_NAK: &str = "dhcp_nak";
pub const TFTP_START: &str = "tftp_start";
pub const TFTP_END: &str = "tftp_end";
pub const TFTP_ERROR: &str = "tftp_error";
pub const IPXE_DHCP_DISCOVER: &str = "ipxe_dhcp_discover";
pub const IPXE_DHCP: &str = "ipxe_dhcp";
pub const IPXE_DHCP_NAK: &str = "ipxe_dhcp_nak";
pub const BOOTSCRIPT: &str = "bootscript";
pub const BOOTSCRIPT_RETRY: &str = "bootscript_retry";
pub const BOOTSCRIPT_UNKNOWN: &str = "bootscript_unknown";
pub const KERNEL: &str = "kernel";
pub const INITRD: &str = "initrd";
pub const IMAGE: &str = "image";
pub const IMAGE_ERROR: &str = "image_error";
pub const OS_DHCP: &str = "os_dhcp";
pub const CLOUD_INIT_META_DATA: &str = "cloud_init_meta_data";
pub const CLOUD_INIT_USER_DATA: &str = "cloud_init_user_data";
pub const CLOUD_INIT_VENDOR_DATA: &str = "cloud_init_vendor_data";
pub const CLOUD_INIT_ERROR: &str = "cloud_init_error";
pub const PHONE_HOME: &str = "phone_home";
pub const IDENTITY_ENROLLED: &str = "identity_enrolled";
pub const IDENTITY_RENEWED: &str = "identity_renewed";
pub const IDENTITY_REFUSED: &str = "identity_refused";
/// A TPM quote was verified at enrollment (detail: the EK hash and PCRs 0-7).
pub const IDENTITY_ATTESTED: &str = "identity_attested";

/// Every stage, in boot order (for tables and docs).
pub const ALL: &[&str] = &[
    DHCP_DISCOVER,
    DHCP_OFFER,
    DHCP_ACK,
    DHCP_NAK,
    TFTP_START,
    TFTP_END,
    TFTP_ERROR,
    IPXE_DHCP_DISCOVER,
    IPXE_DHCP,
    IPXE_DHCP_NAK,
    BOOTSCRIPT,
    BOOTSCRIPT_RETRY,
    BOOTSCRIPT_UNKNOWN,
    KERNEL,
    INITRD,
    IMAGE,
    IMAGE_ERROR,
    OS_DHCP,
    CLOUD_INIT_META_DATA,
    CLOUD_INIT_USER_DATA,
    CLOUD_INIT_VENDOR_DATA,
    CLOUD_INIT_ERROR,
    IDENTITY_ATTESTED,
    IDENTITY_ENROLLED,
    IDENTITY_RENEWED,
    IDENTITY_REFUSED,
    PHONE_HOME,
];

/// How far into a boot a stage is (unknown stages sort last).
pub fn rank(stage: &str) -> u8 {
    match stage {
        DHCP_DISCOVER | DHCP_OFFER | DHCP_ACK | DHCP_NAK => 1,
        TFTP_START | TFTP_END | TFTP_ERROR => 2,
        IPXE_DHCP_DISCOVER | IPXE_DHCP | IPXE_DHCP_NAK => 3,
        BOOTSCRIPT | BOOTSCRIPT_RETRY | BOOTSCRIPT_UNKNOWN => 4,
        KERNEL | INITRD | IMAGE | IMAGE_ERROR => 5,
        OS_DHCP => 6,
        CLOUD_INIT_META_DATA | CLOUD_INIT_USER_DATA | CLOUD_INIT_VENDOR_DATA | CLOUD_INIT_ERROR => {
            7
        }
        IDENTITY_ATTESTED | IDENTITY_ENROLLED | IDENTITY_RENEWED | IDENTITY_REFUSED => 7,
        PHONE_HOME => 8,
        _ => 9,
    }
}

/// Whether `stage` begins a new boot after `last`: a DHCP DISCOVER (firmware or iPXE) that
/// comes after something later in the boot order (the node was reset).
pub fn starts_boot(stage: &str, last: &str) -> bool {
    matches!(stage, DHCP_DISCOVER | IPXE_DHCP_DISCOVER) && rank(stage) < rank(last)
}

/// The boot has reached the installed system and reported in.
pub fn is_done(stage: &str) -> bool {
    stage == PHONE_HOME
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boots_start_at_a_discover_after_progress() {
        // OVMF: firmware DHCP, TFTP of iPXE, then iPXE's DHCP: one boot.
        assert!(!starts_boot(IPXE_DHCP_DISCOVER, TFTP_END));
        assert!(!starts_boot(DHCP_DISCOVER, DHCP_DISCOVER), "retries");
        // A reset after the kernel, or after phone-home.
        assert!(starts_boot(IPXE_DHCP_DISCOVER, KERNEL));
        assert!(starts_boot(DHCP_DISCOVER, PHONE_HOME));
        assert!(
            !starts_boot(DHCP_ACK, PHONE_HOME),
            "only DISCOVER starts a boot"
        );
        assert!(ALL.windows(2).all(|w| rank(w[0]) <= rank(w[1])));
    }
}
