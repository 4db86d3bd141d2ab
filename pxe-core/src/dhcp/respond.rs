//! Writing the reply to one request: where it goes (RFC 2131 §4.1), its header, and the options
//! for the engine's decision (lease, boot file, PXE vendor options, relay agent echo).

use core::net::{Ipv4Addr, SocketAddrV4};

use super::server::{CLIENT_PORT, Drop, SERVER_PORT, SubnetConfig};
use super::wire::{self, MessageType, ReplyBuilder, ReplyHeader, Request, opt};
use heapless::Vec as HVec;

use crate::boot::BootDecision;

/// RFC 2131 §4.1: relay → giaddr:67; NAK without relay → broadcast; ciaddr set → unicast;
/// otherwise broadcast (we cannot ARP-inject the client's MAC from userspace).
pub(super) fn destination(req: &Request, kind: MessageType) -> SocketAddrV4 {
    if !req.giaddr.is_unspecified() {
        return SocketAddrV4::new(req.giaddr, SERVER_PORT);
    }
    if kind != MessageType::Nak && !req.ciaddr.is_unspecified() {
        return SocketAddrV4::new(req.ciaddr, CLIENT_PORT);
    }
    SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn write_reply(
    out: &mut [u8],
    req: &Request,
    subnet: &SubnetConfig,
    kind: MessageType,
    yiaddr: Ipv4Addr,
    boot: &BootDecision,
    hostname: Option<&str>,
    with_lease: bool,
) -> Result<usize, Drop> {
    let proxy = yiaddr.is_unspecified() && kind == MessageType::Offer;
    let tftp_file = match boot {
        BootDecision::Tftp { file } => file.as_bytes(),
        _ => &[],
    };
    let header = ReplyHeader {
        xid: req.xid,
        secs: 0,
        flags: if req.broadcast { 0x8000 } else { 0 },
        hops: 0,
        ciaddr: if kind == MessageType::Ack {
            req.ciaddr
        } else {
            Ipv4Addr::UNSPECIFIED
        },
        yiaddr,
        siaddr: if matches!(boot, BootDecision::None) {
            Ipv4Addr::UNSPECIFIED
        } else {
            subnet.server_ip
        },
        giaddr: req.giaddr,
        chaddr: req.chaddr16(),
    };
    let limit = req
        .max_message_size
        .map_or(wire::MIN_MAX_MESSAGE, usize::from)
        .max(wire::MIN_MAX_MESSAGE);
    let mut b = ReplyBuilder::new(out, &header, tftp_file, limit).map_err(|_| Drop::Encode)?;
    b.option(opt::MESSAGE_TYPE, &[kind.to_u8()])
        .map_err(|_| Drop::Encode)?;
    b.option(opt::SERVER_ID, &subnet.server_ip.octets())
        .map_err(|_| Drop::Encode)?;
    if kind == MessageType::Nak {
        let _ = b.option(
            opt::MESSAGE,
            b"requested address is not yours on this network",
        );
        echo_relay(&mut b, req);
        return Ok(b.finish());
    }

    // Candidate options; the parameter request list (55) decides their order (RFC 2132 §9.8),
    // then the ones a PXE client needs even if it did not ask.
    let mut cands: HVec<(u8, HVec<u8, 256>), 16> = HVec::new();
    let mut add = |code: u8, value: &[u8]| {
        let mut v = HVec::new();
        if v.extend_from_slice(value).is_ok() {
            let _ = cands.push((code, v));
        }
    };
    if !proxy {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(subnet.prefix.min(32)))
            .unwrap_or(0);
        add(opt::SUBNET_MASK, &mask.to_be_bytes());
        add(opt::BROADCAST, &subnet.broadcast().octets());
        if let Some(r) = subnet.router {
            add(opt::ROUTER, &r.octets());
        }
        if !subnet.dns.is_empty() {
            let mut v: HVec<u8, 16> = HVec::new();
            for d in &subnet.dns {
                let _ = v.extend_from_slice(&d.octets());
            }
            add(opt::DNS, &v);
        }
        if !subnet.domain.is_empty() {
            add(opt::DOMAIN_NAME, subnet.domain.as_bytes());
        }
        if let Some(h) = hostname {
            add(opt::HOSTNAME, h.as_bytes());
        }
        if with_lease {
            let secs = u32::try_from(subnet.lease_time.secs()).unwrap_or(u32::MAX);
            add(opt::LEASE_TIME, &secs.to_be_bytes());
            add(opt::RENEWAL_TIME, &(secs / 2).to_be_bytes());
            add(opt::REBINDING_TIME, &(secs / 8 * 7).to_be_bytes());
        }
    }
    if let Some(file) = boot.file() {
        if matches!(boot, BootDecision::Tftp { .. }) {
            let mut ip: heapless::String<16> = heapless::String::new();
            let _ = core::fmt::Write::write_fmt(&mut ip, format_args!("{}", subnet.server_ip));
            add(opt::TFTP_SERVER_NAME, ip.as_bytes());
        }
        add(opt::BOOTFILE_NAME, file.as_bytes());
    }
    if proxy {
        add(opt::VENDOR_CLASS, b"PXEClient");
        // PXE spec: PXE_DISCOVERY_CONTROL (6) = 8: use the boot file in this reply.
        add(opt::VENDOR_SPECIFIC, &[6, 1, 8, 255]);
        if !req.client_uuid.is_empty() {
            add(opt::CLIENT_UUID, &req.client_uuid);
        }
    } else if let Some(vc) = boot.vendor_class() {
        add(opt::VENDOR_CLASS, vc);
    }

    let mut sent: HVec<u8, 16> = HVec::new();
    for code in req.parameter_request_list.iter() {
        if let Some((c, v)) = cands.iter().find(|(c, _)| c == code)
            && !sent.contains(c)
            && b.option(*c, v).is_ok()
        {
            let _ = sent.push(*c);
        }
    }
    for (c, v) in cands.iter() {
        if !sent.contains(c) {
            let required = matches!(
                *c,
                opt::LEASE_TIME | opt::BOOTFILE_NAME | opt::VENDOR_CLASS | opt::VENDOR_SPECIFIC
            );
            if b.option(*c, v).is_err() && required {
                return Err(Drop::Encode);
            }
        }
    }
    echo_relay(&mut b, req);
    Ok(b.finish())
}

fn echo_relay(b: &mut ReplyBuilder<'_>, req: &Request) {
    // RFC 3046 §2.2: echo option 82 unchanged, as the last option.
    if !req.relay_agent_info.is_empty() && !req.giaddr.is_unspecified() {
        let _ = b.option(opt::RELAY_AGENT_INFO, &req.relay_agent_info);
    }
}
