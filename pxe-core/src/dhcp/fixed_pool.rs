//! A dynamic address pool in fixed, caller-sized storage: no allocator needed.
//!
//! [`FixedPool<N>`] has the same behaviour as the heap-backed [`Pool`](super::pool::Pool)
//! (both implement [`AddressPool`], and `tests/pool_model.rs` checks both against one model),
//! for at most `N` addresses. It is the pool an embassy-net firmware profile uses.
//!
//! Structure, every operation O(1) or O(log N) except [`AddressPool::unpark`] (O(N), run only
//! when the inventory changes):
//! - `slots[i]`: who holds address `first + i`, in what state, until when.
//! - `free`: a stack of never-used or released offsets, with `free_pos` for O(1) removal.
//! - `owner[i]` / `by_mac`: which client last held offset `i`, and the reverse map (FNV hash,
//!   at most one entry per offset, so it never outgrows `N`).
//! - an indexed binary min-heap of held offsets by expiry: when `free` is empty the earliest
//!   expired hold is reclaimed in O(log N).
//!
//! `N` must be a power of two (the hash map requires it) and at most 32768. Memory is about
//! 50 bytes per address: `FixedPool<256>` is about 13 KiB.

use core::net::Ipv4Addr;

use heapless::Vec;
use heapless::index_map::FnvIndexMap;

use super::pool::{AddressPool, PoolError, Slot, SlotState};
use crate::{Duration, Instant, MacAddr};

const NONE: u16 = u16::MAX;

/// A pool of at most `N` addresses in fixed storage. See the module docs.
#[derive(Debug, Clone)]
pub struct FixedPool<const N: usize> {
    first: u32,
    len: u16,
    slots: [Option<Slot>; N],
    owner: [Option<MacAddr>; N],
    by_mac: FnvIndexMap<MacAddr, u16, N>,
    free: Vec<u16, N>,
    free_pos: [u16; N],
    parked: [bool; N],
    heap: [u16; N],
    heap_len: u16,
    heap_pos: [u16; N],
}

impl<const N: usize> FixedPool<N> {
    const FITS: () = assert!(N >= 2 && N <= 32768, "FixedPool<N>: N must be in 2..=32768");

    /// A pool of `first..=last` (swapped if reversed). A range longer than `N` is cut to its
    /// first `N` addresses: check [`FixedPool::size`] if the range comes from configuration.
    pub fn new(first: Ipv4Addr, last: Ipv4Addr) -> Self {
        let () = Self::FITS;
        let (a, b) = (u32::from(first), u32::from(last));
        let (first, last) = if a <= b { (a, b) } else { (b, a) };
        let len = u16::try_from((u64::from(last - first) + 1).min(N as u64)).unwrap_or(0);
        let mut free = Vec::new();
        let mut free_pos = [NONE; N];
        // Pushed highest first so the lowest address is handed out first.
        for i in (0..len).rev() {
            if let Some(p) = free_pos.get_mut(usize::from(i)) {
                *p = u16::try_from(free.len()).unwrap_or(NONE);
            }
            let _ = free.push(i);
        }
        Self {
            first,
            len,
            slots: [None; N],
            owner: [None; N],
            by_mac: FnvIndexMap::new(),
            free,
            free_pos,
            parked: [false; N],
            heap: [NONE; N],
            heap_len: 0,
            heap_pos: [NONE; N],
        }
    }

    /// Number of addresses in the pool (the range, cut to `N`).
    pub fn size(&self) -> u16 {
        self.len
    }

    fn offset(&self, ip: Ipv4Addr) -> Option<u16> {
        let o = u32::from(ip).checked_sub(self.first)?;
        u16::try_from(o).ok().filter(|o| *o < self.len)
    }

    fn addr(&self, o: u16) -> Ipv4Addr {
        Ipv4Addr::from(self.first.wrapping_add(u32::from(o)))
    }

    fn slot_at(&self, o: u16) -> Option<Slot> {
        self.slots.get(usize::from(o)).copied().flatten()
    }

    fn available_for(&self, o: u16, mac: MacAddr, now: Instant) -> bool {
        if o >= self.len || self.parked.get(usize::from(o)).copied().unwrap_or(true) {
            return false;
        }
        match self.slot_at(o) {
            None => true,
            Some(s) if s.state == SlotState::Declined => s.expires <= now,
            Some(s) => s.mac == mac || s.expires <= now,
        }
    }

    fn set_parked(&mut self, o: u16, parked: bool) {
        if let Some(p) = self.parked.get_mut(usize::from(o)) {
            *p = parked;
        }
    }

    fn hold(&mut self, o: u16, mac: MacAddr, state: SlotState, expires: Instant) {
        let i = usize::from(o);
        if let Some(prev_owner) = self.owner.get(i).copied().flatten()
            && prev_owner != mac
        {
            self.by_mac.remove(&prev_owner);
            self.set_owner(o, None);
        }
        if state != SlotState::Declined {
            // At most one entry per offset (the previous owner's was removed above), so the map
            // has room; if it ever had not, the client would only lose its preference.
            if let Ok(Some(prev)) = self.by_mac.insert(mac, o)
                && prev != o
            {
                self.set_owner(prev, None);
                // A client holds one dynamic address at a time.
                if self
                    .slot_at(prev)
                    .is_some_and(|s| s.mac == mac && s.state != SlotState::Declined)
                {
                    self.release_slot(prev);
                }
            }
            self.set_owner(o, Some(mac));
        }
        if let Some(s) = self.slots.get_mut(i) {
            *s = Some(Slot {
                mac,
                state,
                expires,
            });
        }
        self.heap_update(o);
    }

    fn set_owner(&mut self, o: u16, mac: Option<MacAddr>) {
        if let Some(m) = self.owner.get_mut(usize::from(o)) {
            *m = mac;
        }
    }

    fn release_slot(&mut self, o: u16) {
        if let Some(s) = self.slots.get_mut(usize::from(o)) {
            *s = None;
        }
        self.heap_remove(o);
        self.free_push(o);
    }

    // --- the free stack -------------------------------------------------------------------

    fn free_push(&mut self, o: u16) {
        let i = usize::from(o);
        if self.free_pos.get(i).is_none_or(|p| *p != NONE) {
            return;
        }
        let at = u16::try_from(self.free.len()).unwrap_or(NONE);
        if self.free.push(o).is_ok()
            && let Some(p) = self.free_pos.get_mut(i)
        {
            *p = at;
        }
    }

    fn free_pop(&mut self) -> Option<u16> {
        let o = self.free.pop()?;
        if let Some(p) = self.free_pos.get_mut(usize::from(o)) {
            *p = NONE;
        }
        Some(o)
    }

    fn free_remove(&mut self, o: u16) {
        let Some(&at) = self.free_pos.get(usize::from(o)) else {
            return;
        };
        if at == NONE {
            return;
        }
        let at = usize::from(at);
        if at >= self.free.len() {
            return;
        }
        self.free.swap_remove(at);
        if let Some(&moved) = self.free.get(at)
            && let Some(p) = self.free_pos.get_mut(usize::from(moved))
        {
            *p = u16::try_from(at).unwrap_or(NONE);
        }
        if let Some(p) = self.free_pos.get_mut(usize::from(o)) {
            *p = NONE;
        }
    }

    // --- the expiry heap (indexed binary min-heap of held offsets) -------------------------

    fn key(&self, heap_index: u16) -> Instant {
        let o = self
            .heap
            .get(usize::from(heap_index))
            .copied()
            .unwrap_or(NONE);
        self.slot_at(o)
            .map_or(Instant::from_millis(u64::MAX), |s| s.expires)
    }

    fn heap_swap(&mut self, a: u16, b: u16) {
        let (ai, bi) = (usize::from(a), usize::from(b));
        if ai >= N || bi >= N {
            return;
        }
        self.heap.swap(ai, bi);
        for h in [a, b] {
            let o = self.heap.get(usize::from(h)).copied().unwrap_or(NONE);
            if let Some(p) = self.heap_pos.get_mut(usize::from(o)) {
                *p = h;
            }
        }
    }

    fn sift_up(&mut self, mut h: u16) {
        while h > 0 {
            let parent = (h - 1) / 2;
            if self.key(h) >= self.key(parent) {
                break;
            }
            self.heap_swap(h, parent);
            h = parent;
        }
    }

    fn sift_down(&mut self, mut h: u16) {
        loop {
            let (l, r) = (2 * u32::from(h) + 1, 2 * u32::from(h) + 2);
            let mut min = h;
            for c in [l, r] {
                if let Ok(c) = u16::try_from(c)
                    && c < self.heap_len
                    && self.key(c) < self.key(min)
                {
                    min = c;
                }
            }
            if min == h {
                break;
            }
            self.heap_swap(h, min);
            h = min;
        }
    }

    fn heap_update(&mut self, o: u16) {
        let Some(&h) = self.heap_pos.get(usize::from(o)) else {
            return;
        };
        let h = if h == NONE {
            let h = self.heap_len;
            if usize::from(h) >= N {
                return;
            }
            if let Some(slot) = self.heap.get_mut(usize::from(h)) {
                *slot = o;
            }
            if let Some(p) = self.heap_pos.get_mut(usize::from(o)) {
                *p = h;
            }
            self.heap_len += 1;
            h
        } else {
            h
        };
        self.sift_up(h);
        let h = self.heap_pos.get(usize::from(o)).copied().unwrap_or(NONE);
        self.sift_down(h);
    }

    fn heap_remove(&mut self, o: u16) {
        let Some(&h) = self.heap_pos.get(usize::from(o)) else {
            return;
        };
        if h == NONE || self.heap_len == 0 {
            return;
        }
        let last = self.heap_len - 1;
        self.heap_swap(h, last);
        self.heap_len = last;
        if let Some(p) = self.heap_pos.get_mut(usize::from(o)) {
            *p = NONE;
        }
        if h < self.heap_len {
            self.sift_up(h);
            let moved = self.heap.get(usize::from(h)).copied().unwrap_or(NONE);
            let h = self
                .heap_pos
                .get(usize::from(moved))
                .copied()
                .unwrap_or(NONE);
            self.sift_down(h);
        }
    }

    fn earliest(&self) -> Option<(u16, Instant)> {
        if self.heap_len == 0 {
            return None;
        }
        let o = self.heap.first().copied()?;
        Some((o, self.slot_at(o)?.expires))
    }
}

impl<const N: usize> AddressPool for FixedPool<N> {
    fn for_range(first: Ipv4Addr, last: Ipv4Addr) -> Self {
        Self::new(first, last)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        self.offset(ip).is_some()
    }

    fn held(&self, ip: Ipv4Addr) -> Option<Slot> {
        self.slot_at(self.offset(ip)?)
    }

    fn allocate(
        &mut self,
        mac: MacAddr,
        requested: Option<Ipv4Addr>,
        now: Instant,
        hold: Duration,
        is_reserved: impl Fn(Ipv4Addr) -> bool,
    ) -> Result<Ipv4Addr, PoolError> {
        let candidates = [
            self.by_mac.get(&mac).copied(),
            requested.and_then(|ip| self.offset(ip)),
        ];
        for o in candidates.into_iter().flatten() {
            let addr = self.addr(o);
            if self
                .slot_at(o)
                .is_some_and(|s| s.mac == mac && s.state == SlotState::Bound && s.expires > now)
                && !is_reserved(addr)
            {
                return Ok(addr);
            }
            if self.available_for(o, mac, now) && !is_reserved(addr) {
                self.free_remove(o);
                self.hold(o, mac, SlotState::Offered, now + hold);
                return Ok(addr);
            }
        }
        while let Some(o) = self.free_pop() {
            if is_reserved(self.addr(o)) {
                self.set_parked(o, true);
                continue;
            }
            self.hold(o, mac, SlotState::Offered, now + hold);
            return Ok(self.addr(o));
        }
        while let Some((o, expires)) = self.earliest() {
            if expires > now {
                break;
            }
            self.release_slot(o);
            self.free_remove(o);
            if is_reserved(self.addr(o)) {
                self.set_parked(o, true);
                continue;
            }
            self.hold(o, mac, SlotState::Offered, now + hold);
            return Ok(self.addr(o));
        }
        Err(PoolError::Exhausted)
    }

    fn bind(
        &mut self,
        mac: MacAddr,
        ip: Ipv4Addr,
        expires: Instant,
        now: Instant,
    ) -> Result<(), PoolError> {
        let o = self.offset(ip).ok_or(PoolError::OutOfRange)?;
        if !self.available_for(o, mac, now) {
            return Err(PoolError::Taken);
        }
        self.free_remove(o);
        self.set_parked(o, false);
        self.hold(o, mac, SlotState::Bound, expires);
        Ok(())
    }

    fn release(&mut self, mac: MacAddr, ip: Ipv4Addr) -> bool {
        let Some(o) = self.offset(ip) else {
            return false;
        };
        match self.slot_at(o) {
            Some(s) if s.mac == mac && s.state != SlotState::Declined => {
                self.release_slot(o);
                true
            }
            _ => false,
        }
    }

    fn decline(&mut self, mac: MacAddr, ip: Ipv4Addr, until: Instant, _now: Instant) -> bool {
        let Some(o) = self.offset(ip) else {
            return false;
        };
        self.free_remove(o);
        if self.by_mac.get(&mac) == Some(&o) {
            self.by_mac.remove(&mac);
            self.set_owner(o, None);
        }
        self.hold(o, mac, SlotState::Declined, until);
        true
    }

    fn unpark(&mut self, is_reserved: impl Fn(Ipv4Addr) -> bool) {
        for o in 0..self.len {
            if self.parked.get(usize::from(o)).copied().unwrap_or(false)
                && !is_reserved(self.addr(o))
            {
                self.set_parked(o, false);
                if self.slot_at(o).is_none() {
                    self.free_push(o);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }
    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, n)
    }
    const HOLD: Duration = Duration::from_secs(30);

    #[test]
    fn range_is_cut_to_capacity() {
        let p = FixedPool::<4>::new(ip(10), ip(200));
        assert_eq!(p.size(), 4);
        assert!(p.contains(ip(13)));
        assert!(!p.contains(ip(14)));
        assert!(!p.contains(ip(9)));
    }

    #[test]
    fn reclaims_earliest_expired_first() {
        let mut p = FixedPool::<4>::new(ip(10), ip(13));
        let now = Instant::from_secs(10);
        let none = |_: Ipv4Addr| false;
        for (i, secs) in [(1u8, 50u64), (2, 20), (3, 40), (4, 30)] {
            let a = p.allocate(mac(i), None, now, HOLD, none).unwrap();
            assert_eq!(a, ip(9 + i));
            p.bind(mac(i), a, now + Duration::from_secs(secs), now)
                .unwrap();
        }
        let later = now + Duration::from_secs(45);
        // Expired: 2 (20 s), 4 (30 s), 3 (40 s); earliest first.
        assert_eq!(p.allocate(mac(9), None, later, HOLD, none), Ok(ip(11)));
        assert_eq!(p.allocate(mac(8), None, later, HOLD, none), Ok(ip(13)));
        assert_eq!(p.allocate(mac(7), None, later, HOLD, none), Ok(ip(12)));
        assert_eq!(
            p.allocate(mac(6), None, later, HOLD, none),
            Err(PoolError::Exhausted)
        );
    }

    #[test]
    fn full_capacity_distinct_then_exhausted() {
        let mut p =
            FixedPool::<1024>::new(Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(10, 0, 3, 255));
        let now = Instant::from_secs(1);
        let mut seen = [false; 1024];
        for i in 0..1024u32 {
            let m = MacAddr([2, 0, 0, 0, (i >> 8) as u8, i as u8]);
            let a = p.allocate(m, None, now, HOLD, |_| false).unwrap();
            let o = (u32::from(a) - u32::from(Ipv4Addr::new(10, 0, 0, 0))) as usize;
            assert!(!seen[o]);
            seen[o] = true;
        }
        let stranger = MacAddr([4, 0, 0, 0, 0, 1]);
        assert_eq!(
            p.allocate(stranger, None, now, HOLD, |_| false),
            Err(PoolError::Exhausted)
        );
    }
}
