//! Writing BOOTREPLY messages into a caller buffer (re-exported from [`super::wire`]).

use core::net::Ipv4Addr;

use super::wire::{MAGIC_COOKIE, MIN_REPLY_LEN, OPTIONS_OFFSET, WireError, field, opt};

/// Writes a BOOTREPLY into a caller buffer.
///
/// Options are appended with [`ReplyBuilder::option`]; [`ReplyBuilder::finish`] writes END and
/// pads to [`MIN_REPLY_LEN`]. Long values are split into several instances (RFC 3396). An option
/// that would push the message past `limit` is refused with `BufferTooSmall` so the caller can
/// skip optional ones.
pub struct ReplyBuilder<'a> {
    buf: &'a mut [u8],
    len: usize,
    limit: usize,
}

/// Fixed header fields of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ReplyHeader {
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub hops: u8,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
}

impl<'a> ReplyBuilder<'a> {
    /// Starts a reply; `limit` is the largest message the client accepts (≥ 300).
    pub fn new(
        buf: &'a mut [u8],
        header: &ReplyHeader,
        file: &[u8],
        limit: usize,
    ) -> Result<Self, WireError> {
        let limit = limit.min(buf.len());
        if limit < MIN_REPLY_LEN {
            return Err(WireError::BufferTooSmall);
        }
        let head = buf
            .get_mut(..OPTIONS_OFFSET)
            .ok_or(WireError::BufferTooSmall)?;
        head.fill(0);
        let mut w = Writer { buf: head, at: 0 };
        w.put(&[2, 1, 6, header.hops]);
        w.put(&header.xid.to_be_bytes());
        w.put(&header.secs.to_be_bytes());
        w.put(&header.flags.to_be_bytes());
        w.put(&header.ciaddr.octets());
        w.put(&header.yiaddr.octets());
        w.put(&header.siaddr.octets());
        w.put(&header.giaddr.octets());
        w.put(&header.chaddr);
        w.at = field::FILE.start;
        let n = file.len().min(field::FILE.len() - 1);
        w.put(file.get(..n).unwrap_or(&[]));
        w.at = field::MAGIC.start;
        w.put(&MAGIC_COOKIE);
        Ok(Self {
            buf,
            len: OPTIONS_OFFSET,
            limit,
        })
    }

    /// Appends option `code` with `value`, split into 255-byte instances if longer.
    pub fn option(&mut self, code: u8, value: &[u8]) -> Result<(), WireError> {
        let chunks = value.len().div_ceil(255).max(1);
        // Room for this option plus the END byte.
        let need = value.len() + 2 * chunks + 1;
        if self.len + need > self.limit {
            return Err(WireError::BufferTooSmall);
        }
        let mut rest = value;
        loop {
            let n = rest.len().min(255);
            let (head, tail) = rest.split_at(n);
            self.push(&[code, n as u8]);
            self.push(head);
            rest = tail;
            if rest.is_empty() {
                break;
            }
        }
        Ok(())
    }

    fn push(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.len..self.len + bytes.len()) {
            dst.copy_from_slice(bytes);
            self.len += bytes.len();
        }
    }

    /// Writes END, pads with zeros to 300 bytes, and returns the message length.
    pub fn finish(mut self) -> usize {
        self.push(&[opt::END]);
        let end = self.len.max(MIN_REPLY_LEN);
        if let Some(pad) = self.buf.get_mut(self.len..end) {
            pad.fill(0);
        }
        end
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.at..self.at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        self.at += bytes.len();
    }
}
