//! Boot-file policy: what a PXE, UEFI HTTP Boot or iPXE client is told to load.
//!
//! The decision uses option 93 (client architecture), option 60 (vendor class) and option 77
//! (user class `iPXE`):
//! - iPXE (any arch) gets the URL of its boot script, with its MAC written in by the server
//!   (`<base>/boot/v1/bootscript?mac=…`): iPXE does not expand `${…}` in a DHCP filename reliably.
//! - UEFI HTTP Boot (vendor class `HTTPClient`, arch 16/19) gets an `http://` URL of the iPXE EFI
//!   binary, and the reply must echo option 60 `HTTPClient` or the firmware ignores the offer.
//! - PXE firmware gets the TFTP file name of the iPXE binary for its architecture.
//!
//! Option 60 `PXEClient` is never sent in authoritative mode: EDK2 treats a `PXEClient` offer
//! without option 43 as a BINL offer and goes to UDP 4011. A plain offer with a boot file works on
//! every firmware we test. In proxyDHCP mode the offer must say `PXEClient` to be recognised, so
//! there it always comes with option 43 (PXE_DISCOVERY_CONTROL = 8: boot file in this reply).

use core::fmt::Write;

use heapless::String;

use crate::MacAddr;

/// Longest boot file name or URL.
pub const MAX_URL: usize = 255;

/// Boot files per architecture and the base URL of this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPolicy {
    /// BIOS (arch 0): `undionly.kpxe` uses the NIC's UNDI driver.
    pub bios: String<128>,
    /// UEFI x64 (arch 7, 9): `snponly.efi` uses the firmware's SNP driver.
    pub uefi_x64: String<128>,
    /// UEFI IA32 (arch 6).
    pub uefi_ia32: String<128>,
    /// UEFI ARM64 (arch 11, 19).
    pub uefi_arm64: String<128>,
    /// Base URL of this server as nodes reach it, e.g. `http://192.0.2.1`.
    pub http_base: String<128>,
}

impl BootPolicy {
    /// Debian `ipxe` package defaults, served from `http_base`.
    pub fn new(http_base: &str) -> Result<Self, BootError> {
        Ok(Self {
            bios: short("undionly.kpxe")?,
            uefi_x64: short("snponly.efi")?,
            uefi_ia32: short("ipxe-i386.efi")?,
            uefi_arm64: short("snponly-arm64.efi")?,
            http_base: short(http_base)?,
        })
    }
}

/// Builds a bounded string, refusing (not truncating) values that do not fit.
pub fn short<const N: usize>(s: &str) -> Result<String<N>, BootError> {
    String::try_from(s).map_err(|_| BootError::TooLong)
}

/// Firmware families, from option 93.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum Arch {
    Bios,
    UefiIa32,
    UefiX64,
    UefiArm32,
    UefiArm64,
    UefiX64Http,
    UefiArm64Http,
    Other(u16),
}

impl Arch {
    /// RFC 4578 / IANA processor architecture types.
    pub fn from_code(code: u16) -> Arch {
        match code {
            0 => Arch::Bios,
            6 => Arch::UefiIa32,
            7 | 9 => Arch::UefiX64,
            10 => Arch::UefiArm32,
            11 => Arch::UefiArm64,
            16 => Arch::UefiX64Http,
            19 => Arch::UefiArm64Http,
            c => Arch::Other(c),
        }
    }
}

/// What the client sent that matters for booting.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo<'a> {
    /// Option 93 values, in order.
    pub arch: &'a [u16],
    /// Option 60.
    pub vendor_class: &'a [u8],
    /// Option 77 says iPXE.
    pub ipxe: bool,
    /// chaddr.
    pub mac: MacAddr,
}

/// The boot information for one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootDecision {
    /// Not a network-boot client (e.g. an OS DHCP client): no boot options.
    None,
    /// PXE firmware: TFTP this file from `siaddr` (options 66/67 and the `file` field).
    Tftp {
        /// File name inside the TFTP root.
        file: String<MAX_URL>,
    },
    /// UEFI HTTP Boot: fetch this URL; echo option 60 `HTTPClient`.
    HttpBoot {
        /// `http://…` of the EFI binary.
        url: String<MAX_URL>,
    },
    /// iPXE: chain this boot-script URL.
    IpxeScript {
        /// `http://…/boot/v1/bootscript?mac=…`.
        url: String<MAX_URL>,
    },
}

impl BootDecision {
    /// The option 67 / `file` value, if any.
    pub fn file(&self) -> Option<&str> {
        match self {
            BootDecision::None => None,
            BootDecision::Tftp { file } => Some(file),
            BootDecision::HttpBoot { url } | BootDecision::IpxeScript { url } => Some(url),
        }
    }

    /// The option 60 value the reply must carry (authoritative mode).
    pub fn vendor_class(&self) -> Option<&'static [u8]> {
        match self {
            BootDecision::HttpBoot { .. } => Some(b"HTTPClient"),
            _ => None,
        }
    }
}

/// Why no decision could be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootError {
    /// A name or URL does not fit its bounded buffer.
    TooLong,
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("boot file name or URL too long")
    }
}

/// Decides the boot information for `client`. `node_override` (from the inventory) replaces the
/// firmware-stage file: a bare name is a TFTP file (or `<base>/ipxe/<name>` for HTTP Boot), an
/// `http://` URL is used as is by HTTP Boot clients.
pub fn decide(
    policy: &BootPolicy,
    client: &ClientInfo<'_>,
    node_override: Option<&str>,
) -> Result<BootDecision, BootError> {
    if client.ipxe {
        let mut url = String::new();
        write!(
            url,
            "{}/boot/v1/bootscript?mac={}",
            policy.http_base, client.mac
        )
        .map_err(|_| BootError::TooLong)?;
        return Ok(BootDecision::IpxeScript { url });
    }
    let http_client = client.vendor_class.starts_with(b"HTTPClient");
    let pxe_client = client.vendor_class.starts_with(b"PXEClient");
    let arch = client.arch.first().map(|c| Arch::from_code(*c));
    let arch = match arch {
        Some(a) => a,
        // No option 93: legacy BIOS PXE ROMs omit it; non-PXE clients get nothing.
        None if pxe_client => Arch::Bios,
        None if http_client => Arch::UefiX64Http,
        None => return Ok(BootDecision::None),
    };
    let default = match arch {
        Arch::Bios => &policy.bios,
        Arch::UefiIa32 => &policy.uefi_ia32,
        Arch::UefiX64 | Arch::UefiX64Http => &policy.uefi_x64,
        Arch::UefiArm64 | Arch::UefiArm64Http => &policy.uefi_arm64,
        Arch::UefiArm32 | Arch::Other(_) => return Ok(BootDecision::None),
    };
    let file = node_override.unwrap_or(default.as_str());
    let http = http_client || matches!(arch, Arch::UefiX64Http | Arch::UefiArm64Http);
    if http {
        let mut url = String::new();
        if file.starts_with("http://") || file.starts_with("https://") {
            url.push_str(file).map_err(|_| BootError::TooLong)?;
        } else {
            write!(url, "{}/ipxe/{}", policy.http_base, file).map_err(|_| BootError::TooLong)?;
        }
        return Ok(BootDecision::HttpBoot { url });
    }
    Ok(BootDecision::Tftp { file: short(file)? })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn client<'a>(arch: &'a [u16], vc: &'a [u8], ipxe: bool) -> ClientInfo<'a> {
        ClientInfo {
            arch,
            vendor_class: vc,
            ipxe,
            mac: MacAddr([0x52, 0x54, 0, 0xaa, 0, 1]),
        }
    }

    #[test]
    fn per_firmware_defaults() {
        let p = BootPolicy::new("http://192.0.2.1").unwrap();
        let d = |a, vc, ipxe| decide(&p, &client(a, vc, ipxe), None).unwrap();
        assert_eq!(
            d(&[0], b"PXEClient:Arch:00000", false).file(),
            Some("undionly.kpxe")
        );
        assert_eq!(d(&[], b"PXEClient", false).file(), Some("undionly.kpxe"));
        assert_eq!(
            d(&[7], b"PXEClient:Arch:00007", false).file(),
            Some("snponly.efi")
        );
        assert_eq!(
            d(&[9], b"PXEClient:Arch:00009", false).file(),
            Some("snponly.efi")
        );
        assert_eq!(d(&[6], b"PXEClient", false).file(), Some("ipxe-i386.efi"));
        assert_eq!(
            d(&[11], b"PXEClient", false).file(),
            Some("snponly-arm64.efi")
        );
        assert_eq!(d(&[10], b"PXEClient", false), BootDecision::None);
        assert_eq!(d(&[], b"udhcp 1.35", false), BootDecision::None);
        let http = d(&[16], b"HTTPClient:Arch:00016:UNDI:003001", false);
        assert_eq!(http.file(), Some("http://192.0.2.1/ipxe/snponly.efi"));
        assert_eq!(http.vendor_class(), Some(&b"HTTPClient"[..]));
        assert_eq!(
            d(&[19], b"HTTPClient", false).file(),
            Some("http://192.0.2.1/ipxe/snponly-arm64.efi")
        );
        for a in [&[0u16][..], &[7], &[16]] {
            let ipxe = d(a, b"PXEClient", true);
            assert_eq!(
                ipxe.file(),
                Some("http://192.0.2.1/boot/v1/bootscript?mac=52:54:00:aa:00:01")
            );
            assert_eq!(ipxe.vendor_class(), None);
        }
        // Authoritative replies never carry PXEClient.
        assert_eq!(d(&[7], b"PXEClient", false).vendor_class(), None);
    }

    #[test]
    fn overrides() {
        let mut p = BootPolicy::new("http://192.0.2.1").unwrap();
        p.uefi_x64 = short("ipxe.efi").unwrap();
        assert_eq!(
            decide(&p, &client(&[7], b"PXEClient", false), None)
                .unwrap()
                .file(),
            Some("ipxe.efi")
        );
        let node = Some("custom.efi");
        assert_eq!(
            decide(&p, &client(&[7], b"PXEClient", false), node)
                .unwrap()
                .file(),
            Some("custom.efi")
        );
        assert_eq!(
            decide(
                &p,
                &client(&[16], b"HTTPClient", false),
                Some("http://10.0.0.1/x.efi")
            )
            .unwrap()
            .file(),
            Some("http://10.0.0.1/x.efi")
        );
        // The iPXE stage is always the boot script; per-node scripts live in BSS.
        assert!(matches!(
            decide(&p, &client(&[7], b"", true), node).unwrap(),
            BootDecision::IpxeScript { .. }
        ));
        let long = [b'a'; 300];
        let long = core::str::from_utf8(&long).unwrap();
        assert_eq!(
            decide(&p, &client(&[7], b"PXEClient", false), Some(long)),
            Err(BootError::TooLong)
        );
    }
}
