//! TFTP packets (RFC 1350) and options (RFC 2347).

/// TFTP opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Opcode {
    Rrq = 1,
    Wrq = 2,
    Data = 3,
    Ack = 4,
    Error = 5,
    Oack = 6,
}

/// TFTP error codes (RFC 1350 §5, RFC 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    DiskFull = 3,
    IllegalOperation = 4,
    UnknownTid = 5,
    FileExists = 6,
    NoSuchUser = 7,
    OptionRefused = 8,
}

/// Options a client asked for (RFC 2348 blksize, RFC 2349 timeout/tsize, RFC 7440 windowsize).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TftpOptions {
    /// Block size.
    pub blksize: Option<u16>,
    /// Retransmission timeout, seconds.
    pub timeout: Option<u8>,
    /// Transfer size (the client sends 0 and expects the file size back).
    pub tsize: Option<u64>,
    /// Window size.
    pub windowsize: Option<u16>,
}

/// A parsed read request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Raw file name bytes (normalise with [`super::normalize_path`]).
    pub filename: &'a [u8],
    /// Options; unknown ones are ignored (RFC 2347: not echoed).
    pub options: TftpOptions,
}

/// Why a request was refused; [`RequestError::code`] gives the ERROR packet's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// Not an RRQ/WRQ, or not NUL-terminated fields.
    Malformed,
    /// WRQ: this server is read-only.
    WriteRefused,
    /// `netascii`/`mail` mode: we only serve binary (`octet`) data.
    UnsupportedMode,
    /// An option value out of its RFC range.
    BadOption,
    /// DATA/ACK/ERROR/OACK sent to the request port: not answered (an ERROR must never be
    /// answered with an ERROR, RFC 1350 §7).
    NotARequest,
}

impl RequestError {
    /// The ERROR code and message to answer with.
    pub fn code(self) -> (ErrorCode, &'static str) {
        match self {
            RequestError::Malformed => (ErrorCode::IllegalOperation, "malformed request"),
            RequestError::WriteRefused => (
                ErrorCode::AccessViolation,
                "read-only server: writes are refused",
            ),
            RequestError::UnsupportedMode => (
                ErrorCode::IllegalOperation,
                "only octet (binary) mode is supported",
            ),
            RequestError::BadOption => (ErrorCode::OptionRefused, "option value out of range"),
            RequestError::NotARequest => (ErrorCode::IllegalOperation, "not a request"),
        }
    }
}

/// Parses an RRQ (or refuses a WRQ).
pub fn parse_request(bytes: &[u8]) -> Result<Request<'_>, RequestError> {
    let (op, rest) = match bytes {
        [0, op, rest @ ..] => (*op, rest),
        _ => return Err(RequestError::Malformed),
    };
    match op {
        1 => {}
        2 => return Err(RequestError::WriteRefused),
        3..=6 => return Err(RequestError::NotARequest),
        _ => return Err(RequestError::Malformed),
    }
    let mut fields = rest.split(|b| *b == 0);
    let filename = fields.next().ok_or(RequestError::Malformed)?;
    let mode = fields.next().ok_or(RequestError::Malformed)?;
    if !rest.ends_with(&[0]) || filename.is_empty() {
        return Err(RequestError::Malformed);
    }
    if !mode.eq_ignore_ascii_case(b"octet") {
        return Err(
            if mode.eq_ignore_ascii_case(b"netascii") || mode.eq_ignore_ascii_case(b"mail") {
                RequestError::UnsupportedMode
            } else {
                RequestError::Malformed
            },
        );
    }
    let mut options = TftpOptions::default();
    while let Some(name) = fields.next() {
        if name.is_empty() {
            // The trailing empty field after the final NUL.
            break;
        }
        let value = fields.next().ok_or(RequestError::Malformed)?;
        let num = parse_u64(value);
        if name.eq_ignore_ascii_case(b"blksize") {
            let v = num
                .filter(|v| (8..=65464).contains(v))
                .ok_or(RequestError::BadOption)?;
            options.blksize = u16::try_from(v).ok();
        } else if name.eq_ignore_ascii_case(b"timeout") {
            let v = num
                .filter(|v| (1..=255).contains(v))
                .ok_or(RequestError::BadOption)?;
            options.timeout = u8::try_from(v).ok();
        } else if name.eq_ignore_ascii_case(b"tsize") {
            options.tsize = Some(num.ok_or(RequestError::BadOption)?);
        } else if name.eq_ignore_ascii_case(b"windowsize") {
            let v = num
                .filter(|v| (1..=65535).contains(v))
                .ok_or(RequestError::BadOption)?;
            options.windowsize = u16::try_from(v).ok();
        }
    }
    Ok(Request { filename, options })
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// Writes an ERROR packet; returns its length (0 if `out` is too small for even the header).
pub fn error_packet(code: ErrorCode, msg: &str, out: &mut [u8]) -> usize {
    emit_error(code, msg, out).unwrap_or(0)
}

pub(super) fn emit_error(code: ErrorCode, msg: &str, out: &mut [u8]) -> Option<usize> {
    let room = out.len().checked_sub(5)?;
    let msg = msg.as_bytes();
    let n = msg.len().min(room);
    put_header(out, Opcode::Error, code as u16);
    out.get_mut(4..4 + n)?.copy_from_slice(msg.get(..n)?);
    *out.get_mut(4 + n)? = 0;
    Some(5 + n)
}

pub(super) fn put_header(out: &mut [u8], op: Opcode, n: u16) {
    if let Some(h) = out.get_mut(..4) {
        let [a, b] = n.to_be_bytes();
        h.copy_from_slice(&[0, op as u8, a, b]);
    }
}

pub(super) fn emit_oack(o: &TftpOptions, out: &mut [u8]) -> Option<usize> {
    let mut w = Cursor { out, at: 0 };
    w.put(&[0, Opcode::Oack as u8])?;
    let mut num = [0u8; 20];
    if let Some(v) = o.blksize {
        w.opt(b"blksize", fmt_u64(u64::from(v), &mut num))?;
    }
    if let Some(v) = o.timeout {
        w.opt(b"timeout", fmt_u64(u64::from(v), &mut num))?;
    }
    if let Some(v) = o.tsize {
        w.opt(b"tsize", fmt_u64(v, &mut num))?;
    }
    if let Some(v) = o.windowsize {
        w.opt(b"windowsize", fmt_u64(u64::from(v), &mut num))?;
    }
    Some(w.at)
}

struct Cursor<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    fn put(&mut self, b: &[u8]) -> Option<()> {
        self.out
            .get_mut(self.at..self.at + b.len())?
            .copy_from_slice(b);
        self.at += b.len();
        Some(())
    }
    fn opt(&mut self, name: &[u8], value: &[u8]) -> Option<()> {
        self.put(name)?;
        self.put(&[0])?;
        self.put(value)?;
        self.put(&[0])
    }
}

fn fmt_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(slot) = buf.get_mut(i) {
            *slot = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    buf.get(i..).unwrap_or(&[])
}

pub(super) enum ClientPacket {
    Ack(u16),
    Error(u16),
}

pub(super) fn parse_client(b: &[u8]) -> Option<ClientPacket> {
    match b {
        [0, 4, hi, lo, ..] => Some(ClientPacket::Ack(u16::from_be_bytes([*hi, *lo]))),
        [0, 5, hi, lo, ..] => Some(ClientPacket::Error(u16::from_be_bytes([*hi, *lo]))),
        _ => None,
    }
}
