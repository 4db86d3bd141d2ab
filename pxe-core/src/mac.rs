//! [`MacAddr`]: an Ethernet hardware address, always shown lowercase.

use core::fmt;
use core::str::FromStr;

/// A 48-bit Ethernet MAC address.
///
/// Displayed as lowercase `aa:bb:cc:dd:ee:ff`, which is also the form OpenCHAMI stores.
/// Parsing ([`FromStr`]) accepts either case and `:` or `-` separators, Cisco's dotted
/// `aabb.ccdd.eeff`, or 12 bare hex digits. Where a NIC's own address is meant (inventory,
/// Redfish, federation, the CLI), use [`MacAddr::parse_nic`], which also refuses the all-zero,
/// broadcast and multicast addresses no NIC has. This is the one place those rules live.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

/// Why a MAC address string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MacParseError {
    /// Not six hex octets in a recognised layout.
    Malformed,
    /// `00:00:00:00:00:00`: unset, not a NIC's address.
    AllZero,
    /// `ff:ff:ff:ff:ff:ff`.
    Broadcast,
    /// The group bit (bit 0 of the first octet) is set: a multicast address.
    Multicast,
}

impl fmt::Display for MacParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MacParseError::Malformed => {
                "malformed MAC address: expected six hex octets like aa:bb:cc:dd:ee:ff"
            }
            MacParseError::AllZero => "00:00:00:00:00:00 is not a NIC's MAC address (it is unset)",
            MacParseError::Broadcast => "ff:ff:ff:ff:ff:ff is the broadcast address, not a NIC's",
            MacParseError::Multicast => {
                "a multicast MAC address (first octet odd) is not a NIC's address"
            }
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for MacParseError {}

impl MacAddr {
    /// Parses `s` (any accepted layout, surrounding spaces ignored) as a NIC's own address:
    /// refuses all-zero, broadcast and multicast addresses.
    pub fn parse_nic(s: &str) -> Result<MacAddr, MacParseError> {
        let mac: MacAddr = s.trim().parse()?;
        mac.check_nic()?;
        Ok(mac)
    }

    /// Whether this can be a NIC's own (unicast, set) address.
    pub fn check_nic(&self) -> Result<(), MacParseError> {
        match self.0 {
            [0, 0, 0, 0, 0, 0] => Err(MacParseError::AllZero),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff] => Err(MacParseError::Broadcast),
            [first, ..] if first & 1 == 1 => Err(MacParseError::Multicast),
            _ => Ok(()),
        }
    }

    /// The address bytes.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Lowercase hex without separators, as in SMD's EthernetInterface `ID`.
    pub fn write_compact(&self, f: &mut impl fmt::Write) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }

    /// `BOOTIF` form used on the kernel command line: `01-aa-bb-cc-dd-ee-ff`.
    pub fn write_bootif(&self, f: &mut impl fmt::Write) -> fmt::Result {
        f.write_str("01")?;
        for b in self.0 {
            write!(f, "-{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        let mut out = [0u8; 6];
        if bytes.len() == 14 {
            return parse_dotted(bytes);
        }
        let (stride, sep) = match bytes.len() {
            12 => (2, None),
            17 => match bytes.get(2) {
                Some(b':') => (3, Some(b':')),
                Some(b'-') => (3, Some(b'-')),
                _ => return Err(MacParseError::Malformed),
            },
            _ => return Err(MacParseError::Malformed),
        };
        for (i, slot) in out.iter_mut().enumerate() {
            let at = i * stride;
            let hi = bytes.get(at).copied().and_then(hex_val);
            let lo = bytes.get(at + 1).copied().and_then(hex_val);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(MacParseError::Malformed);
            };
            if let Some(sep) = sep
                && i < 5
                && bytes.get(at + 2) != Some(&sep)
            {
                return Err(MacParseError::Malformed);
            }
            *slot = (hi << 4) | lo;
        }
        Ok(MacAddr(out))
    }
}

/// Cisco's `aabb.ccdd.eeff`: three groups of four hex digits.
fn parse_dotted(bytes: &[u8]) -> Result<MacAddr, MacParseError> {
    if bytes.get(4) != Some(&b'.') || bytes.get(9) != Some(&b'.') {
        return Err(MacParseError::Malformed);
    }
    let mut out = [0u8; 6];
    let digits = bytes.iter().copied().filter(|b| *b != b'.');
    let mut nibbles = [0u8; 12];
    let mut n = 0;
    for d in digits {
        let Some(slot) = nibbles.get_mut(n) else {
            return Err(MacParseError::Malformed);
        };
        *slot = hex_val(d).ok_or(MacParseError::Malformed)?;
        n += 1;
    }
    if n != 12 {
        return Err(MacParseError::Malformed);
    }
    for (i, o) in out.iter_mut().enumerate() {
        let hi = nibbles.get(2 * i).copied().unwrap_or(0);
        let lo = nibbles.get(2 * i + 1).copied().unwrap_or(0);
        *o = (hi << 4) | lo;
    }
    Ok(MacAddr(out))
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    extern crate std;
    use std::string::String;
    use std::string::ToString;

    #[test]
    fn parses_any_case_and_separator_and_prints_lowercase() {
        let want = MacAddr([0x52, 0x54, 0x00, 0xaa, 0x0b, 0xff]);
        for s in [
            "52:54:00:AA:0b:FF",
            "52-54-00-aa-0B-ff",
            "525400AA0BFF",
            "5254.00aa.0bff",
            "5254.00AA.0BFF",
        ] {
            assert_eq!(s.parse::<MacAddr>(), Ok(want), "{s}");
        }
        assert_eq!(want.to_string(), "52:54:00:aa:0b:ff");
        let mut c = String::new();
        want.write_compact(&mut c).unwrap();
        assert_eq!(c, "525400aa0bff");
        let mut b = String::new();
        want.write_bootif(&mut b).unwrap();
        assert_eq!(b, "01-52-54-00-aa-0b-ff");
    }

    #[test]
    fn refuses_garbage() {
        for s in [
            "",
            "52:54:00:aa:0b",
            "52:54:00:aa:0b:fg",
            "52:54-00:aa:0b:ff",
            "52;54;00;aa;0b;ff",
            "ééééééééé",
            "5254.00aa0.bff",
            "5254:00aa:0bff",
            "5254.00aa.0bfg",
        ] {
            assert!(s.parse::<MacAddr>().is_err(), "{s}");
        }
    }

    #[test]
    fn nic_addresses_are_set_unicast_ones() {
        assert_eq!(
            MacAddr::parse_nic(" 52:54:00:AA:0B:FF "),
            Ok(MacAddr([0x52, 0x54, 0x00, 0xaa, 0x0b, 0xff]))
        );
        assert_eq!(
            MacAddr::parse_nic("00:00:00:00:00:00"),
            Err(MacParseError::AllZero)
        );
        assert_eq!(
            MacAddr::parse_nic("FF-FF-FF-FF-FF-FF"),
            Err(MacParseError::Broadcast)
        );
        for m in ["01:00:5e:00:00:fb", "33:33:00:00:00:01", "0100.5e00.00fb"] {
            assert_eq!(MacAddr::parse_nic(m), Err(MacParseError::Multicast), "{m}");
        }
        // Locally administered unicast (bit 1) is a NIC address (QEMU, VMs, bonds).
        assert!(MacAddr::parse_nic("02:00:00:00:00:01").is_ok());
        assert_eq!(MacAddr::parse_nic("nope"), Err(MacParseError::Malformed));
        // Parsing alone still accepts every well-formed address (DHCP chaddr, filters).
        assert!("ff:ff:ff:ff:ff:ff".parse::<MacAddr>().is_ok());
    }
}
