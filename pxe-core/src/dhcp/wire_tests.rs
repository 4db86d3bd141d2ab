//! Unit tests of the DHCP wire codec.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]
use super::*;

/// A client message built by hand: header + cookie + raw option bytes.
pub(crate) fn client_msg(mac: [u8; 6], options: &[u8]) -> heapless::Vec<u8, 1024> {
    let mut v = heapless::Vec::<u8, 1024>::new();
    v.resize(OPTIONS_OFFSET, 0).unwrap();
    v[0] = 1;
    v[1] = 1;
    v[2] = 6;
    v[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    v[28..34].copy_from_slice(&mac);
    v[236..240].copy_from_slice(&MAGIC_COOKIE);
    v.extend_from_slice(options).unwrap();
    v
}

#[test]
fn parses_pxe_discover() {
    let opts = [
        53, 1, 1, // DISCOVER
        93, 4, 0, 7, 0, 9, // arch EFI x64 twice
        94, 3, 1, 3, 16, // NDI
        60, 9, b'P', b'X', b'E', b'C', b'l', b'i', b'e', b'n', b't', //
        55, 3, 1, 3, 67, //
        57, 2, 5, 192, // 1472
        77, 5, 4, b'i', b'P', b'X', b'E', // RFC 3004 form
        255,
    ];
    let m = client_msg([0x52, 0x54, 0, 0xaa, 0, 1], &opts);
    let r = Request::parse(&m).unwrap();
    assert_eq!(r.message_type, MessageType::Discover);
    assert_eq!(r.xid, 0x1234_5678);
    assert_eq!(r.mac, MacAddr([0x52, 0x54, 0, 0xaa, 0, 1]));
    assert_eq!(r.client_arch.as_slice(), &[7, 9]);
    assert_eq!(r.client_ndi, Some([1, 3, 16]));
    assert_eq!(r.vendor_class.as_slice(), b"PXEClient");
    assert_eq!(r.parameter_request_list.as_slice(), &[1, 3, 67]);
    assert_eq!(r.max_message_size, Some(1472));
    assert!(r.is_ipxe());
}

#[test]
fn ipxe_plain_user_class_and_split_options() {
    // Option 60 split over two instances (RFC 3396) and iPXE's plain-string option 77.
    let opts = [
        53, 1, 3, 60, 4, b'H', b'T', b'T', b'P', 60, 6, b'C', b'l', b'i', b'e', b'n', b't', 77, 4,
        b'i', b'P', b'X', b'E', 50, 4, 192, 0, 2, 50, 255,
    ];
    let r = Request::parse(&client_msg([2, 0, 0, 0, 0, 1], &opts)).unwrap();
    assert_eq!(r.vendor_class.as_slice(), b"HTTPClient");
    assert!(r.is_ipxe());
    assert_eq!(r.requested_ip, Some(Ipv4Addr::new(192, 0, 2, 50)));
}

#[test]
fn overloaded_file_field_is_read() {
    let mut m = client_msg([2, 0, 0, 0, 0, 2], &[52, 1, 1, 255]);
    // Message type lives in `file`.
    m[108..112].copy_from_slice(&[53, 1, 1, 255]);
    let r = Request::parse(&m).unwrap();
    assert_eq!(r.message_type, MessageType::Discover);
}

#[test]
fn malformed_inputs_are_errors() {
    assert_eq!(Request::parse(&[0u8; 10]), Err(WireError::Truncated));
    let mut m = client_msg([2, 0, 0, 0, 0, 3], &[53, 1, 1, 255]);
    m[236] = 0;
    assert_eq!(Request::parse(&m), Err(WireError::BadMagic));
    for opts in [
        &[53, 1, 1, 50, 3, 1, 2, 3, 255][..],
        &[53, 1, 1, 94, 2, 1, 2, 255][..],
        &[53, 1, 1, 93, 3, 0, 0, 7][..],
        &[53, 9][..],
        &[12, 3, 1, 2, 255][..],
    ] {
        assert!(
            Request::parse(&client_msg([2, 0, 0, 0, 0, 3], opts)).is_err(),
            "{opts:?}"
        );
    }
    assert_eq!(
        Request::parse(&client_msg([2, 0, 0, 0, 0, 3], &[255])),
        Err(WireError::NoMessageType)
    );
}

#[test]
fn reply_is_padded_and_long_options_split() {
    let mut buf = [0xffu8; 1500];
    let header = ReplyHeader {
        xid: 7,
        secs: 0,
        flags: 0x8000,
        hops: 0,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        yiaddr: Ipv4Addr::new(192, 0, 2, 9),
        siaddr: Ipv4Addr::new(192, 0, 2, 1),
        giaddr: Ipv4Addr::UNSPECIFIED,
        chaddr: [0; 16],
    };
    let mut b = ReplyBuilder::new(&mut buf, &header, b"snponly.efi", 1500).unwrap();
    b.option(opt::MESSAGE_TYPE, &[2]).unwrap();
    let n = b.finish();
    assert_eq!(n, MIN_REPLY_LEN);
    assert!(buf[244..300].iter().all(|b| *b == 0));
    let p = Packet::new_checked(&buf[..n]).unwrap();
    assert_eq!(p.op(), 2);
    assert_eq!(p.yiaddr(), Ipv4Addr::new(192, 0, 2, 9));
    assert_eq!(&p.file()[..11], b"snponly.efi");

    let long = [b'a'; 300];
    let mut b = ReplyBuilder::new(&mut buf, &header, b"", 1500).unwrap();
    b.option(opt::MESSAGE_TYPE, &[2]).unwrap();
    b.option(opt::BOOTFILE_NAME, &long).unwrap();
    let n = b.finish();
    let p = Packet::new_checked(&buf[..n]).unwrap();
    let total: usize = OptionIter::new(p.options())
        .map(|o| o.unwrap())
        .filter(|(c, _)| *c == opt::BOOTFILE_NAME)
        .map(|(_, v)| v.len())
        .sum();
    assert_eq!(total, 300);
    let mut b = ReplyBuilder::new(&mut buf, &header, b"", 300).unwrap();
    assert_eq!(
        b.option(opt::BOOTFILE_NAME, &long),
        Err(WireError::BufferTooSmall)
    );
}

#[test]
fn relay_sub_options_are_found_and_truncation_is_refused() {
    // Circuit ID "eth7", Remote ID "sw1".
    let raw = [1, 4, b'e', b't', b'h', b'7', 2, 3, b's', b'w', b'1'];
    assert_eq!(relay_sub_option(&raw, 1), Some(&b"eth7"[..]));
    assert_eq!(relay_sub_option(&raw, 2), Some(&b"sw1"[..]));
    assert_eq!(relay_sub_option(&raw, 9), None);
    assert_eq!(relay_sub_option(&raw[..9], 2), None, "value cut short");
    assert_eq!(relay_sub_option(&[1], 1), None);
    assert_eq!(relay_sub_option(&[], 1), None);
    // Parsed out of a whole request.
    let mut opts = heapless::Vec::<u8, 64>::new();
    opts.extend_from_slice(&[53, 1, 3, 82, raw.len() as u8])
        .unwrap();
    opts.extend_from_slice(&raw).unwrap();
    opts.push(255).unwrap();
    let req = Request::parse(&client_msg([2, 0, 0, 0, 0, 1], &opts)).unwrap();
    assert_eq!(
        relay_sub_option(&req.relay_agent_info, 1),
        Some(&b"eth7"[..])
    );
}
