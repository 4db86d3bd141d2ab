//! The DHCP server socket: :67 on the rack interface, broadcast enabled, `IP_PKTINFO` on.
//!
//! `IP_PKTINFO` tells us, per datagram, on which interface it arrived and to which address it
//! was sent (broadcast or our unicast address). The socket is bound to the device, so in
//! practice every datagram arrived on the rack interface; we still check the interface index so
//! a misconfigured host (e.g. a bridge member) cannot make us answer on the wrong network.

use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;

use nix::sys::socket::{self, ControlMessageOwned, MsgFlags, SockaddrIn, sockopt};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::netif;

/// One received datagram and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxMeta {
    pub len: usize,
    pub src: SocketAddrV4,
    /// Destination address of the datagram (e.g. 255.255.255.255 or our unicast address).
    pub dst: Option<Ipv4Addr>,
    /// Index of the interface it arrived on.
    pub ifindex: Option<u32>,
}

pub struct DhcpSocket {
    sock: UdpSocket,
}

impl DhcpSocket {
    /// Binds 0.0.0.0:`port` on `iface` with SO_BROADCAST and IP_PKTINFO.
    pub fn bind(iface: &str, port: u16) -> anyhow::Result<Self> {
        let sock = netif::udp_socket(
            Some(iface),
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port),
            true,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot bind DHCP on {iface} UDP port {port}: {e} (is another DHCP server \
                     running? run as root or set listen.dhcp_port)"
            )
        })?;
        socket::setsockopt(&sock, sockopt::Ipv4PacketInfo, &true)?;
        let rcvbuf = grow_receive_buffer(&sock);
        tracing::info!(
            iface,
            port,
            receive_buffer_bytes = rcvbuf,
            "DHCP socket bound; a burst of up to ~{} datagrams waits in its receive buffer",
            rcvbuf / RCVBUF_PER_DATAGRAM
        );
        // The kernel reports double what was set (its bookkeeping overhead included).
        if rcvbuf < 2 * RCVBUF_WANTED {
            tracing::warn!(
                receive_buffer_bytes = rcvbuf,
                wanted = RCVBUF_WANTED,
                "the DHCP receive buffer is smaller than wanted: in a boot storm, datagrams \
                 beyond it are dropped by the kernel (counted as Udp RcvbufErrors in \
                 /proc/net/snmp); raise net.core.rmem_max to {RCVBUF_WANTED} or give rackboot \
                 CAP_NET_ADMIN"
            );
        }
        Ok(Self { sock })
    }

    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<RxMeta> {
        self.sock
            .async_io(Interest::READABLE, || {
                recv_pktinfo(self.sock.as_raw_fd(), buf)
            })
            .await
    }

    pub async fn send_to(&self, bytes: &[u8], dst: SocketAddrV4) -> io::Result<usize> {
        self.sock.send_to(bytes, dst).await
    }

    #[cfg(test)]
    pub fn local_port(&self) -> io::Result<u16> {
        Ok(self.sock.local_addr()?.port())
    }
}

/// The receive buffer asked for: 4 MiB holds a few thousand DHCP datagrams, a second or more of
/// a whole row's power-on, so a burst waits for the packet thread instead of being dropped by
/// the kernel (the default, 208 KiB, holds about two hundred).
const RCVBUF_WANTED: usize = 4 << 20;

/// The kernel's accounting per queued datagram (payload plus `sk_buff` overhead, roughly), for
/// the log.
const RCVBUF_PER_DATAGRAM: usize = 2048;

/// Asks for [`RCVBUF_WANTED`]: `SO_RCVBUFFORCE` where we hold CAP_NET_ADMIN, else `SO_RCVBUF`
/// (capped by `net.core.rmem_max`). Returns the size the kernel granted (it reports double
/// what was set, the `sk_buff` overhead included); a refusal leaves the default in place.
fn grow_receive_buffer(sock: &UdpSocket) -> usize {
    if socket::setsockopt(sock, sockopt::RcvBufForce, &RCVBUF_WANTED).is_err() {
        let _ = socket::setsockopt(sock, sockopt::RcvBuf, &RCVBUF_WANTED);
    }
    socket::getsockopt(sock, sockopt::RcvBuf).unwrap_or(0)
}

fn recv_pktinfo(fd: std::os::fd::RawFd, buf: &mut [u8]) -> io::Result<RxMeta> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::libc::in_pktinfo);
    let msg = socket::recvmsg::<SockaddrIn>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let src = msg
        .address
        .map(|a| SocketAddrV4::new(a.ip(), a.port()))
        .unwrap_or_else(|| SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    let mut meta = RxMeta {
        len: msg.bytes,
        src,
        dst: None,
        ifindex: None,
    };
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::Ipv4PacketInfo(info) = c {
                meta.dst = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
                meta.ifindex = u32::try_from(info.ipi_ifindex).ok();
            }
        }
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The socket asks for a storm-sized receive buffer: as root (the test suite's user) it gets
    /// it whatever `net.core.rmem_max` says.
    #[tokio::test]
    async fn receive_buffer_holds_a_burst() {
        let server = DhcpSocket::bind("lo", 0).unwrap();
        let granted = socket::getsockopt(&server.sock, sockopt::RcvBuf).unwrap();
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let expected = if nix::unistd::geteuid().is_root() {
            2 * RCVBUF_WANTED
        } else {
            2 * RCVBUF_WANTED.min(rmem_max)
        };
        assert!(
            granted >= expected,
            "granted {granted} bytes, expected {expected}"
        );
    }

    #[tokio::test]
    async fn receives_with_destination_and_interface() {
        let server = DhcpSocket::bind("lo", 0).unwrap();
        let port = server.local_port().unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"hello", ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 64];
        let meta = server.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..meta.len], b"hello");
        assert_eq!(meta.dst, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(
            meta.ifindex,
            Some(nix::net::if_::if_nametoindex("lo").unwrap())
        );
        assert_eq!(*meta.src.ip(), Ipv4Addr::LOCALHOST);
    }
}
