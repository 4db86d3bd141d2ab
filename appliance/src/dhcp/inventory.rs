//! The engine's view of the inventory: MAC → static reservation, and the set of reserved IPs.
//!
//! Built from SMD EthernetInterfaces (as coresmd does: a node's MAC gets its `IPAddresses[0]`)
//! and rebuilt whenever the store reports an inventory change. Lookups are O(1) so the engine's
//! hot path never touches SQLite.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use pxe_core::MacAddr;

/// A static reservation as the DHCP service needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticLease {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub hostname: String,
    pub xname: String,
    /// Per-node boot file override (file name or URL), if the inventory sets one.
    pub boot_file: Option<String>,
}

/// An immutable snapshot of the reservations.
#[derive(Debug, Default, Clone)]
pub struct InventoryView {
    by_mac: HashMap<MacAddr, StaticLease>,
    reserved_ips: HashSet<Ipv4Addr>,
    by_ip: HashMap<Ipv4Addr, MacAddr>,
}

impl InventoryView {
    pub fn new(leases: impl IntoIterator<Item = StaticLease>) -> Self {
        let mut view = InventoryView::default();
        for lease in leases {
            if let Some(other) = view.by_ip.get(&lease.ip) {
                // Two interfaces claim one address: the first wins, and the conflict is loud,
                // because handing the same IP to two nodes breaks both.
                tracing::warn!(ip = %lease.ip, mac = %lease.mac, other = %other, "two EthernetInterfaces reserve the same IP; ignoring the second");
                continue;
            }
            view.reserved_ips.insert(lease.ip);
            view.by_ip.insert(lease.ip, lease.mac);
            view.by_mac.insert(lease.mac, lease);
        }
        view
    }

    pub fn get(&self, mac: &MacAddr) -> Option<&StaticLease> {
        self.by_mac.get(mac)
    }

    pub fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        self.reserved_ips.contains(&ip)
    }

    pub fn len(&self) -> usize {
        self.by_mac.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn lease(mac: &str, ip: [u8; 4]) -> StaticLease {
        StaticLease {
            mac: mac.parse().unwrap(),
            ip: Ipv4Addr::from(ip),
            hostname: "nid0001".into(),
            xname: "x1000c0s0b0n0".into(),
            boot_file: None,
        }
    }

    #[test]
    fn lookups_and_conflicts() {
        let v = InventoryView::new([
            lease("52:54:00:00:00:01", [192, 0, 2, 50]),
            lease("52:54:00:00:00:02", [192, 0, 2, 50]),
            lease("52:54:00:00:00:03", [192, 0, 2, 51]),
        ]);
        assert_eq!(v.len(), 2);
        assert_eq!(
            v.get(&"52:54:00:00:00:01".parse().unwrap()).unwrap().ip,
            Ipv4Addr::new(192, 0, 2, 50)
        );
        assert!(v.get(&"52:54:00:00:00:02".parse().unwrap()).is_none());
        assert!(v.is_reserved(Ipv4Addr::new(192, 0, 2, 51)));
        assert!(!v.is_reserved(Ipv4Addr::new(192, 0, 2, 52)));
    }
}
