//! Decoding arbitrary bytes as DHCP never panics, and parsed requests survive the accessors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pxe_core::dhcp::wire::{OptionIter, Packet, Request, relay_sub_option};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::new_checked(data) {
        let _ = (p.op(), p.xid(), p.ciaddr(), p.giaddr(), p.chaddr(), p.file(), p.sname());
        for o in OptionIter::new(p.options()) {
            let _ = o;
        }
    }
    if let Ok(r) = Request::parse(data) {
        let _ = (r.is_ipxe(), r.chaddr16());
        let _ = (relay_sub_option(&r.relay_agent_info, 1), relay_sub_option(data, 2));
    }
});
