//! The engine handles arbitrary datagrams (raw, or with a valid header and cookie forced on)
//! without panicking, and every reply it writes parses back.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};

use libfuzzer_sys::fuzz_target;
use pxe_core::boot::BootPolicy;
use pxe_core::dhcp::server::{DhcpServer, Inventory, Mode, Reservation, RxInfo, ServerConfig, SubnetConfig};
use pxe_core::dhcp::fixed_pool::FixedPool;
use pxe_core::dhcp::pool::AddressPool;
use pxe_core::dhcp::wire::Packet;
use pxe_core::{Duration, Instant, MacAddr};

struct Inv;
impl Inventory for Inv {
    fn reservation(&self, mac: MacAddr) -> Option<Reservation<'_>> {
        (mac.0[5] == 1).then_some(Reservation { ip: Ipv4Addr::new(192, 0, 2, 50), hostname: Some("n1"), boot_file: None })
    }
    fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        ip == Ipv4Addr::new(192, 0, 2, 50)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let subnet = SubnetConfig {
        network: Ipv4Addr::new(192, 0, 2, 0),
        prefix: 24,
        server_ip: Ipv4Addr::new(192, 0, 2, 1),
        router: None,
        dns: heapless::Vec::new(),
        domain: Default::default(),
        lease_time: Duration::from_secs(60),
        pool: Some((Ipv4Addr::new(192, 0, 2, 128), Ipv4Addr::new(192, 0, 2, 131))),
    };
    let Ok(boot) = BootPolicy::new("http://192.0.2.1") else { return };
    let config = ServerConfig {
        subnets: [subnet].into_iter().collect(),
        mode: if mode & 1 == 0 { Mode::Authoritative } else { Mode::Proxy },
        boot,
        offer_hold: Duration::from_secs(5),
        decline_quarantine: Duration::from_secs(10),
    };
    // Bit 2 picks the fixed-storage pool (the no-allocator build's) over the heap one.
    if mode & 4 == 0 {
        run(DhcpServer::new(config), mode, rest);
    } else {
        run(DhcpServer::<FixedPool<4>>::fixed(config), mode, rest);
    }
});

fn run<P: AddressPool>(mut s: DhcpServer<P>, mode: u8, rest: &[u8]) {
    let rx = RxInfo { src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68), local_ip: Ipv4Addr::new(192, 0, 2, 1) };
    let mut out = [0u8; 1500];
    // Feed the input as several datagrams, with time moving on.
    for (i, chunk) in rest.chunks(300).enumerate() {
        let mut pkt = chunk.to_vec();
        if mode & 2 != 0 && pkt.len() >= 240 {
            pkt[0] = 1;
            pkt[1] = 1;
            pkt[2] = 6;
            pkt[236..240].copy_from_slice(&[99, 130, 83, 99]);
        }
        if let Ok(h) = s.handle(Instant::from_secs(i as u64 * 7), &rx, &pkt, &Inv, &mut out) {
            if let Some(t) = h.reply {
                assert!(t.len >= 300 && t.len <= out.len());
                assert!(Packet::new_checked(&out[..t.len]).is_ok());
            }
        }
    }
}
