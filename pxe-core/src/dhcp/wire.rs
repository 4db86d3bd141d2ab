//! DHCPv4 wire format (RFC 2131 / RFC 2132), smoltcp style.
//!
//! [`Packet`] is a checked view over a buffer: [`Packet::new_checked`] validates the length and
//! the magic cookie once, and no accessor can panic afterwards. [`Request`] is the parsed form of
//! a client message with every option the server acts on, collected without allocation:
//! options are read from the options field and, when option 52 says so, from `file` and `sname`
//! (RFC 2132 §9.3); repeated instances of one option are concatenated (RFC 3396).
//! [`ReplyBuilder`] writes a reply into a caller buffer.

use core::net::Ipv4Addr;

use heapless::Vec;

use crate::MacAddr;

pub use super::reply::{ReplyBuilder, ReplyHeader};

/// The DHCP magic cookie (RFC 2131 §3).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Offset of the options field.
pub const OPTIONS_OFFSET: usize = 240;
/// RFC 951: BOOTP replies shorter than 300 bytes are dropped by some firmware.
pub const MIN_REPLY_LEN: usize = 300;
/// RFC 2131 §2: every client accepts 576-byte IP datagrams = 548 bytes of DHCP.
pub const MIN_MAX_MESSAGE: usize = 576 - 28;

pub(super) mod field {
    use core::ops::Range;
    pub const OP: usize = 0;
    pub const HTYPE: usize = 1;
    pub const HLEN: usize = 2;
    pub const HOPS: usize = 3;
    pub const XID: Range<usize> = 4..8;
    pub const SECS: Range<usize> = 8..10;
    pub const FLAGS: Range<usize> = 10..12;
    pub const CIADDR: Range<usize> = 12..16;
    pub const YIADDR: Range<usize> = 16..20;
    pub const SIADDR: Range<usize> = 20..24;
    pub const GIADDR: Range<usize> = 24..28;
    pub const CHADDR: Range<usize> = 28..44;
    pub const SNAME: Range<usize> = 44..108;
    pub const FILE: Range<usize> = 108..236;
    pub const MAGIC: Range<usize> = 236..240;
}

/// Option codes the server reads or writes.
#[allow(missing_docs)]
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const BROADCAST: u8 = 28;
    pub const VENDOR_SPECIFIC: u8 = 43;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const TFTP_SERVER_NAME: u8 = 66;
    pub const BOOTFILE_NAME: u8 = 67;
    pub const USER_CLASS: u8 = 77;
    pub const RELAY_AGENT_INFO: u8 = 82;
    pub const CLIENT_ARCH: u8 = 93;
    pub const CLIENT_NDI: u8 = 94;
    pub const CLIENT_UUID: u8 = 97;
    pub const END: u8 = 255;
}

/// Why a datagram is not a usable DHCP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than the fixed header plus cookie.
    Truncated,
    /// The magic cookie is wrong (plain BOOTP or garbage).
    BadMagic,
    /// An option's length runs past the end of its field.
    BadOptionLength,
    /// A fixed-size option (50, 54, 57, 93, 94…) has the wrong length.
    BadOptionValue(u8),
    /// A repeated option is longer than we accept after concatenation.
    OptionTooLong(u8),
    /// Hardware type/length is not Ethernet (1/6).
    NotEthernet,
    /// Option 53 is missing or unknown.
    NoMessageType,
    /// The output buffer is too small for the reply.
    BufferTooSmall,
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WireError::Truncated => f.write_str("datagram shorter than a DHCP header"),
            WireError::BadMagic => f.write_str("bad DHCP magic cookie"),
            WireError::BadOptionLength => f.write_str("option length runs past its field"),
            WireError::BadOptionValue(c) => write!(f, "option {c} has an invalid value"),
            WireError::OptionTooLong(c) => write!(f, "option {c} is too long"),
            WireError::NotEthernet => f.write_str("hardware type is not Ethernet"),
            WireError::NoMessageType => f.write_str("missing or unknown DHCP message type"),
            WireError::BufferTooSmall => f.write_str("output buffer too small"),
        }
    }
}

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum MessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
}

impl MessageType {
    /// Parses the option 53 value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            _ => return None,
        })
    }

    /// The option 53 value.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Discover => 1,
            Self::Offer => 2,
            Self::Request => 3,
            Self::Decline => 4,
            Self::Ack => 5,
            Self::Nak => 6,
            Self::Release => 7,
            Self::Inform => 8,
        }
    }

    /// Lowercase name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Discover => "discover",
            Self::Offer => "offer",
            Self::Request => "request",
            Self::Decline => "decline",
            Self::Ack => "ack",
            Self::Nak => "nak",
            Self::Release => "release",
            Self::Inform => "inform",
        }
    }
}

/// A read-only, length-checked view of a DHCP datagram.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the fixed header length and the magic cookie.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < OPTIONS_OFFSET {
            return Err(WireError::Truncated);
        }
        if b.get(field::MAGIC) != Some(&MAGIC_COOKIE[..]) {
            return Err(WireError::BadMagic);
        }
        Ok(Self { buffer })
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    fn byte(&self, i: usize) -> u8 {
        self.bytes().get(i).copied().unwrap_or(0)
    }
    fn slice(&self, r: core::ops::Range<usize>) -> &[u8] {
        self.bytes().get(r).unwrap_or(&[])
    }
    fn ip(&self, r: core::ops::Range<usize>) -> Ipv4Addr {
        match self.slice(r) {
            [a, b, c, d] => Ipv4Addr::new(*a, *b, *c, *d),
            _ => Ipv4Addr::UNSPECIFIED,
        }
    }

    /// 1 = BOOTREQUEST, 2 = BOOTREPLY.
    pub fn op(&self) -> u8 {
        self.byte(field::OP)
    }
    /// Hardware type (1 = Ethernet).
    pub fn htype(&self) -> u8 {
        self.byte(field::HTYPE)
    }
    /// Hardware address length.
    pub fn hlen(&self) -> u8 {
        self.byte(field::HLEN)
    }
    /// Relay hop count.
    pub fn hops(&self) -> u8 {
        self.byte(field::HOPS)
    }
    /// Transaction id.
    pub fn xid(&self) -> u32 {
        u32_be(self.slice(field::XID))
    }
    /// Seconds since the client began.
    pub fn secs(&self) -> u16 {
        u16_be(self.slice(field::SECS))
    }
    /// Flags (bit 15 = broadcast).
    pub fn flags(&self) -> u16 {
        u16_be(self.slice(field::FLAGS))
    }
    /// Client address (set when the client has one: RENEWING, REBINDING, INFORM).
    pub fn ciaddr(&self) -> Ipv4Addr {
        self.ip(field::CIADDR)
    }
    /// "Your" address.
    pub fn yiaddr(&self) -> Ipv4Addr {
        self.ip(field::YIADDR)
    }
    /// Next server address.
    pub fn siaddr(&self) -> Ipv4Addr {
        self.ip(field::SIADDR)
    }
    /// Relay agent address.
    pub fn giaddr(&self) -> Ipv4Addr {
        self.ip(field::GIADDR)
    }
    /// The 16-byte client hardware address field.
    pub fn chaddr(&self) -> &[u8] {
        self.slice(field::CHADDR)
    }
    /// Server host name field.
    pub fn sname(&self) -> &[u8] {
        self.slice(field::SNAME)
    }
    /// Boot file name field.
    pub fn file(&self) -> &[u8] {
        self.slice(field::FILE)
    }
    /// The options field (after the cookie).
    pub fn options(&self) -> &[u8] {
        self.bytes().get(OPTIONS_OFFSET..).unwrap_or(&[])
    }
}

fn u16_be(b: &[u8]) -> u16 {
    match b {
        [a, c] => u16::from_be_bytes([*a, *c]),
        _ => 0,
    }
}

fn u32_be(b: &[u8]) -> u32 {
    match b {
        [a, c, d, e] => u32::from_be_bytes([*a, *c, *d, *e]),
        _ => 0,
    }
}

/// Iterates `(code, value)` over one option field, stopping at END.
pub struct OptionIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> OptionIter<'a> {
    /// Options in `field` (the options area, or `file`/`sname` when overloaded).
    pub fn new(field: &'a [u8]) -> Self {
        Self {
            rest: field,
            failed: false,
        }
    }
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<(u8, &'a [u8]), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            let (&code, rest) = self.rest.split_first()?;
            match code {
                opt::PAD => {
                    self.rest = rest;
                    continue;
                }
                opt::END => {
                    self.rest = &[];
                    return None;
                }
                _ => {}
            }
            let Some((&len, rest)) = rest.split_first() else {
                self.failed = true;
                return Some(Err(WireError::BadOptionLength));
            };
            let len = usize::from(len);
            if rest.len() < len {
                self.failed = true;
                return Some(Err(WireError::BadOptionLength));
            }
            let (value, rest) = rest.split_at(len);
            self.rest = rest;
            return Some(Ok((code, value)));
        }
    }
}

/// Longest concatenated value we keep for a variable-length option (RFC 3396 allows more; no
/// option we act on needs it).
pub const MAX_OPTION: usize = 255;
/// Most client architectures kept from option 93.
pub const MAX_ARCHES: usize = 8;

/// A client message with the options the server acts on, parsed without allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Option 53.
    pub message_type: MessageType,
    /// Transaction id.
    pub xid: u32,
    /// Seconds elapsed.
    pub secs: u16,
    /// Broadcast flag (flags bit 15).
    pub broadcast: bool,
    /// Relay hops.
    pub hops: u8,
    /// Client address field.
    pub ciaddr: Ipv4Addr,
    /// Relay agent address field.
    pub giaddr: Ipv4Addr,
    /// Client hardware address.
    pub mac: MacAddr,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 57, if ≥ 576 (smaller values are ignored, RFC 2132 §9.10).
    pub max_message_size: Option<u16>,
    /// Option 55, in the client's order.
    pub parameter_request_list: Vec<u8, MAX_OPTION>,
    /// Option 60.
    pub vendor_class: Vec<u8, MAX_OPTION>,
    /// Option 77, raw (RFC 3004 length-prefixed form, or iPXE's plain string).
    pub user_class: Vec<u8, MAX_OPTION>,
    /// Option 93 (several architectures allowed).
    pub client_arch: Vec<u16, MAX_ARCHES>,
    /// Option 94 (type, major, minor).
    pub client_ndi: Option<[u8; 3]>,
    /// Option 97 (type byte + 16-byte GUID).
    pub client_uuid: Vec<u8, MAX_OPTION>,
    /// Option 61.
    pub client_id: Vec<u8, MAX_OPTION>,
    /// Option 12.
    pub hostname: Vec<u8, MAX_OPTION>,
    /// Option 82, raw, echoed back to the relay (RFC 3046 §2.2).
    pub relay_agent_info: Vec<u8, MAX_OPTION>,
}

impl Request {
    /// Parses a client (BOOTREQUEST) message.
    pub fn parse(bytes: &[u8]) -> Result<Request, WireError> {
        let p = Packet::new_checked(bytes)?;
        if p.htype() != 1 || p.hlen() != 6 {
            return Err(WireError::NotEthernet);
        }
        let mut mac = [0u8; 6];
        for (d, s) in mac.iter_mut().zip(p.chaddr()) {
            *d = *s;
        }
        let mut req = Request {
            message_type: MessageType::Discover,
            xid: p.xid(),
            secs: p.secs(),
            broadcast: p.flags() & 0x8000 != 0,
            hops: p.hops(),
            ciaddr: p.ciaddr(),
            giaddr: p.giaddr(),
            mac: MacAddr(mac),
            requested_ip: None,
            server_id: None,
            max_message_size: None,
            parameter_request_list: Vec::new(),
            vendor_class: Vec::new(),
            user_class: Vec::new(),
            client_arch: Vec::new(),
            client_ndi: None,
            client_uuid: Vec::new(),
            client_id: Vec::new(),
            hostname: Vec::new(),
            relay_agent_info: Vec::new(),
        };
        let mut message_type = None;
        let mut overload = 0u8;
        // RFC 3396: concatenate every instance before interpreting fixed-size options.
        let mut scratch = Scratch::default();
        for o in OptionIter::new(p.options()) {
            let (code, value) = o?;
            if code == opt::OVERLOAD {
                overload = value.first().copied().unwrap_or(0);
            }
            scratch.add(&mut req, code, value)?;
        }
        // RFC 2132 §9.3: option 52 moves options into `file` (1), `sname` (2) or both (3);
        // `file` is read before `sname`.
        if overload & 1 != 0 {
            for o in OptionIter::new(p.file()) {
                let (code, value) = o?;
                scratch.add(&mut req, code, value)?;
            }
        }
        if overload & 2 != 0 {
            for o in OptionIter::new(p.sname()) {
                let (code, value) = o?;
                scratch.add(&mut req, code, value)?;
            }
        }
        scratch.finish(&mut req, &mut message_type)?;
        req.message_type = message_type.ok_or(WireError::NoMessageType)?;
        Ok(req)
    }

    /// True when option 77 says the client is iPXE, in either form iPXE uses: the plain string
    /// `iPXE`, or an RFC 3004 list containing the class `iPXE`.
    pub fn is_ipxe(&self) -> bool {
        user_class_contains(&self.user_class, b"iPXE")
    }

    /// The 16-byte client hardware address field to echo in replies.
    pub fn chaddr16(&self) -> [u8; 16] {
        let mut c = [0u8; 16];
        for (d, s) in c.iter_mut().zip(self.mac.0) {
            *d = s;
        }
        c
    }
}

/// Whether an option 77 value carries `class`, in plain or RFC 3004 form.
pub fn user_class_contains(raw: &[u8], class: &[u8]) -> bool {
    if raw == class {
        return true;
    }
    let mut rest = raw;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        let Some(item) = tail.get(..len) else {
            return false;
        };
        if item == class {
            return true;
        }
        rest = tail.get(len..).unwrap_or(&[]);
    }
    false
}

/// A sub-option of option 82 (RFC 3046): 1 = Agent Circuit ID (the switch port), 2 = Agent
/// Remote ID (the switch). `None` if absent or if the sub-options are truncated.
pub fn relay_sub_option(raw: &[u8], code: u8) -> Option<&[u8]> {
    let mut rest = raw;
    while let [c, len, tail @ ..] = rest {
        let len = usize::from(*len);
        let value = tail.get(..len)?;
        if *c == code {
            return Some(value);
        }
        rest = tail.get(len..)?;
    }
    None
}

/// Concatenation buffers for fixed-size options that may arrive split (RFC 3396).
#[derive(Default)]
struct Scratch {
    message_type: Vec<u8, 4>,
    requested_ip: Vec<u8, 8>,
    server_id: Vec<u8, 8>,
    max_size: Vec<u8, 4>,
    arch: Vec<u8, 32>,
    ndi: Vec<u8, 8>,
}

impl Scratch {
    fn add(&mut self, req: &mut Request, code: u8, value: &[u8]) -> Result<(), WireError> {
        fn push<const N: usize>(
            buf: &mut Vec<u8, N>,
            code: u8,
            value: &[u8],
        ) -> Result<(), WireError> {
            buf.extend_from_slice(value)
                .map_err(|_| WireError::OptionTooLong(code))
        }
        match code {
            opt::MESSAGE_TYPE => push(&mut self.message_type, code, value),
            opt::REQUESTED_IP => push(&mut self.requested_ip, code, value),
            opt::SERVER_ID => push(&mut self.server_id, code, value),
            opt::MAX_MESSAGE_SIZE => push(&mut self.max_size, code, value),
            opt::CLIENT_ARCH => push(&mut self.arch, code, value),
            opt::CLIENT_NDI => push(&mut self.ndi, code, value),
            opt::PARAMETER_REQUEST_LIST => push(&mut req.parameter_request_list, code, value),
            opt::VENDOR_CLASS => push(&mut req.vendor_class, code, value),
            opt::USER_CLASS => push(&mut req.user_class, code, value),
            opt::CLIENT_UUID => push(&mut req.client_uuid, code, value),
            opt::CLIENT_ID => push(&mut req.client_id, code, value),
            opt::HOSTNAME => push(&mut req.hostname, code, value),
            opt::RELAY_AGENT_INFO => push(&mut req.relay_agent_info, code, value),
            _ => Ok(()),
        }
    }

    fn finish(
        &self,
        req: &mut Request,
        message_type: &mut Option<MessageType>,
    ) -> Result<(), WireError> {
        match self.message_type.as_slice() {
            [] => {}
            [t] => *message_type = MessageType::from_u8(*t),
            _ => return Err(WireError::BadOptionValue(opt::MESSAGE_TYPE)),
        }
        req.requested_ip = ipv4_opt(&self.requested_ip, opt::REQUESTED_IP)?;
        req.server_id = ipv4_opt(&self.server_id, opt::SERVER_ID)?;
        req.max_message_size = match self.max_size.as_slice() {
            [] => None,
            [a, b] => Some(u16::from_be_bytes([*a, *b])).filter(|v| usize::from(*v) >= 576),
            _ => return Err(WireError::BadOptionValue(opt::MAX_MESSAGE_SIZE)),
        };
        if !self.arch.len().is_multiple_of(2) {
            return Err(WireError::BadOptionValue(opt::CLIENT_ARCH));
        }
        for pair in self.arch.chunks_exact(2) {
            if let [a, b] = pair {
                req.client_arch
                    .push(u16::from_be_bytes([*a, *b]))
                    .map_err(|_| WireError::OptionTooLong(opt::CLIENT_ARCH))?;
            }
        }
        req.client_ndi = match self.ndi.as_slice() {
            [] => None,
            [a, b, c] => Some([*a, *b, *c]),
            _ => return Err(WireError::BadOptionValue(opt::CLIENT_NDI)),
        };
        Ok(())
    }
}

fn ipv4_opt(buf: &[u8], code: u8) -> Result<Option<Ipv4Addr>, WireError> {
    match buf {
        [] => Ok(None),
        [a, b, c, d] => Ok(Some(Ipv4Addr::new(*a, *b, *c, *d))),
        _ => Err(WireError::BadOptionValue(code)),
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
