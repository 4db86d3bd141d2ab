//! DHCP engine scenarios. Client messages are built with `dhcproto` (an independent encoder)
//! and replies are decoded with it too, so the engine is checked against a second implementation.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{self, DhcpOption, Message, MessageType as MT, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use pxe_core::boot::BootPolicy;
use pxe_core::dhcp::server::{
    DhcpServer, Drop, Inventory, LeaseChange, LeaseKind, Mode, Reservation, RxInfo, ServerConfig,
    SubnetConfig,
};
use pxe_core::{Duration, Instant, MacAddr};

const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

#[derive(Default)]
struct Inv(HashMap<MacAddr, (Ipv4Addr, String)>);

impl Inventory for Inv {
    fn reservation(&self, mac: MacAddr) -> Option<Reservation<'_>> {
        self.0.get(&mac).map(|(ip, h)| Reservation {
            ip: *ip,
            hostname: Some(h),
            boot_file: None,
        })
    }
    fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        self.0.values().any(|(r, _)| *r == ip)
    }
}

fn subnet(net: [u8; 4], server: Ipv4Addr, pool: Option<(Ipv4Addr, Ipv4Addr)>) -> SubnetConfig {
    SubnetConfig {
        network: Ipv4Addr::from(net),
        prefix: 24,
        server_ip: server,
        router: Some(Ipv4Addr::new(net[0], net[1], net[2], 254)),
        dns: heapless::Vec::from_slice(&[server]).unwrap(),
        domain: heapless::String::try_from("rack.example").unwrap(),
        lease_time: Duration::from_secs(3600),
        pool,
    }
}

fn server(mode: Mode) -> DhcpServer {
    DhcpServer::new(ServerConfig {
        subnets: [
            subnet(
                [192, 0, 2, 0],
                SERVER,
                Some((Ipv4Addr::new(192, 0, 2, 128), Ipv4Addr::new(192, 0, 2, 130))),
            ),
            subnet(
                [198, 51, 100, 0],
                SERVER,
                Some((
                    Ipv4Addr::new(198, 51, 100, 100),
                    Ipv4Addr::new(198, 51, 100, 200),
                )),
            ),
        ]
        .into_iter()
        .collect(),
        mode,
        boot: BootPolicy::new("http://192.0.2.1").unwrap(),
        offer_hold: Duration::from_secs(30),
        decline_quarantine: Duration::from_secs(600),
    })
}

fn mac(n: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0xaa, 0, n])
}

fn msg(t: MT, m: MacAddr, opts: Vec<DhcpOption>) -> Message {
    let mut chaddr = [0u8; 6];
    chaddr.copy_from_slice(&m.0);
    let mut msg = Message::new_with_id(
        0xdead_beef,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &chaddr,
    );
    msg.set_flags(v4::Flags::default().set_broadcast());
    msg.opts_mut().insert(DhcpOption::MessageType(t));
    for o in opts {
        msg.opts_mut().insert(o);
    }
    msg
}

fn enc(m: &Message) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode(&mut Encoder::new(&mut v)).unwrap();
    v
}

struct Out {
    msg: Message,
    dst: SocketAddrV4,
    len: usize,
    change: Option<LeaseChange>,
}

fn run(s: &mut DhcpServer, inv: &Inv, m: &Message, now: u64) -> Result<Out, Drop> {
    let rx = RxInfo {
        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        local_ip: SERVER,
    };
    let mut out = [0u8; 1500];
    let h = s.handle(Instant::from_secs(now), &rx, &enc(m), inv, &mut out)?;
    let t = h.reply.expect("a reply");
    let msg = Message::decode(&mut Decoder::new(&out[..t.len])).unwrap();
    Ok(Out {
        msg,
        dst: t.dst,
        len: t.len,
        change: h.lease_change,
    })
}

fn mtype(m: &Message) -> MT {
    match m.opts().get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(t)) => *t,
        other => panic!("no message type: {other:?}"),
    }
}

fn bootfile(m: &Message) -> String {
    match m.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(f)) => String::from_utf8(f.clone()).unwrap(),
        other => panic!("no bootfile: {other:?}"),
    }
}

fn pxe_opts(arch: u16, vc: &str) -> Vec<DhcpOption> {
    vec![
        DhcpOption::ClientSystemArchitecture(v4::Architecture::from(arch)),
        DhcpOption::ClassIdentifier(vc.as_bytes().to_vec()),
        DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::BootfileName,
            OptionCode::TFTPServerName,
        ]),
    ]
}

#[test]
fn static_node_full_dora_with_uefi_pxe_then_ipxe() {
    let mut s = server(Mode::Authoritative);
    let mut inv = Inv::default();
    inv.0
        .insert(mac(1), (Ipv4Addr::new(192, 0, 2, 50), "nid0001".into()));

    let offer = run(
        &mut s,
        &inv,
        &msg(
            MT::Discover,
            mac(1),
            pxe_opts(7, "PXEClient:Arch:00007:UNDI:003016"),
        ),
        10,
    )
    .unwrap();
    assert_eq!(mtype(&offer.msg), MT::Offer);
    assert_eq!(offer.msg.opcode(), Opcode::BootReply);
    assert_eq!(offer.msg.yiaddr(), Ipv4Addr::new(192, 0, 2, 50));
    assert_eq!(offer.msg.siaddr(), SERVER);
    assert_eq!(offer.dst, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert!(offer.len >= 300, "BOOTP minimum");
    assert_eq!(bootfile(&offer.msg), "snponly.efi");
    assert_eq!(&offer.msg.fname().unwrap()[..11], b"snponly.efi");
    // Never PXEClient without 43 (EDK2 would go to BINL on 4011).
    assert!(offer.msg.opts().get(OptionCode::ClassIdentifier).is_none());
    assert!(offer.change.is_none(), "an OFFER binds nothing");

    let mut req_opts = pxe_opts(7, "PXEClient:Arch:00007:UNDI:003016");
    req_opts.push(DhcpOption::ServerIdentifier(SERVER));
    req_opts.push(DhcpOption::RequestedIpAddress(Ipv4Addr::new(192, 0, 2, 50)));
    let ack = run(&mut s, &inv, &msg(MT::Request, mac(1), req_opts), 11).unwrap();
    assert_eq!(mtype(&ack.msg), MT::Ack);
    assert_eq!(ack.msg.yiaddr(), Ipv4Addr::new(192, 0, 2, 50));
    match ack.change {
        Some(LeaseChange::Bound(l)) => {
            assert_eq!(l.kind, LeaseKind::Static);
            assert_eq!(l.expires, Instant::from_secs(11 + 3600));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(ack.msg.opts().get(OptionCode::Hostname), Some(DhcpOption::Hostname(h)) if h == "nid0001")
    );

    // iPXE's own DHCP: user class iPXE → boot script URL with the MAC written in.
    let mut ipxe = pxe_opts(7, "PXEClient:Arch:00007:UNDI:003010");
    ipxe.push(DhcpOption::UserClass(b"iPXE".to_vec()));
    let offer = run(&mut s, &inv, &msg(MT::Discover, mac(1), ipxe), 20).unwrap();
    assert_eq!(
        bootfile(&offer.msg),
        "http://192.0.2.1/boot/v1/bootscript?mac=52:54:00:aa:00:01"
    );
}

#[test]
fn option_order_follows_parameter_request_list() {
    let mut s = server(Mode::Authoritative);
    let inv = Inv::default();
    let mut opts = pxe_opts(0, "PXEClient:Arch:00000");
    opts.retain(|o| !matches!(o, DhcpOption::ParameterRequestList(_)));
    opts.push(DhcpOption::ParameterRequestList(vec![
        OptionCode::BootfileName,
        OptionCode::Router,
    ]));
    let m = msg(MT::Discover, mac(9), opts);
    let rx = RxInfo {
        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        local_ip: SERVER,
    };
    let mut out = [0u8; 1500];
    let h = s
        .handle(Instant::from_secs(1), &rx, &enc(&m), &inv, &mut out)
        .unwrap();
    let len = h.reply.unwrap().len;
    let codes: Vec<u8> = pxe_core::dhcp::wire::OptionIter::new(&out[240..len])
        .map(|o| o.unwrap().0)
        .collect();
    assert_eq!(&codes[..4], &[53, 54, 67, 3]);
    assert_eq!(
        bootfile(&Message::decode(&mut Decoder::new(&out[..len])).unwrap()),
        "undionly.kpxe"
    );
}

#[test]
fn unknown_client_gets_pool_address_and_keeps_it() {
    let mut s = server(Mode::Authoritative);
    let mut inv = Inv::default();
    // .128 is reserved for a node: the pool must skip it.
    inv.0
        .insert(mac(7), (Ipv4Addr::new(192, 0, 2, 128), "nid0007".into()));
    let o = run(&mut s, &inv, &msg(MT::Discover, mac(2), vec![]), 1).unwrap();
    assert_eq!(o.msg.yiaddr(), Ipv4Addr::new(192, 0, 2, 129));
    // A plain OS client gets no boot information.
    assert!(o.msg.opts().get(OptionCode::BootfileName).is_none());
    let req = msg(
        MT::Request,
        mac(2),
        vec![
            DhcpOption::ServerIdentifier(SERVER),
            DhcpOption::RequestedIpAddress(Ipv4Addr::new(192, 0, 2, 129)),
        ],
    );
    let a = run(&mut s, &inv, &req, 2).unwrap();
    assert_eq!(mtype(&a.msg), MT::Ack);
    assert!(matches!(a.change, Some(LeaseChange::Bound(l)) if l.kind == LeaseKind::Dynamic));
    // Another client cannot take it.
    let steal = msg(
        MT::Request,
        mac(3),
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(
            192, 0, 2, 129,
        ))],
    );
    assert_eq!(mtype(&run(&mut s, &inv, &steal, 3).unwrap().msg), MT::Nak);
    // The same client DISCOVERing again gets the same address.
    let o = run(&mut s, &inv, &msg(MT::Discover, mac(2), vec![]), 4).unwrap();
    assert_eq!(o.msg.yiaddr(), Ipv4Addr::new(192, 0, 2, 129));
    // Exhaustion is a counted drop, not a panic.
    run(&mut s, &inv, &msg(MT::Discover, mac(4), vec![]), 5).unwrap();
    assert_eq!(
        run(&mut s, &inv, &msg(MT::Discover, mac(5), vec![]), 5).err(),
        Some(Drop::PoolExhausted)
    );
}

#[test]
fn request_states_and_destinations() {
    let mut s = server(Mode::Authoritative);
    let mut inv = Inv::default();
    inv.0
        .insert(mac(1), (Ipv4Addr::new(192, 0, 2, 50), "n1".into()));
    // SELECTING for another server: silently ignored.
    let other = msg(
        MT::Request,
        mac(1),
        vec![
            DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 0, 2, 9)),
            DhcpOption::RequestedIpAddress(Ipv4Addr::new(192, 0, 2, 50)),
        ],
    );
    assert_eq!(run(&mut s, &inv, &other, 1).err(), Some(Drop::NotForUs));
    // INIT-REBOOT with a wrong address: NAK, broadcast.
    let wrong = msg(
        MT::Request,
        mac(1),
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 5))],
    );
    let n = run(&mut s, &inv, &wrong, 1).unwrap();
    assert_eq!(mtype(&n.msg), MT::Nak);
    assert_eq!(n.dst, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    // RENEWING: ciaddr set, unicast back to it.
    let mut renew = msg(MT::Request, mac(1), vec![]);
    renew.set_ciaddr(Ipv4Addr::new(192, 0, 2, 50));
    let a = run(&mut s, &inv, &renew, 2).unwrap();
    assert_eq!(mtype(&a.msg), MT::Ack);
    assert_eq!(a.dst, SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 50), 68));
    // INFORM: ACK without a lease.
    let mut inform = msg(MT::Inform, mac(8), vec![]);
    inform.set_ciaddr(Ipv4Addr::new(192, 0, 2, 77));
    let a = run(&mut s, &inv, &inform, 3).unwrap();
    assert_eq!(mtype(&a.msg), MT::Ack);
    assert_eq!(a.msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(a.msg.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert!(a.change.is_none());
}

#[test]
fn relay_uses_giaddr_subnet_and_echoes_option_82() {
    let mut s = server(Mode::Authoritative);
    let inv = Inv::default();
    let mut m = msg(MT::Discover, mac(3), vec![]);
    m.set_giaddr(Ipv4Addr::new(198, 51, 100, 1));
    m.set_hops(1);
    let mut raw = enc(&m);
    // Append option 82 (circuit id "port7") before END by hand: dhcproto's relay type is strict.
    let end = raw.iter().rposition(|b| *b == 255).unwrap();
    raw.splice(end..end, [82u8, 7, 1, 5, b'p', b'o', b'r', b't', b'7']);
    let rx = RxInfo {
        src: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 67),
        local_ip: SERVER,
    };
    let mut out = [0u8; 1500];
    let h = s
        .handle(Instant::from_secs(1), &rx, &raw, &inv, &mut out)
        .unwrap();
    let t = h.reply.unwrap();
    assert_eq!(t.dst, SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 67));
    let r = pxe_core::dhcp::wire::Packet::new_checked(&out[..t.len]).unwrap();
    assert_eq!(r.yiaddr(), Ipv4Addr::new(198, 51, 100, 100));
    assert_eq!(r.giaddr(), Ipv4Addr::new(198, 51, 100, 1));
    let opts: Vec<(u8, Vec<u8>)> = pxe_core::dhcp::wire::OptionIter::new(r.options())
        .map(|o| o.map(|(c, v)| (c, v.to_vec())).unwrap())
        .collect();
    assert_eq!(
        opts.last().unwrap(),
        &(82u8, vec![1, 5, b'p', b'o', b'r', b't', b'7'])
    );
    // A relay for an unknown subnet: counted drop.
    let mut m = msg(MT::Discover, mac(3), vec![]);
    m.set_giaddr(Ipv4Addr::new(203, 0, 113, 1));
    let rx = RxInfo {
        src: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 67),
        local_ip: SERVER,
    };
    assert_eq!(
        s.handle(Instant::from_secs(1), &rx, &enc(&m), &inv, &mut out)
            .err(),
        Some(Drop::NoSubnet)
    );
}

#[test]
fn decline_quarantines_and_release_frees() {
    let mut s = server(Mode::Authoritative);
    let inv = Inv::default();
    let o = run(&mut s, &inv, &msg(MT::Discover, mac(2), vec![]), 1).unwrap();
    let ip = o.msg.yiaddr();
    let rx = RxInfo {
        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        local_ip: SERVER,
    };
    let mut out = [0u8; 1500];
    let decline = msg(
        MT::Decline,
        mac(2),
        vec![
            DhcpOption::ServerIdentifier(SERVER),
            DhcpOption::RequestedIpAddress(ip),
        ],
    );
    let h = s
        .handle(Instant::from_secs(2), &rx, &enc(&decline), &inv, &mut out)
        .unwrap();
    assert!(h.reply.is_none());
    assert!(matches!(h.lease_change, Some(LeaseChange::Declined { ip: d, .. }) if d == ip));
    let o = run(&mut s, &inv, &msg(MT::Discover, mac(2), vec![]), 3).unwrap();
    assert_ne!(o.msg.yiaddr(), ip, "a declined address is quarantined");
    let mut release = msg(
        MT::Release,
        mac(2),
        vec![DhcpOption::ServerIdentifier(SERVER)],
    );
    release.set_ciaddr(o.msg.yiaddr());
    let h = s
        .handle(Instant::from_secs(4), &rx, &enc(&release), &inv, &mut out)
        .unwrap();
    assert!(matches!(h.lease_change, Some(LeaseChange::Released { .. })));
}

#[test]
fn http_boot_and_proxy_mode() {
    let mut s = server(Mode::Authoritative);
    let inv = Inv::default();
    let o = run(
        &mut s,
        &inv,
        &msg(
            MT::Discover,
            mac(6),
            pxe_opts(16, "HTTPClient:Arch:00016:UNDI:003001"),
        ),
        1,
    )
    .unwrap();
    assert_eq!(bootfile(&o.msg), "http://192.0.2.1/ipxe/snponly.efi");
    assert!(
        matches!(o.msg.opts().get(OptionCode::ClassIdentifier), Some(DhcpOption::ClassIdentifier(v)) if v == b"HTTPClient")
    );

    let mut p = server(Mode::Proxy);
    let o = run(
        &mut p,
        &inv,
        &msg(MT::Discover, mac(6), pxe_opts(7, "PXEClient:Arch:00007")),
        1,
    )
    .unwrap();
    assert_eq!(o.msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(bootfile(&o.msg), "snponly.efi");
    // proxyDHCP: PXEClient always with 43.
    assert!(o.msg.opts().get(OptionCode::ClassIdentifier).is_some());
    assert!(o.msg.opts().get(OptionCode::VendorExtensions).is_some());
    assert!(o.msg.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert!(matches!(
        run(&mut p, &inv, &msg(MT::Discover, mac(7), vec![]), 1).err(),
        Some(Drop::Ignored(_))
    ));
}

#[test]
fn hostile_bytes_are_drops() {
    let mut s = server(Mode::Authoritative);
    let inv = Inv::default();
    let rx = RxInfo {
        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        local_ip: SERVER,
    };
    let mut out = [0u8; 1500];
    for bad in [&[][..], &[1u8; 100][..], &[0u8; 300][..]] {
        assert!(matches!(
            s.handle(Instant::ZERO, &rx, bad, &inv, &mut out),
            Err(Drop::Malformed(_))
        ));
    }
    // A BOOTREPLY is not for a server.
    let mut m = msg(MT::Offer, mac(1), vec![]);
    m.set_opcode(Opcode::BootReply);
    assert_eq!(
        s.handle(Instant::ZERO, &rx, &enc(&m), &inv, &mut out).err(),
        Some(Drop::NotBootRequest)
    );
}
