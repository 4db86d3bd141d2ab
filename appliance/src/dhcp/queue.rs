//! The receive queue between the DHCP socket and the engine.
//!
//! In a boot storm every node of a rack powers on at once and firmware retransmits with backoff.
//! The kernel's socket buffer drops the *newest* datagrams when it is full, which punishes the
//! retransmissions that matter. So a reader task drains the socket as fast as it can into this
//! bounded queue, which drops the *oldest* datagram when full (its client has most likely already
//! retransmitted) and counts the drop. The engine task answers in arrival order.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// A bounded FIFO that evicts the oldest entry when full.
pub struct DropOldestQueue<T> {
    inner: Mutex<VecDeque<T>>,
    capacity: usize,
    notify: Notify,
    dropped: AtomicU64,
}

impl<T> DropOldestQueue<T> {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Appends `item`; if the queue is full, evicts and returns the oldest entry.
    pub fn push(&self, item: T) -> Option<T> {
        let evicted = {
            let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
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

    /// Waits for and removes the oldest entry.
    pub async fn pop(&self) -> T {
        loop {
            if let Some(item) = self.try_pop() {
                return item;
            }
            self.notify.notified().await;
        }
    }

    pub fn try_pop(&self) -> Option<T> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries evicted because the queue was full, since start.
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
            assert_eq!(q.push(i), None);
        }
        assert_eq!(q.push(3), Some(0));
        assert_eq!(q.push(4), Some(1));
        assert_eq!(q.dropped(), 2);
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop().await, 2);
        assert_eq!(q.pop().await, 3);
        assert_eq!(q.pop().await, 4);
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn pop_waits_for_a_push() {
        let q = std::sync::Arc::new(DropOldestQueue::new(4));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.pop().await });
        tokio::task::yield_now().await;
        q.push(7u8);
        assert_eq!(waiter.await.unwrap(), 7);
    }
}
