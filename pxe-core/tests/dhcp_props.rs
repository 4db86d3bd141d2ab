#![allow(clippy::unwrap_used, clippy::indexing_slicing)]
//! Property tests: decoding arbitrary bytes never panics; messages encoded by an independent
//! implementation (dhcproto) decode to the same fields with ours; replies we build decode with
//! dhcproto to what we wrote.

use std::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, Message, MessageType as MT, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use proptest::prelude::*;
use pxe_core::dhcp::wire::{self, MessageType, ReplyBuilder, ReplyHeader, Request};

fn mt(i: u8) -> (MT, MessageType) {
    match i % 5 {
        0 => (MT::Discover, MessageType::Discover),
        1 => (MT::Request, MessageType::Request),
        2 => (MT::Decline, MessageType::Decline),
        3 => (MT::Release, MessageType::Release),
        _ => (MT::Inform, MessageType::Inform),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let _ = Request::parse(&bytes);
        if let Ok(p) = wire::Packet::new_checked(&bytes[..]) {
            let _ = (p.op(), p.xid(), p.flags(), p.giaddr(), p.file());
            for o in wire::OptionIter::new(p.options()) { let _ = o; }
        }
    }

    #[test]
    fn arbitrary_options_after_a_valid_header_never_panic(opts in proptest::collection::vec(any::<u8>(), 0..1200)) {
        let mut m = vec![0u8; 240];
        m[0] = 1; m[1] = 1; m[2] = 6;
        m[236..240].copy_from_slice(&wire::MAGIC_COOKIE);
        m.extend_from_slice(&opts);
        let _ = Request::parse(&m);
    }

    #[test]
    fn dhcproto_encoded_requests_decode_identically(
        xid in any::<u32>(),
        mac in any::<[u8; 6]>(),
        broadcast in any::<bool>(),
        ciaddr in any::<u32>(),
        giaddr in any::<u32>(),
        kind in any::<u8>(),
        requested in proptest::option::of(any::<u32>()),
        server in proptest::option::of(any::<u32>()),
        arch in proptest::option::of(0u16..32),
        vendor in proptest::option::of("[A-Za-z0-9:]{1,40}"),
        hostname in proptest::option::of("[a-z0-9-]{1,30}"),
        prl in proptest::collection::vec(1u8..80, 0..12),
        max_size in proptest::option::of(576u16..1500),
    ) {
        let (theirs, ours) = mt(kind);
        let mut msg = Message::new_with_id(xid, Ipv4Addr::from(ciaddr), Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, Ipv4Addr::from(giaddr), &mac);
        if broadcast {
            msg.set_flags(v4::Flags::default().set_broadcast());
        }
        msg.opts_mut().insert(DhcpOption::MessageType(theirs));
        if let Some(r) = requested { msg.opts_mut().insert(DhcpOption::RequestedIpAddress(Ipv4Addr::from(r))); }
        if let Some(s) = server { msg.opts_mut().insert(DhcpOption::ServerIdentifier(Ipv4Addr::from(s))); }
        if let Some(a) = arch { msg.opts_mut().insert(DhcpOption::ClientSystemArchitecture(v4::Architecture::from(a))); }
        if let Some(v) = &vendor { msg.opts_mut().insert(DhcpOption::ClassIdentifier(v.as_bytes().to_vec())); }
        if let Some(h) = &hostname { msg.opts_mut().insert(DhcpOption::Hostname(h.clone())); }
        if !prl.is_empty() { msg.opts_mut().insert(DhcpOption::ParameterRequestList(prl.iter().map(|c| OptionCode::from(*c)).collect())); }
        if let Some(m) = max_size { msg.opts_mut().insert(DhcpOption::MaxMessageSize(m)); }
        let mut bytes = Vec::new();
        msg.encode(&mut Encoder::new(&mut bytes)).unwrap();

        let r = Request::parse(&bytes).unwrap();
        prop_assert_eq!(r.message_type, ours);
        prop_assert_eq!(r.xid, xid);
        prop_assert_eq!(r.mac.0, mac);
        prop_assert_eq!(r.broadcast, broadcast);
        prop_assert_eq!(r.ciaddr, Ipv4Addr::from(ciaddr));
        prop_assert_eq!(r.giaddr, Ipv4Addr::from(giaddr));
        prop_assert_eq!(r.requested_ip, requested.map(Ipv4Addr::from));
        prop_assert_eq!(r.server_id, server.map(Ipv4Addr::from));
        prop_assert_eq!(r.client_arch.as_slice(), arch.as_slice());
        prop_assert_eq!(r.vendor_class.as_slice(), vendor.as_deref().unwrap_or("").as_bytes());
        prop_assert_eq!(r.hostname.as_slice(), hostname.as_deref().unwrap_or("").as_bytes());
        let want_prl: std::collections::BTreeSet<u8> = prl.iter().copied().collect();
        let got_prl: std::collections::BTreeSet<u8> = r.parameter_request_list.iter().copied().collect();
        prop_assert_eq!(got_prl, want_prl);
        prop_assert_eq!(r.max_message_size, max_size);
    }

    #[test]
    fn replies_we_build_decode_with_dhcproto(
        xid in any::<u32>(),
        yiaddr in any::<u32>(),
        file in "[a-z0-9./]{0,100}",
        lease in any::<u32>(),
        url in "http://[a-z0-9.]{1,20}/[a-z0-9/?=&:]{0,300}",
    ) {
        let header = ReplyHeader {
            xid, secs: 0, flags: 0, hops: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED, yiaddr: Ipv4Addr::from(yiaddr),
            siaddr: Ipv4Addr::new(192, 0, 2, 1), giaddr: Ipv4Addr::UNSPECIFIED, chaddr: [0x52; 16],
        };
        let mut buf = [0u8; 1500];
        let mut b = ReplyBuilder::new(&mut buf, &header, file.as_bytes(), 1500).unwrap();
        b.option(wire::opt::MESSAGE_TYPE, &[2]).unwrap();
        b.option(wire::opt::LEASE_TIME, &lease.to_be_bytes()).unwrap();
        b.option(wire::opt::BOOTFILE_NAME, url.as_bytes()).unwrap();
        let n = b.finish();
        prop_assert!(n >= 300);
        let m = Message::decode(&mut Decoder::new(&buf[..n])).unwrap();
        prop_assert_eq!(m.xid(), xid);
        prop_assert_eq!(m.yiaddr(), Ipv4Addr::from(yiaddr));
        prop_assert_eq!(m.opts().get(OptionCode::MessageType), Some(&DhcpOption::MessageType(MT::Offer)));
        prop_assert_eq!(m.opts().get(OptionCode::AddressLeaseTime), Some(&DhcpOption::AddressLeaseTime(lease)));
        // Long URLs are split across instances (RFC 3396); dhcproto concatenates them back.
        match m.opts().get(OptionCode::BootfileName) {
            Some(DhcpOption::BootfileName(v)) => prop_assert_eq!(v.as_slice(), url.as_bytes()),
            other => prop_assert!(false, "bootfile: {:?}", other),
        }
        let fname = m.fname().unwrap_or(&[]);
        let end = fname.iter().position(|b| *b == 0).unwrap_or(fname.len());
        prop_assert_eq!(&fname[..end], file.as_bytes());
    }
}
