//! The DHCP side of a simulated node: client messages shaped as SeaBIOS's iPXE, OVMF's PXE
//! client and a plain OS client send them (see pxe-core/tests/vectors), the RFC 2131 backoff,
//! and one shared socket (a relay's port 67, or port 68 on an interface) whose replies are
//! handed to the waiting node by transaction id.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pxe_core::dhcp::wire::{MessageType, OptionIter, Packet, ReplyBuilder, ReplyHeader, opt};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Which firmware a simulated node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Firmware {
    /// OVMF (EDK2): its own PXE client (arch 7) TFTP-fetches the iPXE binary, whose DHCP
    /// then carries user class `iPXE`.
    Ovmf,
    /// SeaBIOS with QEMU's iPXE option ROM: the very first DHCP is already iPXE's (arch 0),
    /// so there is no TFTP stage.
    SeabiosIpxe,
}

/// Which DHCP client a message comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// The firmware's PXE client (OVMF) or the iPXE ROM (SeaBIOS).
    Firmware(Firmware),
    /// iPXE loaded by TFTP (OVMF's second DHCP) or the ROM's (SeaBIOS).
    Ipxe(Firmware),
    /// The booted OS: no PXE options, a client id.
    Os,
}

/// Option 55 of EDK2's PXE client (ovmf-pxe-01-discover.bin).
const EDK2_PRL: &[u8] = &[
    1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54, 58, 59, 60, 66,
    67, 97, 128, 129, 130, 131, 132, 133, 134, 135,
];
/// Option 55 of iPXE (seabios-ipxe-01-discover.bin).
const IPXE_PRL: &[u8] = &[
    1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132, 133, 134, 135, 175,
    203,
];
/// Option 175 (iPXE's feature list) as snponly.efi sends it (ovmf-pxe-03-discover.bin).
const IPXE_EFI_175: &[u8] = &[
    0xb1, 5, 1, 0x1a, 0xf4, 0x10, 0, 0xeb, 3, 1, 0, 0, 0x17, 1, 1, 0x24, 1, 1, 0x13, 1, 1, 0x11, 1,
    1, 0x27, 1, 1, 0x29, 1, 1, 0x15, 1, 1, 0x12, 1, 1,
];
/// Option 175 as the ipxe-qemu ROM sends it (seabios-ipxe-01-discover.bin).
const IPXE_BIOS_175: &[u8] = &[
    0xb1, 5, 1, 0x1a, 0xf4, 0x10, 0, 0xeb, 3, 1, 0, 0, 0x17, 1, 1, 0x22, 1, 1, 0x13, 1, 1, 0x11, 1,
    1, 0x27, 1, 1, 0x19, 1, 1, 0x29, 1, 1, 0x10, 1, 2, 0x21, 1, 1, 0x15, 1, 1, 0x18, 1, 1, 0x12, 1,
    1,
];
/// Option 55 of busybox udhcpc (the test node's OS client).
const OS_PRL: &[u8] = &[1, 3, 6, 12, 15, 28, 42];

/// The options a client puts after option 53, in its order; `request` adds 54 and 50 where
/// that client puts them.
pub fn client_options(
    client: Client,
    mac: [u8; 6],
    request: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Vec<(u8, Vec<u8>)> {
    let mut o: Vec<(u8, Vec<u8>)> = Vec::new();
    let client_id = [&[1u8][..], &mac[..]].concat();
    let uuid = vec![0u8; 17];
    let server_then_ip = |o: &mut Vec<(u8, Vec<u8>)>| {
        if let Some((server, ip)) = request {
            o.push((opt::SERVER_ID, server.octets().to_vec()));
            o.push((opt::REQUESTED_IP, ip.octets().to_vec()));
        }
    };
    match client {
        Client::Firmware(Firmware::Ovmf) => {
            // EDK2 puts 54/50 first and asks for 65280-byte replies in its REQUEST.
            server_then_ip(&mut o);
            let max = if request.is_some() { 0xff00u16 } else { 1472 };
            o.push((opt::MAX_MESSAGE_SIZE, max.to_be_bytes().to_vec()));
            o.push((opt::PARAMETER_REQUEST_LIST, EDK2_PRL.to_vec()));
            o.push((opt::CLIENT_UUID, uuid));
            o.push((opt::CLIENT_NDI, vec![1, 3, 0]));
            o.push((opt::CLIENT_ARCH, vec![0, 7]));
            o.push((
                opt::VENDOR_CLASS,
                b"PXEClient:Arch:00007:UNDI:003000".to_vec(),
            ));
        }
        Client::Firmware(Firmware::SeabiosIpxe) | Client::Ipxe(_) => {
            let efi = matches!(client, Client::Ipxe(Firmware::Ovmf));
            o.push((opt::MAX_MESSAGE_SIZE, 1472u16.to_be_bytes().to_vec()));
            let (arch, ndi, vendor, f175): (&[u8], &[u8], &[u8], &[u8]) = if efi {
                (
                    &[0, 7],
                    &[1, 3, 10],
                    b"PXEClient:Arch:00007:UNDI:003010",
                    IPXE_EFI_175,
                )
            } else {
                (
                    &[0, 0],
                    &[1, 2, 1],
                    b"PXEClient:Arch:00000:UNDI:002001",
                    IPXE_BIOS_175,
                )
            };
            o.push((opt::CLIENT_ARCH, arch.to_vec()));
            o.push((opt::CLIENT_NDI, ndi.to_vec()));
            o.push((opt::VENDOR_CLASS, vendor.to_vec()));
            o.push((opt::USER_CLASS, b"iPXE".to_vec()));
            o.push((opt::PARAMETER_REQUEST_LIST, IPXE_PRL.to_vec()));
            o.push((175, f175.to_vec()));
            o.push((opt::CLIENT_ID, client_id));
            o.push((opt::CLIENT_UUID, uuid));
            // iPXE appends 54/50 last.
            server_then_ip(&mut o);
        }
        Client::Os => {
            o.push((opt::CLIENT_ID, client_id));
            o.push((opt::MAX_MESSAGE_SIZE, 576u16.to_be_bytes().to_vec()));
            server_then_ip(&mut o);
            o.push((opt::PARAMETER_REQUEST_LIST, OS_PRL.to_vec()));
        }
    }
    o
}

/// Writes a BOOTREQUEST: pxe-core's BOOTP writer, with the op byte turned into a request.
pub fn encode(
    kind: MessageType,
    client: Client,
    mac: [u8; 6],
    xid: u32,
    secs: u16,
    giaddr: Ipv4Addr,
    request: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Vec<u8> {
    let mut chaddr = [0u8; 16];
    chaddr[..6].copy_from_slice(&mac);
    // EDK2 sets the broadcast flag; iPXE and udhcpc do not.
    let broadcast = matches!(client, Client::Firmware(Firmware::Ovmf));
    let header = ReplyHeader {
        xid,
        secs,
        flags: if broadcast { 0x8000 } else { 0 },
        // A relay counts itself (RFC 1542 §4.1.1).
        hops: u8::from(!giaddr.is_unspecified()),
        ciaddr: Ipv4Addr::UNSPECIFIED,
        yiaddr: Ipv4Addr::UNSPECIFIED,
        siaddr: Ipv4Addr::UNSPECIFIED,
        giaddr,
        chaddr,
    };
    let mut buf = vec![0u8; 1024];
    let Ok(mut b) = ReplyBuilder::new(&mut buf, &header, b"", 1024) else {
        return Vec::new();
    };
    let mut ok = b.option(opt::MESSAGE_TYPE, &[kind.to_u8()]).is_ok();
    for (code, value) in client_options(client, mac, request) {
        ok &= b.option(code, &value).is_ok();
    }
    debug_assert!(ok, "client options fit in 1024 bytes");
    let n = b.finish();
    buf.truncate(n);
    if let Some(op) = buf.first_mut() {
        *op = 1; // BOOTREQUEST
    }
    buf
}

/// What the storm needs from a server's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: MessageType,
    pub xid: u32,
    pub mac: [u8; 6],
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub server_id: Option<Ipv4Addr>,
    /// Option 66.
    pub tftp_server: Option<String>,
    /// Option 67, else the `file` field.
    pub boot_file: Option<String>,
}

/// Parses a BOOTREPLY (options field only; overloaded `file`/`sname` are not read).
pub fn decode(bytes: &[u8]) -> Option<Reply> {
    let p = Packet::new_checked(bytes).ok()?;
    if p.op() != 2 || p.hlen() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(p.chaddr().get(..6)?);
    let mut r = Reply {
        kind: MessageType::Discover,
        xid: p.xid(),
        mac,
        yiaddr: p.yiaddr(),
        siaddr: p.siaddr(),
        server_id: None,
        tftp_server: None,
        boot_file: None,
    };
    let mut kind = None;
    for o in OptionIter::new(p.options()) {
        let (code, value) = o.ok()?;
        let text = || {
            String::from_utf8_lossy(value)
                .trim_end_matches('\0')
                .to_owned()
        };
        match code {
            opt::MESSAGE_TYPE => kind = value.first().copied().and_then(MessageType::from_u8),
            opt::SERVER_ID => {
                if let [a, b, c, d] = value {
                    r.server_id = Some(Ipv4Addr::new(*a, *b, *c, *d));
                }
            }
            opt::TFTP_SERVER_NAME => r.tftp_server = Some(text()),
            opt::BOOTFILE_NAME => r.boot_file = Some(text()),
            _ => {}
        }
    }
    if r.boot_file.is_none() {
        let f = p.file();
        let end = f.iter().position(|b| *b == 0).unwrap_or(f.len());
        if end > 0 {
            r.boot_file = f
                .get(..end)
                .map(|b| String::from_utf8_lossy(b).into_owned());
        }
    }
    r.kind = kind?;
    Some(r)
}

/// RFC 2131 §4.1: the n-th retransmission (0-based) waits 4, 8, 16, 32, then 64 s (the cap),
/// each randomised by `jitter` ∈ [-1, 1] seconds.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base = 4u64 << attempt.min(4);
    Duration::from_secs_f64((base as f64 + jitter.clamp(-1.0, 1.0)).max(0.0))
}

/// One socket for every node's DHCP; replies are routed to the node by xid.
pub struct Transport {
    sock: UdpSocket,
    /// Where requests go: the server's port 67 (relay) or 255.255.255.255:67 (direct).
    server: SocketAddrV4,
    /// `giaddr` in every request (the relay's address), or 0.0.0.0 when direct.
    pub giaddr: Ipv4Addr,
    waiting: Mutex<HashMap<u32, mpsc::UnboundedSender<Reply>>>,
}

impl Transport {
    /// As a relay: bound to `relay:67`; the server answers there (RFC 2131 §4.1).
    pub fn relay(relay: Ipv4Addr, server: Ipv4Addr) -> std::io::Result<Arc<Transport>> {
        let sock = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        sock.set_reuse_address(true)?;
        sock.set_nonblocking(true)?;
        let _ = sock.set_recv_buffer_size(4 << 20);
        sock.bind(&SocketAddrV4::new(relay, 67).into())?;
        Self::wrap(sock, SocketAddrV4::new(server, 67), relay)
    }

    /// On an interface: port 68, broadcast, as a client on the wire would.
    pub fn direct(interface: &str) -> std::io::Result<Arc<Transport>> {
        let sock = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        sock.set_reuse_address(true)?;
        sock.set_broadcast(true)?;
        sock.set_nonblocking(true)?;
        sock.bind_device(Some(interface.as_bytes()))?;
        let _ = sock.set_recv_buffer_size(4 << 20);
        sock.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())?;
        Self::wrap(
            sock,
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
            Ipv4Addr::UNSPECIFIED,
        )
    }

    fn wrap(
        sock: socket2::Socket,
        server: SocketAddrV4,
        giaddr: Ipv4Addr,
    ) -> std::io::Result<Arc<Transport>> {
        let sock = UdpSocket::from_std(sock.into())?;
        let t = Arc::new(Transport {
            sock,
            server,
            giaddr,
            waiting: Mutex::new(HashMap::new()),
        });
        let rx = Arc::downgrade(&t);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let Some(t) = rx.upgrade() else { return };
                let n = match tokio::time::timeout(Duration::from_secs(1), t.sock.recv(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "storm: DHCP receive failed");
                        continue;
                    }
                    Err(_) => continue,
                };
                let Some(reply) = buf.get(..n).and_then(decode) else {
                    continue;
                };
                let tx = t
                    .waiting
                    .lock()
                    .ok()
                    .and_then(|w| w.get(&reply.xid).cloned());
                if let Some(tx) = tx {
                    let _ = tx.send(reply);
                }
            }
        });
        Ok(t)
    }

    /// Replies with transaction id `xid` go to the returned receiver until [`Transport::done`].
    pub fn listen(&self, xid: u32) -> mpsc::UnboundedReceiver<Reply> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(xid, tx);
        }
        rx
    }

    pub fn done(&self, xid: u32) {
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(&xid);
        }
    }

    pub async fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.sock.send_to(bytes, self.server).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use pxe_core::dhcp::wire::Request;

    #[test]
    fn backoff_follows_rfc_2131() {
        let secs: Vec<u64> = (0..7).map(|a| backoff(a, 0.0).as_secs()).collect();
        assert_eq!(secs, [4, 8, 16, 32, 64, 64, 64]);
        assert_eq!(backoff(0, -1.0), Duration::from_secs(3));
        assert_eq!(backoff(1, 1.0), Duration::from_secs(9));
        assert_eq!(backoff(2, 5.0), Duration::from_secs(17), "jitter is ±1 s");
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0xee, 0, 2];

    #[test]
    fn messages_match_the_captured_firmware_vectors() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../pxe-core/tests/vectors/");
        let cases = [
            (
                "ovmf-pxe-01-discover.bin",
                Client::Firmware(Firmware::Ovmf),
                false,
            ),
            (
                "ovmf-pxe-02-request.bin",
                Client::Firmware(Firmware::Ovmf),
                true,
            ),
            (
                "ovmf-pxe-03-discover.bin",
                Client::Ipxe(Firmware::Ovmf),
                false,
            ),
            (
                "ovmf-pxe-05-request.bin",
                Client::Ipxe(Firmware::Ovmf),
                true,
            ),
            (
                "seabios-ipxe-01-discover.bin",
                Client::Firmware(Firmware::SeabiosIpxe),
                false,
            ),
        ];
        for (file, client, request) in cases {
            let real = std::fs::read(format!("{dir}{file}")).unwrap();
            let real = Request::parse(&real).unwrap();
            let ours = if request {
                let r = (real.server_id.unwrap(), real.requested_ip.unwrap());
                encode(
                    MessageType::Request,
                    client,
                    real.mac.0,
                    7,
                    0,
                    Ipv4Addr::UNSPECIFIED,
                    Some(r),
                )
            } else {
                encode(
                    MessageType::Discover,
                    client,
                    real.mac.0,
                    7,
                    0,
                    Ipv4Addr::UNSPECIFIED,
                    None,
                )
            };
            let ours = Request::parse(&ours).unwrap();
            assert_eq!(ours.message_type, real.message_type, "{file}");
            assert_eq!(ours.client_arch, real.client_arch, "{file}");
            assert_eq!(ours.client_ndi, real.client_ndi, "{file}");
            assert_eq!(ours.vendor_class, real.vendor_class, "{file}");
            assert_eq!(ours.user_class, real.user_class, "{file}");
            assert_eq!(
                ours.parameter_request_list, real.parameter_request_list,
                "{file}"
            );
            assert_eq!(ours.client_uuid, real.client_uuid, "{file}");
            assert_eq!(ours.client_id, real.client_id, "{file}");
            assert_eq!(ours.broadcast, real.broadcast, "{file}");
            assert_eq!(
                (ours.server_id, ours.requested_ip),
                (real.server_id, real.requested_ip)
            );
        }
    }

    #[test]
    fn os_client_sends_no_pxe_options_and_relayed_messages_carry_giaddr() {
        let relay = Ipv4Addr::new(192, 0, 2, 10);
        let m = encode(MessageType::Discover, Client::Os, MAC, 9, 3, relay, None);
        let r = Request::parse(&m).unwrap();
        assert!(r.client_arch.is_empty() && r.vendor_class.is_empty() && !r.is_ipxe());
        assert_eq!((r.giaddr, r.hops, r.secs, r.xid), (relay, 1, 3, 9));
        assert!(m.len() >= 300);
    }

    #[test]
    fn replies_decode_boot_file_from_option_67_or_the_file_field() {
        let header = ReplyHeader {
            xid: 5,
            secs: 0,
            flags: 0,
            hops: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::new(192, 0, 2, 50),
            siaddr: Ipv4Addr::new(192, 0, 2, 1),
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: [0x52, 0x54, 0, 0xee, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        let mut buf = [0u8; 600];
        let mut b = ReplyBuilder::new(&mut buf, &header, b"snponly.efi", 600).unwrap();
        b.option(opt::MESSAGE_TYPE, &[2]).unwrap();
        b.option(opt::SERVER_ID, &[192, 0, 2, 1]).unwrap();
        let n = b.finish();
        let r = decode(&buf[..n]).unwrap();
        assert_eq!(r.kind, MessageType::Offer);
        assert_eq!(r.boot_file.as_deref(), Some("snponly.efi"));
        assert_eq!(r.mac, MAC);
        assert!(decode(&buf[..100]).is_none());
        assert!(decode(&[0xff; 400]).is_none());
    }
}
