//! The receive queue between the DHCP socket and the engine.
//!
//! In a boot storm every node of a rack powers on at once and firmware retransmits with backoff.
//! The kernel's socket buffer drops the *newest* datagrams when it is full, which punishes the
//! retransmissions that matter. So a reader task drains the socket as fast as it can into this
//! bounded queue, which drops the *oldest* datagram when full (its client has most likely already
//! retransmitted) and counts the drop.
//!
//! The queue has two lanes. Datagrams from clients the inventory knows (the rack's own nodes)
//! go in the known lane, which the engine always empties first; everything else waits in the
//! other lane. A flood of DISCOVERs from new MACs (a misbehaving host, an attacker, a discovery
//! run) then only delays other unknown clients: a known node is answered as soon as the engine
//! is free, however deep the flood. Each lane is bounded and drops its own oldest. A MAC is
//! trivially spoofed, so an attacker who floods with the MACs of real nodes competes with those
//! nodes in the known lane; the lane gives priority, not authentication.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// Which lane a datagram waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// A client the inventory knows (answered first).
    Known,
    /// Anyone else.
    Other,
}

struct Lanes<T> {
    known: VecDeque<T>,
    other: VecDeque<T>,
}

/// A bounded two-lane FIFO that evicts the oldest entry of a full lane.
pub struct DropOldestQueue<T> {
    inner: Mutex<Lanes<T>>,
    capacity: usize,
    notify: Notify,
    dropped: AtomicU64,
}

impl<T> DropOldestQueue<T> {
    /// A queue holding up to `capacity` entries in each lane.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: Mutex::new(Lanes {
                known: VecDeque::new(),
                other: VecDeque::new(),
            }),
            capacity,
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Appends `item` to `lane`; if that lane is full, evicts and returns its oldest entry.
    pub fn push(&self, item: T, lane: Lane) -> Option<T> {
        let evicted = {
            let mut lanes = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let q = match lane {
                Lane::Known => &mut lanes.known,
                Lane::Other => &mut lanes.other,
            };
            let evicted = if q.len() >= self.capacity {
                q.pop_front()
            } else {
                None
            };
            q.push_back(item);
            evicted
        };
        if evicted.is_some() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.notify.notify_one();
        evicted
    }

    /// Waits for and removes the oldest entry of the known lane, or else of the other lane.
    pub async fn pop(&self) -> T {
        loop {
            if let Some(item) = self.try_pop() {
                return item;
            }
            self.notify.notified().await;
        }
    }

    pub fn try_pop(&self) -> Option<T> {
        let mut lanes = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        lanes.known.pop_front().or_else(|| lanes.other.pop_front())
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        let lanes = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        lanes.known.len() + lanes.other.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries evicted because their lane was full, since start.
    #[cfg(test)]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn evicts_oldest_and_counts() {
        let q = DropOldestQueue::new(3);
        for i in 0..3 {
            assert_eq!(q.push(i, Lane::Other), None);
        }
        assert_eq!(q.push(3, Lane::Other), Some(0));
        assert_eq!(q.push(4, Lane::Other), Some(1));
        assert_eq!(q.dropped(), 2);
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop().await, 2);
        assert_eq!(q.pop().await, 3);
        assert_eq!(q.pop().await, 4);
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_flood_in_the_other_lane_neither_evicts_nor_delays_the_known_lane() {
        let q = DropOldestQueue::new(4);
        for i in 0..100 {
            q.push(i, Lane::Other);
        }
        assert_eq!(q.push(1000, Lane::Known), None);
        for i in 100..200 {
            q.push(i, Lane::Other);
        }
        assert_eq!(q.push(1001, Lane::Known), None);
        // Known first, in order; then the newest of the flood.
        assert_eq!(q.pop().await, 1000);
        assert_eq!(q.pop().await, 1001);
        assert_eq!(q.pop().await, 196);
        assert_eq!(q.len(), 3);
        assert_eq!(q.dropped(), 196);
        // The known lane is bounded too.
        for i in 0..5 {
            q.push(2000 + i, Lane::Known);
        }
        assert_eq!(q.pop().await, 2001);
    }

    #[tokio::test]
    async fn pop_waits_for_a_push() {
        let q = std::sync::Arc::new(DropOldestQueue::new(4));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.pop().await });
        tokio::task::yield_now().await;
        q.push(7u8, Lane::Known);
        assert_eq!(waiter.await.unwrap(), 7);
    }
}
