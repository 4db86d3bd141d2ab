//! A TFTP read as PXE firmware does it (RFC 1350, options RFC 2347/2348/2349/7440): RRQ with
//! `tsize` and `blksize`, ACK of the OACK, then a lock-step (or windowed) download. On a
//! timeout the client sends its last packet again (the RRQ, or the last ACK), as EDK2's MTFTP4
//! and iPXE do; a duplicate block is ACKed again. Both count as retransmissions.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use aws_lc_rs::digest;
use tokio::net::UdpSocket;

/// What the client asks for and how patiently it waits.
#[derive(Debug, Clone, Copy)]
pub struct TftpParams {
    pub blksize: u16,
    /// `None`: no `windowsize` option (lock-step, RFC 1350).
    pub windowsize: Option<u16>,
    pub timeout: Duration,
    /// Timeouts in a row before the transfer is given up.
    pub retries: u32,
}

/// A finished download.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    pub bytes: u64,
    pub retransmits: u32,
    /// The file's sha256, hex.
    pub sha256: String,
}

/// Why a download failed (the report's reason).
#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("timeout after {0} retransmissions")]
    Timeout(u32),
    #[error("server error {code}: {message}")]
    Server { code: u16, message: String },
    #[error("malformed packet from the server")]
    Malformed,
}

/// An RRQ for `file` in octet mode with the client's options.
pub fn rrq(file: &str, p: &TftpParams) -> Vec<u8> {
    let mut v = vec![0, 1];
    let mut put = |s: &str| {
        v.extend_from_slice(s.as_bytes());
        v.push(0);
    };
    put(file);
    put("octet");
    put("tsize");
    put("0");
    put("blksize");
    put(&p.blksize.to_string());
    if let Some(w) = p.windowsize {
        put("windowsize");
        put(&w.to_string());
    }
    v
}

/// Sends, treating a failed send as a lost packet (the timeout resends it), as a NIC's
/// transmit error is to firmware.
async fn send(sock: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    if let Err(e) = sock.send_to(bytes, to).await {
        tracing::debug!(%to, error = %e, "storm: TFTP send failed");
    }
}

fn ack(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, 4, b[0], b[1]]
}

/// Options the server accepted in its OACK: (blksize, windowsize).
pub fn parse_oack(body: &[u8]) -> (Option<u16>, Option<u16>) {
    let mut fields = body.split(|b| *b == 0);
    let (mut blk, mut win) = (None, None);
    while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
        let v = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok());
        match k.to_ascii_lowercase().as_slice() {
            b"blksize" => blk = v,
            b"windowsize" => win = v,
            _ => {}
        }
    }
    (blk, win)
}

/// Downloads `file` from `server` (port 69), from a socket bound to `local` (the node's leased
/// address with `--bind-leases`, else any), counting bytes and retransmissions.
pub async fn fetch(
    local: Ipv4Addr,
    server: Ipv4Addr,
    file: &str,
    p: &TftpParams,
) -> Result<Fetched, TftpError> {
    let sock = UdpSocket::bind(SocketAddrV4::new(local, 0)).await?;
    let mut last: Vec<u8> = rrq(file, p);
    let mut to: SocketAddr = SocketAddrV4::new(server, 69).into();
    send(&sock, &last, to).await;
    let mut out = Fetched::default();
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut blksize = 512usize;
    let mut window = 1u16;
    let mut tid: Option<SocketAddr> = None;
    // The last block received in order (0 before the first DATA).
    let mut have: u16 = 0;
    let mut since_ack: u16 = 0;
    let mut timeouts = 0u32;
    let mut buf = vec![0u8; usize::from(p.blksize.max(512)) + 4];
    loop {
        let (n, from) = match tokio::time::timeout(p.timeout, sock.recv_from(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => {
                timeouts += 1;
                if timeouts > p.retries {
                    return Err(TftpError::Timeout(out.retransmits));
                }
                out.retransmits += 1;
                send(&sock, &last, to).await;
                continue;
            }
        };
        // RFC 1350 §4: packets from another TID are not ours.
        if tid.is_some_and(|t| t != from) {
            continue;
        }
        let pkt = buf.get(..n).ok_or(TftpError::Malformed)?;
        let (op, rest) = match pkt {
            [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
            _ => return Err(TftpError::Malformed),
        };
        match op {
            6 if tid.is_none() => {
                tid = Some(from);
                to = from;
                let (b, w) = parse_oack(rest);
                blksize = usize::from(b.unwrap_or(512));
                window = w.unwrap_or(1).max(1);
                last = ack(0).to_vec();
                send(&sock, &last, to).await;
                timeouts = 0;
            }
            3 => {
                let [b0, b1, data @ ..] = rest else {
                    return Err(TftpError::Malformed);
                };
                if tid.is_none() {
                    // No OACK: the server ignored the options (RFC 2347 §3).
                    tid = Some(from);
                    to = from;
                }
                let block = u16::from_be_bytes([*b0, *b1]);
                if block == have.wrapping_add(1) {
                    have = block;
                    out.bytes += data.len() as u64;
                    hash.update(data);
                    since_ack += 1;
                    timeouts = 0;
                    let end = data.len() < blksize;
                    if end || since_ack >= window {
                        last = ack(have).to_vec();
                        send(&sock, &last, to).await;
                        since_ack = 0;
                    }
                    if end {
                        out.sha256 = hex::encode(hash.finish().as_ref());
                        return Ok(out);
                    }
                } else {
                    // A duplicate (our ACK was lost, the server resent) or a gap in a window:
                    // ACK the last block we hold (RFC 7440 §4).
                    out.retransmits += 1;
                    timeouts = 0;
                    last = ack(have).to_vec();
                    send(&sock, &last, to).await;
                    since_ack = 0;
                }
            }
            5 => {
                let (code, msg) = match rest {
                    [a, b, msg @ ..] => (u16::from_be_bytes([*a, *b]), msg),
                    _ => (0, &[][..]),
                };
                let message = String::from_utf8_lossy(msg)
                    .trim_end_matches('\0')
                    .to_owned();
                return Err(TftpError::Server { code, message });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn rrq_carries_the_firmware_options() {
        let p = TftpParams {
            blksize: 1468,
            windowsize: None,
            timeout: Duration::from_secs(1),
            retries: 3,
        };
        assert_eq!(
            rrq("snponly.efi", &p),
            b"\x00\x01snponly.efi\x00octet\x00tsize\x000\x00blksize\x001468\x00".to_vec()
        );
        let w = TftpParams {
            windowsize: Some(4),
            ..p
        };
        assert!(rrq("a", &w).ends_with(b"windowsize\x004\x00"));
    }

    #[test]
    fn oack_options_are_read_case_insensitively() {
        assert_eq!(
            parse_oack(b"tsize\x00100\x00BLKSIZE\x001468\x00windowsize\x004\x00"),
            (Some(1468), Some(4))
        );
        assert_eq!(parse_oack(b"blksize\0x\0"), (None, None));
        assert_eq!(parse_oack(b""), (None, None));
    }
}
