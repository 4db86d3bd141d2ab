//! Shared fixtures for the benches and the allocation test.
#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing)]

use std::net::{Ipv4Addr, SocketAddrV4};

use pxe_core::boot::BootPolicy;
use pxe_core::dhcp::server::{
    DhcpServer, Inventory, Mode, Reservation, RxInfo, ServerConfig, SubnetConfig,
};
use pxe_core::dhcp::wire::{MAGIC_COOKIE, OPTIONS_OFFSET};
use pxe_core::{Duration, MacAddr};

pub struct OneNode;
impl Inventory for OneNode {
    fn reservation(&self, mac: MacAddr) -> Option<Reservation<'_>> {
        (mac.0 == [0x52, 0x54, 0, 0xaa, 0, 1]).then_some(Reservation {
            ip: Ipv4Addr::new(192, 0, 2, 50),
            hostname: Some("nid0001"),
            boot_file: None,
        })
    }
    fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        ip == Ipv4Addr::new(192, 0, 2, 50)
    }
}

pub fn server() -> DhcpServer {
    DhcpServer::new(ServerConfig {
        subnets: [SubnetConfig {
            network: Ipv4Addr::new(192, 0, 2, 0),
            prefix: 24,
            server_ip: Ipv4Addr::new(192, 0, 2, 1),
            router: Some(Ipv4Addr::new(192, 0, 2, 254)),
            dns: heapless::Vec::from_slice(&[Ipv4Addr::new(192, 0, 2, 1)]).unwrap(),
            domain: heapless::String::try_from("rack.example").unwrap(),
            lease_time: Duration::from_secs(3600),
            pool: Some((Ipv4Addr::new(192, 0, 2, 128), Ipv4Addr::new(192, 0, 2, 254))),
        }]
        .into_iter()
        .collect(),
        mode: Mode::Authoritative,
        boot: BootPolicy::new("http://192.0.2.1").unwrap(),
        offer_hold: Duration::from_secs(30),
        decline_quarantine: Duration::from_secs(600),
    })
}

pub const RX: RxInfo = RxInfo {
    src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
    local_ip: Ipv4Addr::new(192, 0, 2, 1),
};

/// An EDK2-like PXE DISCOVER from 52:54:00:aa:00:01.
pub fn discover() -> Vec<u8> {
    let mut v = vec![0u8; OPTIONS_OFFSET];
    v[0] = 1;
    v[1] = 1;
    v[2] = 6;
    v[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    v[10] = 0x80;
    v[28..34].copy_from_slice(&[0x52, 0x54, 0, 0xaa, 0, 1]);
    v[236..240].copy_from_slice(&MAGIC_COOKIE);
    v.extend_from_slice(&[53, 1, 1, 57, 2, 5, 192, 93, 2, 0, 7, 94, 3, 1, 3, 0]);
    v.extend_from_slice(&[55, 9, 1, 2, 3, 4, 5, 6, 12, 13, 67]);
    v.extend_from_slice(&[60, 32]);
    v.extend_from_slice(b"PXEClient:Arch:00007:UNDI:003000");
    v.extend_from_slice(&[97, 17, 0]);
    v.extend_from_slice(&[7u8; 16]);
    v.push(255);
    v
}
