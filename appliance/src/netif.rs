//! The rack interface: its IPv4 address and the UDP sockets bound to it.
//!
//! Owns: interface addresses, device-bound UDP sockets and TCP listeners. May call: nothing of
//! ours.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::bail;
use ipnet::Ipv4Net;
use socket2::{Domain, Protocol, Socket, Type};

/// An interface and its (first) IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddr {
    pub name: String,
    pub addr: Ipv4Addr,
    pub net: Ipv4Net,
}

/// Looks up `name`'s first IPv4 address. The errors name the flag to fix.
pub fn ipv4_of(name: &str) -> anyhow::Result<InterfaceAddr> {
    let mut seen = Vec::new();
    let mut found_iface = false;
    for ifa in nix::ifaddrs::getifaddrs()? {
        if !seen.contains(&ifa.interface_name) {
            seen.push(ifa.interface_name.clone());
        }
        if ifa.interface_name != name {
            continue;
        }
        found_iface = true;
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let (Some(addr), Some(mask)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) else {
            continue;
        };
        let addr = addr.ip();
        let prefix = u8::try_from(u32::from(mask.ip()).leading_ones()).unwrap_or(32);
        let net = Ipv4Net::new(addr, prefix)?.trunc();
        return Ok(InterfaceAddr {
            name: name.to_owned(),
            addr,
            net,
        });
    }
    if !found_iface {
        bail!(
            "interface {name:?} does not exist (--interface / RACKBOOT_INTERFACE); interfaces here: {}",
            seen.join(", ")
        );
    }
    bail!(
        "interface {name:?} has no IPv4 address: give it the rack address first \
         (e.g. `ip addr add 192.0.2.1/24 dev {name}`) or choose another --interface"
    )
}

/// Whether an interface called `name` exists (with or without an address yet: a management
/// interface may still be waiting for its DHCP lease).
pub fn exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

/// A listening TCP socket on `bind`, bound to device `iface` when given (SO_BINDTODEVICE: only
/// connections arriving through that interface reach it, whatever address `bind` names; two
/// such listeners on different devices may share a port), with SO_REUSEADDR, ready for tokio.
pub fn tcp_listener(iface: Option<&str>, bind: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let domain = match bind {
        SocketAddr::V4(_) => Domain::IPV4,
        SocketAddr::V6(_) => Domain::IPV6,
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if let Some(iface) = iface {
        sock.bind_device(Some(iface.as_bytes()))?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&bind.into())?;
    sock.listen(1024)?;
    tokio::net::TcpListener::from_std(sock.into())
}

/// Every IPv4 address of this host (empty if the list cannot be read).
pub fn local_ipv4s() -> Vec<Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .map(|list| {
            list.filter_map(|ifa| ifa.address?.as_sockaddr_in().map(|a| a.ip()))
                .collect()
        })
        .unwrap_or_default()
}

/// A non-blocking UDP socket bound to `bind` on device `iface` (SO_BINDTODEVICE), with
/// SO_REUSEADDR and optionally SO_BROADCAST, ready for tokio.
pub fn udp_socket(
    iface: Option<&str>,
    bind: SocketAddrV4,
    broadcast: bool,
) -> io::Result<tokio::net::UdpSocket> {
    let sock = udp_bound(iface, bind, broadcast, None)?;
    tokio::net::UdpSocket::from_std(sock)
}

/// A blocking UDP socket bound like [`udp_socket`], for a thread that reads it with a timeout
/// (`wake`: how long a read waits before the thread looks at its shutdown token again).
pub fn udp_socket_blocking(
    iface: Option<&str>,
    bind: SocketAddrV4,
    wake: std::time::Duration,
) -> io::Result<std::net::UdpSocket> {
    udp_bound(iface, bind, false, Some(wake))
}

fn udp_bound(
    iface: Option<&str>,
    bind: SocketAddrV4,
    broadcast: bool,
    blocking: Option<std::time::Duration>,
) -> io::Result<std::net::UdpSocket> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    if broadcast {
        sock.set_broadcast(true)?;
    }
    if let Some(iface) = iface {
        // Replies to 255.255.255.255 must leave through the rack interface, and we must not
        // answer DHCP on any other interface of the appliance.
        sock.bind_device(Some(iface.as_bytes()))?;
    }
    match blocking {
        Some(wake) => sock.set_read_timeout(Some(wake))?,
        None => sock.set_nonblocking(true)?,
    }
    sock.bind(&SocketAddr::V4(bind).into())?;
    Ok(sock.into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn loopback_has_an_address_and_unknown_names_are_explained() {
        let lo = ipv4_of("lo").unwrap();
        assert_eq!(lo.addr, Ipv4Addr::LOCALHOST);
        assert_eq!(lo.net.prefix_len(), 8);
        let err = ipv4_of("nonexistent0").unwrap_err().to_string();
        assert!(err.contains("--interface") && err.contains("lo"), "{err}");
    }
}
