//! The dynamic address pool for clients the inventory does not know.
//!
//! Structure (every operation O(log n) in the pool size):
//! - `free`: ordered set of never-used or released addresses; allocation takes the lowest.
//! - `slots`: address → who holds it (offered, bound or declined) and until when.
//! - `last`: MAC → the address it had last, kept after expiry so a returning client gets its old
//!   address back if nobody else took it.
//! - `expiry`: ordered (expires, address) index; when `free` is empty the earliest expired
//!   slot is reclaimed.
//!
//! Reserved (inventory) addresses are never handed out: the caller's predicate is checked on
//! every candidate, and a reserved address found in `free` is parked until [`Pool::unpark`].
//! Memory: about 100 bytes per address in use (the `alloc` feature is required).
//!
//! [`AddressPool`] is what the engine needs from a pool; [`FixedPool`](super::fixed_pool::FixedPool)
//! implements it in fixed storage for builds without an allocator.

#[cfg(feature = "alloc")]
use alloc::collections::{BTreeMap, BTreeSet};
use core::net::Ipv4Addr;

use crate::{Duration, Instant, MacAddr};

/// Who holds an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Offered, held for the client for a short time.
    Offered,
    /// Bound by an ACK.
    Bound,
    /// DECLINEd: in use by someone unknown (RFC 2131 §4.3.3); quarantined.
    Declined,
}

/// One held address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Holder (for `Declined`, the client that declined).
    pub mac: MacAddr,
    /// State.
    pub state: SlotState,
    /// When the hold ends.
    pub expires: Instant,
}

/// Why the pool could not give an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolError {
    /// Every address is held, reserved or quarantined.
    Exhausted,
    /// The address is not in this pool.
    OutOfRange,
    /// The address is held by another client.
    Taken,
}

/// What the DHCP engine needs from a dynamic pool. [`Pool`] (heap, any size) and
/// [`FixedPool`](super::fixed_pool::FixedPool) (fixed storage, no allocator) implement it with
/// the same behaviour.
pub trait AddressPool {
    /// A pool of `first..=last`.
    fn for_range(first: Ipv4Addr, last: Ipv4Addr) -> Self
    where
        Self: Sized;
    /// Whether `ip` is in the pool.
    fn contains(&self, ip: Ipv4Addr) -> bool;
    /// The hold on `ip`, if any (it may have expired).
    fn held(&self, ip: Ipv4Addr) -> Option<Slot>;
    /// Chooses an address for `mac` and holds it as `Offered` until `now + hold`.
    ///
    /// Preference: the address `mac` holds or held last, then `requested`, then a free one,
    /// then the longest-expired one. A client that DISCOVERs again during its lease keeps it.
    fn allocate(
        &mut self,
        mac: MacAddr,
        requested: Option<Ipv4Addr>,
        now: Instant,
        hold: Duration,
        is_reserved: impl Fn(Ipv4Addr) -> bool,
    ) -> Result<Ipv4Addr, PoolError>;
    /// Binds `ip` to `mac` until `expires` (after an ACK, or when restoring persisted leases).
    fn bind(
        &mut self,
        mac: MacAddr,
        ip: Ipv4Addr,
        expires: Instant,
        now: Instant,
    ) -> Result<(), PoolError>;
    /// RELEASE: `mac` gives `ip` back; it is still preferred for `mac` later.
    fn release(&mut self, mac: MacAddr, ip: Ipv4Addr) -> bool;
    /// DECLINE: quarantine `ip` until `until`, whoever held it.
    fn decline(&mut self, mac: MacAddr, ip: Ipv4Addr, until: Instant, now: Instant) -> bool;
    /// Returns parked (once reserved) addresses that are no longer reserved.
    fn unpark(&mut self, is_reserved: impl Fn(Ipv4Addr) -> bool);
}

/// A range of addresses handed out to unknown clients.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone)]
pub struct Pool {
    first: u32,
    last: u32,
    free: BTreeSet<u32>,
    parked: BTreeSet<u32>,
    slots: BTreeMap<u32, Slot>,
    last_ip: BTreeMap<MacAddr, u32>,
    expiry: BTreeSet<(Instant, u32)>,
}

#[cfg(feature = "alloc")]
impl AddressPool for Pool {
    fn for_range(first: Ipv4Addr, last: Ipv4Addr) -> Self {
        Pool::new(first, last)
    }
    fn contains(&self, ip: Ipv4Addr) -> bool {
        Pool::contains(self, ip)
    }
    fn held(&self, ip: Ipv4Addr) -> Option<Slot> {
        self.slot(ip).copied()
    }
    fn allocate(
        &mut self,
        mac: MacAddr,
        requested: Option<Ipv4Addr>,
        now: Instant,
        hold: Duration,
        is_reserved: impl Fn(Ipv4Addr) -> bool,
    ) -> Result<Ipv4Addr, PoolError> {
        Pool::allocate(self, mac, requested, now, hold, is_reserved)
    }
    fn bind(
        &mut self,
        mac: MacAddr,
        ip: Ipv4Addr,
        expires: Instant,
        now: Instant,
    ) -> Result<(), PoolError> {
        Pool::bind(self, mac, ip, expires, now)
    }
    fn release(&mut self, mac: MacAddr, ip: Ipv4Addr) -> bool {
        Pool::release(self, mac, ip)
    }
    fn decline(&mut self, mac: MacAddr, ip: Ipv4Addr, until: Instant, now: Instant) -> bool {
        Pool::decline(self, mac, ip, until, now)
    }
    fn unpark(&mut self, is_reserved: impl Fn(Ipv4Addr) -> bool) {
        Pool::unpark(self, is_reserved)
    }
}

#[cfg(feature = "alloc")]
impl Pool {
    /// A pool of `first..=last` (swapped if reversed).
    pub fn new(first: Ipv4Addr, last: Ipv4Addr) -> Self {
        let (a, b) = (u32::from(first), u32::from(last));
        let (first, last) = if a <= b { (a, b) } else { (b, a) };
        Self {
            first,
            last,
            free: (first..=last).collect(),
            parked: BTreeSet::new(),
            slots: BTreeMap::new(),
            last_ip: BTreeMap::new(),
            expiry: BTreeSet::new(),
        }
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(ip))
    }

    /// Number of addresses in the range.
    pub fn size(&self) -> u64 {
        u64::from(self.last - self.first) + 1
    }

    /// Addresses currently held (offered, bound or quarantined and not expired).
    pub fn in_use(&self, now: Instant) -> usize {
        self.slots.values().filter(|s| s.expires > now).count()
    }

    /// The slot for `ip`, if held.
    pub fn slot(&self, ip: Ipv4Addr) -> Option<&Slot> {
        self.slots.get(&u32::from(ip))
    }

    /// The address `mac` holds now (not expired), if any.
    pub fn held_by(&self, mac: MacAddr, now: Instant) -> Option<Ipv4Addr> {
        let ip = *self.last_ip.get(&mac)?;
        let slot = self.slots.get(&ip)?;
        (slot.mac == mac && slot.state != SlotState::Declined && slot.expires > now)
            .then(|| Ipv4Addr::from(ip))
    }

    /// Chooses an address for `mac` and holds it as `Offered` until `now + hold`.
    ///
    /// Preference: the address `mac` holds or held last, then `requested`, then the lowest free
    /// one, then the longest-expired one.
    pub fn allocate(
        &mut self,
        mac: MacAddr,
        requested: Option<Ipv4Addr>,
        now: Instant,
        hold: Duration,
        is_reserved: impl Fn(Ipv4Addr) -> bool,
    ) -> Result<Ipv4Addr, PoolError> {
        let mut candidates = [self.last_ip.get(&mac).copied(), requested.map(u32::from)];
        for ip in candidates.iter_mut().flatten() {
            let addr = Ipv4Addr::from(*ip);
            // A client that DISCOVERs again while its lease runs keeps the lease as it is:
            // turning it into a short offer hold would let the address go to someone else
            // while this client still uses it.
            if self
                .slots
                .get(ip)
                .is_some_and(|s| s.mac == mac && s.state == SlotState::Bound && s.expires > now)
                && !is_reserved(addr)
            {
                return Ok(addr);
            }
            if self.available_for(*ip, mac, now) && !is_reserved(addr) {
                self.hold(*ip, mac, SlotState::Offered, now + hold, now);
                return Ok(addr);
            }
        }
        while let Some(ip) = self.free.pop_first() {
            if is_reserved(Ipv4Addr::from(ip)) {
                self.parked.insert(ip);
                continue;
            }
            self.hold(ip, mac, SlotState::Offered, now + hold, now);
            return Ok(Ipv4Addr::from(ip));
        }
        while let Some(&(expires, ip)) = self.expiry.first() {
            if expires > now {
                break;
            }
            self.expiry.pop_first();
            if self.slots.get(&ip).is_some_and(|s| s.expires == expires) {
                self.release_slot(ip);
                if is_reserved(Ipv4Addr::from(ip)) {
                    self.free.remove(&ip);
                    self.parked.insert(ip);
                    continue;
                }
                self.free.remove(&ip);
                self.hold(ip, mac, SlotState::Offered, now + hold, now);
                return Ok(Ipv4Addr::from(ip));
            }
        }
        Err(PoolError::Exhausted)
    }

    /// Binds `ip` to `mac` until `expires` (after an ACK, or when restoring persisted leases).
    pub fn bind(
        &mut self,
        mac: MacAddr,
        ip: Ipv4Addr,
        expires: Instant,
        now: Instant,
    ) -> Result<(), PoolError> {
        let n = u32::from(ip);
        if !self.contains(ip) {
            return Err(PoolError::OutOfRange);
        }
        if !self.available_for(n, mac, now) {
            return Err(PoolError::Taken);
        }
        self.free.remove(&n);
        self.parked.remove(&n);
        self.hold(n, mac, SlotState::Bound, expires, now);
        Ok(())
    }

    /// Whether `ip` may be given to `mac`: free, held by `mac`, or held by someone but expired.
    pub fn available_for(&self, ip: u32, mac: MacAddr, now: Instant) -> bool {
        if !(self.first..=self.last).contains(&ip) || self.parked.contains(&ip) {
            return false;
        }
        match self.slots.get(&ip) {
            None => true,
            Some(s) if s.state == SlotState::Declined => s.expires <= now,
            Some(s) => s.mac == mac || s.expires <= now,
        }
    }

    /// RELEASE: `mac` gives `ip` back. Its `last` entry stays, so it gets the same address later.
    pub fn release(&mut self, mac: MacAddr, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        match self.slots.get(&n) {
            Some(s) if s.mac == mac && s.state != SlotState::Declined => {
                self.release_slot(n);
                true
            }
            _ => false,
        }
    }

    /// DECLINE: quarantine `ip` until `until`, whoever held it.
    pub fn decline(&mut self, mac: MacAddr, ip: Ipv4Addr, until: Instant, now: Instant) -> bool {
        let n = u32::from(ip);
        if !self.contains(ip) {
            return false;
        }
        self.free.remove(&n);
        if self.last_ip.get(&mac) == Some(&n) {
            self.last_ip.remove(&mac);
        }
        self.hold(n, mac, SlotState::Declined, until, now);
        true
    }

    /// Puts parked (once reserved) addresses back into the free set if they are no longer
    /// reserved. Call after the inventory changes.
    pub fn unpark(&mut self, is_reserved: impl Fn(Ipv4Addr) -> bool) {
        let back: alloc::vec::Vec<u32> = self
            .parked
            .iter()
            .copied()
            .filter(|ip| !is_reserved(Ipv4Addr::from(*ip)))
            .collect();
        for ip in back {
            self.parked.remove(&ip);
            if !self.slots.contains_key(&ip) {
                self.free.insert(ip);
            }
        }
    }

    /// Iterates held addresses.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, &Slot)> {
        self.slots.iter().map(|(ip, s)| (Ipv4Addr::from(*ip), s))
    }

    fn hold(&mut self, ip: u32, mac: MacAddr, state: SlotState, expires: Instant, _now: Instant) {
        if let Some(old) = self.slots.get(&ip) {
            self.expiry.remove(&(old.expires, ip));
            if old.mac != mac && self.last_ip.get(&old.mac) == Some(&ip) {
                self.last_ip.remove(&old.mac);
            }
        }
        if state != SlotState::Declined
            && let Some(prev) = self.last_ip.insert(mac, ip)
            && prev != ip
        {
            // A client holds one dynamic address at a time.
            if self
                .slots
                .get(&prev)
                .is_some_and(|s| s.mac == mac && s.state != SlotState::Declined)
            {
                self.release_slot(prev);
            }
        }
        self.slots.insert(
            ip,
            Slot {
                mac,
                state,
                expires,
            },
        );
        self.expiry.insert((expires, ip));
    }

    fn release_slot(&mut self, ip: u32) {
        if let Some(old) = self.slots.remove(&ip) {
            self.expiry.remove(&(old.expires, ip));
        }
        self.free.insert(ip);
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }
    const HOLD: Duration = Duration::from_secs(30);
    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, n)
    }

    #[test]
    fn allocates_lowest_skips_reserved_and_keeps_previous() {
        let mut p = Pool::new(ip(10), ip(12));
        let now = Instant::from_secs(100);
        let reserved = |a: Ipv4Addr| a == ip(10);
        assert_eq!(p.allocate(mac(1), None, now, HOLD, reserved), Ok(ip(11)));
        // Same client again: same address.
        assert_eq!(p.allocate(mac(1), None, now, HOLD, reserved), Ok(ip(11)));
        assert_eq!(
            p.allocate(mac(2), Some(ip(11)), now, HOLD, reserved),
            Ok(ip(12))
        );
        assert_eq!(
            p.allocate(mac(3), None, now, HOLD, reserved),
            Err(PoolError::Exhausted)
        );
        // After the offers lapse, client 3 gets the earliest expired one.
        let later = now + Duration::from_secs(31);
        p.bind(mac(2), ip(12), later + Duration::from_secs(3600), later)
            .unwrap();
        assert_eq!(p.allocate(mac(3), None, later, HOLD, reserved), Ok(ip(11)));
        // Client 1 comes back: its old address is gone, the pool is full.
        assert_eq!(
            p.allocate(mac(1), None, later, HOLD, reserved),
            Err(PoolError::Exhausted)
        );
    }

    #[test]
    fn release_decline_unpark() {
        let mut p = Pool::new(ip(10), ip(11));
        let now = Instant::from_secs(1);
        let none = |_: Ipv4Addr| false;
        let a = p.allocate(mac(1), None, now, HOLD, none).unwrap();
        p.bind(mac(1), a, now + Duration::from_secs(60), now)
            .unwrap();
        assert_eq!(
            p.bind(mac(2), a, now + Duration::from_secs(60), now),
            Err(PoolError::Taken)
        );
        assert!(p.release(mac(1), a));
        // Previous address preferred after release.
        assert_eq!(p.allocate(mac(1), None, now, HOLD, none), Ok(a));
        assert!(p.decline(mac(1), a, now + Duration::from_secs(600), now));
        assert_eq!(p.allocate(mac(1), Some(a), now, HOLD, none), Ok(ip(11)));
        assert_eq!(
            p.allocate(mac(2), Some(a), now, HOLD, none),
            Err(PoolError::Exhausted)
        );
        // Quarantine ends.
        let later = now + Duration::from_secs(601);
        assert_eq!(p.allocate(mac(2), None, later, HOLD, none), Ok(ip(11)));
        assert_eq!(p.allocate(mac(3), None, later, HOLD, none), Ok(a));

        let mut p = Pool::new(ip(10), ip(10));
        assert_eq!(
            p.allocate(mac(1), None, now, HOLD, |_| true),
            Err(PoolError::Exhausted)
        );
        p.unpark(|_| false);
        assert_eq!(p.allocate(mac(1), None, now, HOLD, none), Ok(ip(10)));
    }

    #[test]
    fn large_pool() {
        let mut p = Pool::new(Ipv4Addr::new(10, 1, 0, 0), Ipv4Addr::new(10, 1, 255, 255));
        assert_eq!(p.size(), 65536);
        let now = Instant::from_secs(1);
        let mut seen = alloc::collections::BTreeSet::new();
        for i in 0..65536u32 {
            let m = MacAddr([2, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            let a = p.allocate(m, None, now, HOLD, |_| false).unwrap();
            assert!(seen.insert(a));
        }
        let stranger = MacAddr([4, 0, 0, 0, 0, 1]);
        assert_eq!(
            p.allocate(stranger, None, now, HOLD, |_| false),
            Err(PoolError::Exhausted)
        );
    }
}
