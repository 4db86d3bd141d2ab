//! [`MacAddr`]: an Ethernet hardware address, always shown lowercase.

use core::fmt;
use core::str::FromStr;

/// A 48-bit Ethernet MAC address.
///
/// Displayed as lowercase `aa:bb:cc:dd:ee:ff`, which is also the form OpenCHAMI stores.
/// Parsing accepts either case and `:` or `-` separators, or 12 bare hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

/// Why a MAC address string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MacParseError {
    /// Not six hex octets in a recognised layout.
    Malformed,
}

impl fmt::Display for MacParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed MAC address: expected six hex octets like aa:bb:cc:dd:ee:ff")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for MacParseError {}

impl MacAddr {
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
        for s in ["52:54:00:AA:0b:FF", "52-54-00-aa-0B-ff", "525400AA0BFF"] {
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
        ] {
            assert!(s.parse::<MacAddr>().is_err(), "{s}");
        }
    }
}
