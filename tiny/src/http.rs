//! A minimal HTTP/1.1 responder on embassy-net TCP: the iPXE boot script, boot files (GET and
//! HEAD, one byte range), and the profile's own gauges. One request per connection
//! (`Connection: close`), fixed buffers, no allocation. A body is read from flash straight into
//! the free part of the socket's send buffer (no staging copy), so each step fills the whole
//! buffer and every acknowledgement from the node opens a full window of new data.
//!
//! Routes (the same paths as `rackboot serve`, so DHCP's boot URLs are the appliance's):
//! - `/boot/v1/bootscript?mac=<mac>`: the reserved node's kernel, initrd and parameters;
//! - `/images/<name>`, `/ipxe/<name>`: a boot file from [`BootFlash`];
//! - `/tiny/stats`: allocations since start-up and the stack high-water mark
//!   ([`crate::alloc_count`]), for the tests and the bench.

use core::fmt::Write as _;

use embedded_io_async::Write as _;

use embassy_net::Stack;
use embassy_net::tcp::TcpSocket;
use embassy_time::Duration;
use heapless::String;
use pxe_core::MacAddr;
use pxe_core::tftp::FileSource;

use crate::board::BootFlash;
use crate::store::{NetConfig, Tables};

/// Longest request head read (request line and headers).
pub const MAX_HEAD: usize = 1024;

/// How long a closed connection waits for the node to acknowledge its FIN.
const FIN_WAIT: Duration = Duration::from_secs(2);

/// A parsed request: what the responder needs of it.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// `HEAD` (else `GET`).
    pub head: bool,
    /// The path with its query.
    pub target: &'a str,
    /// The `Range` header's value.
    pub range: Option<&'a str>,
}

/// Serves HTTP on port 80 of `stack`, one connection at a time per call (run several for
/// parallel connections), forever.
pub async fn serve<B: BootFlash, const R: usize>(
    stack: Stack<'_>,
    rx: &mut [u8],
    tx: &mut [u8],
    tables: &Tables<R>,
    flash: &mut B,
) -> ! {
    let mut head = [0u8; MAX_HEAD];
    loop {
        let mut socket = TcpSocket::new(stack, rx, tx);
        socket.set_timeout(Some(Duration::from_secs(30)));
        // Responses are written in whole blocks (a head, then the send buffer's free space):
        // Nagle would only hold back each file's last partial segment for one more round trip.
        socket.set_nagle_enabled(false);
        if socket.accept(80).await.is_ok() {
            let _ = respond(&mut socket, &mut head, tables, flash).await;
            let _ = socket.flush().await;
        }
        socket.close();
        // Wait for the node to acknowledge our FIN, but not for long: a node that has started
        // its kernel never will (its NIC is gone), and until this returns the connection's
        // buffers cannot take the next one. The FIN would otherwise be retransmitted until the
        // 30 s timeout.
        let _ = embassy_time::with_timeout(FIN_WAIT, socket.flush()).await;
        socket.abort();
        let _ = socket.flush().await;
    }
}

async fn respond<B: BootFlash, const R: usize>(
    socket: &mut TcpSocket<'_>,
    head: &mut [u8; MAX_HEAD],
    tables: &Tables<R>,
    flash: &mut B,
) -> Result<(), embassy_net::tcp::Error> {
    let mut len = 0;
    let end = loop {
        let Some(free) = head.get_mut(len..) else {
            return status(socket, 431, "Request Header Fields Too Large").await;
        };
        if free.is_empty() {
            return status(socket, 431, "Request Header Fields Too Large").await;
        }
        let n = socket.read(free).await?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        if let Some(end) = find(head.get(..len).unwrap_or_default(), b"\r\n\r\n") {
            break end;
        }
    };
    let Some(req) = core::str::from_utf8(head.get(..end).unwrap_or_default())
        .ok()
        .and_then(parse)
    else {
        return status(socket, 400, "Bad Request").await;
    };
    let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
    if path == "/boot/v1/bootscript" {
        let mac = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("mac="))
            .and_then(percent_decode::<32>)
            .and_then(|m| MacAddr::parse_nic(&m).ok());
        let mut script: String<768> = String::new();
        let written = match (mac, &tables.net) {
            (Some(mac), Some(net)) => boot_script(&mut script, tables, net, mac),
            _ => None,
        };
        if written.is_none() {
            return status(socket, 404, "Not Found").await;
        }
        let mut h: String<256> = String::new();
        let _ = write!(
            h,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            script.len()
        );
        socket.write_all(h.as_bytes()).await?;
        if !req.head {
            socket.write_all(script.as_bytes()).await?;
        }
        return Ok(());
    }
    if path == "/tiny/stats" {
        let (own, tap, other) = crate::alloc_count::counts();
        let mut body: String<256> = String::new();
        let _ = writeln!(
            body,
            "alloc_own={own} alloc_tap={tap} alloc_other_threads={other} stack_high_water={}",
            crate::alloc_count::stack_high_water()
        );
        let mut h: String<256> = String::new();
        let _ = write!(
            h,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        socket.write_all(h.as_bytes()).await?;
        return socket.write_all(body.as_bytes()).await;
    }
    let name = path
        .strip_prefix("/images/")
        .or_else(|| path.strip_prefix("/ipxe/"));
    let opened = name
        .and_then(|n| tables.boot_file(n))
        .and_then(|b| flash.open(&b.source));
    let Some((mut file, size)) = opened else {
        return status(socket, 404, "Not Found").await;
    };
    let (code, start, count) = match req.range.map(|r| byte_range(r, size)) {
        None => (200, 0, size),
        Some(Some((a, b))) => (206, a, b - a + 1),
        Some(None) => {
            let mut h: String<256> = String::new();
            let _ = write!(
                h,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return socket.write_all(h.as_bytes()).await;
        }
    };
    let mut h: String<256> = String::new();
    let _ = write!(
        h,
        "HTTP/1.1 {code} {}\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\nContent-Length: {count}\r\nConnection: close\r\n",
        if code == 200 { "OK" } else { "Partial Content" }
    );
    if code == 206 {
        let _ = write!(
            h,
            "Content-Range: bytes {start}-{}/{size}\r\n",
            start + count - 1
        );
    }
    let _ = h.push_str("\r\n");
    socket.write_all(h.as_bytes()).await?;
    if req.head {
        return Ok(());
    }
    let mut at = start;
    let end = start + count;
    while at < end {
        // The largest contiguous free part of the send buffer, filled from flash in place.
        let n = socket
            .write_with(|free| {
                let want = usize::try_from(end - at)
                    .unwrap_or(free.len())
                    .min(free.len());
                match file.read_at(at, free.get_mut(..want).unwrap_or_default()) {
                    Ok(n) => (n, n),
                    Err(_) => (0, 0),
                }
            })
            .await?;
        if n == 0 {
            return Ok(()); // the file shrank or failed: the length is now wrong, close
        }
        at += n as u64;
    }
    Ok(())
}

/// Parses a request head (request line and headers, without the blank line).
pub fn parse(head: &str) -> Option<Request<'_>> {
    let mut lines = head.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return None;
    }
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    let range = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("range")
            .then_some(value.trim())
    });
    Some(Request {
        head,
        target,
        range,
    })
}

/// The inclusive byte range of a `Range` value over `size` bytes (RFC 9110 §14.1.2: one range;
/// `a-b`, `a-`, `-n`); `None` when unsatisfiable or not understood.
pub fn byte_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?.trim();
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            size - 1
        } else {
            b.parse::<u64>().ok()?.min(size - 1)
        };
        (start, end)
    };
    (start <= end && start < size).then_some((start, end))
}

/// Writes the iPXE script of the node reserved for `mac`; `None` if it has no reservation or
/// the script does not fit.
pub fn boot_script<const N: usize, const R: usize>(
    out: &mut String<N>,
    tables: &Tables<R>,
    net: &NetConfig,
    mac: MacAddr,
) -> Option<()> {
    let node = tables.reservation(mac.0)?;
    let server = net.server_ip();
    let mut bootif: String<24> = String::new();
    mac.write_bootif(&mut bootif).ok()?;
    write!(
        out,
        "#!ipxe\nkernel http://{server}/images/{} initrd=initrd {} xname={} nid={} BOOTIF={bootif}\ninitrd --name initrd http://{server}/images/{}\nboot\n",
        node.kernel, node.params, node.xname, node.nid, node.initrd
    )
    .ok()
}

/// Decodes `%XX` escapes (iPXE escapes the colons of `${mac}`); `None` if malformed or longer
/// than `N` bytes.
pub fn percent_decode<const N: usize>(s: &str) -> Option<String<N>> {
    let mut out: heapless::Vec<u8, N> = heapless::Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        let b = if b == b'%' {
            let hi = char::from(bytes.next()?).to_digit(16)?;
            let lo = char::from(bytes.next()?).to_digit(16)?;
            (hi * 16 + lo) as u8
        } else {
            b
        };
        out.push(b).ok()?;
    }
    String::from_utf8(out).ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn status(
    socket: &mut TcpSocket<'_>,
    code: u16,
    reason: &str,
) -> Result<(), embassy_net::tcp::Error> {
    let mut h: String<128> = String::new();
    let _ = write!(
        h,
        "HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(h.as_bytes()).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_get_with_range() {
        let r = parse("GET /images/vmlinuz HTTP/1.1\r\nHost: x\r\nrange: bytes=10-19").unwrap();
        assert_eq!(
            r,
            Request {
                head: false,
                target: "/images/vmlinuz",
                range: Some("bytes=10-19")
            }
        );
        assert!(parse("POST / HTTP/1.1").is_none());
        assert!(parse("GET x HTTP/1.1").is_none());
        assert!(parse("GET / SPDY").is_none());
        assert!(parse("").is_none());
    }

    #[test]
    fn decodes_escaped_mac() {
        assert_eq!(
            percent_decode::<32>("52%3A54%3a00:aa:01:01")
                .unwrap()
                .as_str(),
            "52:54:00:aa:01:01"
        );
        assert!(percent_decode::<32>("52%3").is_none());
        assert!(percent_decode::<32>("%zz").is_none());
        assert!(percent_decode::<4>("abcde").is_none());
        assert!(percent_decode::<4>("%ff").is_none());
    }

    #[test]
    fn ranges() {
        assert_eq!(byte_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(byte_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(byte_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(byte_range("bytes=-200", 100), Some((0, 99)));
        assert_eq!(byte_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(byte_range("bytes=100-", 100), None);
        assert_eq!(byte_range("bytes=9-3", 100), None);
        assert_eq!(byte_range("bytes=0-1,5-6", 100), None);
        assert_eq!(byte_range("bytes=-0", 100), None);
        assert_eq!(byte_range("items=0-1", 100), None);
        assert_eq!(byte_range("bytes=x-1", 100), None);
    }
}
