//! The DHCP lease committer: a lease is durable before its ACK is sent (ARCHITECTURE
//! invariant 3).
//!
//! The engine hands each lease change, with the reply it decided, to the committer without
//! waiting. The committer takes everything queued as one batch, submits it to the store as one
//! ordered write ([`Store::apply_leases`]) and sends the batch's replies when that write is
//! durable; whatever arrived meanwhile is the next batch. Within a batch and across batches the
//! store applies the writes in the order the engine made them, so a release followed by a new
//! lease for the same client is stored in that order.
//!
//! One batch is in flight at a time. A second submitted while the first commits was tried: it
//! is cut early, smaller than it would have grown, and the DHCP ladder (docs/benchmarks.md)
//! showed no gain within its run-to-run noise.

use std::net::SocketAddrV4;
use std::sync::Arc;

use pxe_core::dhcp::server::{Event, LeaseChange, LeaseKind};
use pxe_core::dhcp::wire::MessageType;
use tokio::sync::mpsc;

use super::service::{send, sent};
use super::socket::DhcpSocket;
use crate::metrics::Metrics;
use crate::store::{LeaseRecord, LeaseRecordKind, LeaseWrite, Store, StoreError};
use crate::timeline::{Leased, Timeline};

/// A lease change the engine decided, with the reply that waits for it to be durable.
pub(super) struct Pending {
    pub(super) change: LeaseChange,
    pub(super) hostname: Option<String>,
    pub(super) reply: Option<(SocketAddrV4, Vec<u8>)>,
    pub(super) event: Event,
    pub(super) relay_port: Option<(String, String)>,
}

impl Pending {
    /// A lease whose address comes from an inventory reservation (safe to acknowledge even
    /// when its record cannot be stored).
    fn is_static(&self) -> bool {
        match self.change {
            LeaseChange::Bound(l) => l.kind == LeaseKind::Static,
            _ => self.event.is_static,
        }
    }
}

/// The store writes of `batch`, in its order.
fn lease_writes(batch: &[Pending]) -> Vec<LeaseWrite> {
    batch
        .iter()
        .filter_map(|p| match p.change {
            LeaseChange::Bound(l) => Some(LeaseWrite::Put(LeaseRecord {
                mac: l.mac,
                ip: l.ip,
                expires_ms: i64::try_from(l.expires.millis()).unwrap_or(i64::MAX),
                kind: match l.kind {
                    LeaseKind::Static => LeaseRecordKind::Static,
                    LeaseKind::Dynamic => LeaseRecordKind::Dynamic,
                },
                hostname: p.hostname.clone(),
            })),
            LeaseChange::Released { mac, .. } | LeaseChange::Declined { mac, .. } => {
                Some(LeaseWrite::Delete(mac))
            }
            _ => None,
        })
        .collect()
}

pub(super) struct Committer {
    pub(super) sock: Arc<DhcpSocket>,
    pub(super) store: Store,
    pub(super) metrics: Arc<Metrics>,
    pub(super) timeline: Timeline,
    pub(super) on_lease: Option<crate::timeline::LeaseHook>,
}

impl Committer {
    /// Commits and answers batches from `rx` until every sender is gone.
    pub(super) async fn run(self, mut rx: mpsc::Receiver<Pending>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(p) = rx.try_recv() {
                batch.push(p);
            }
            let writes = lease_writes(&batch);
            let durable = if writes.is_empty() {
                Ok(())
            } else {
                self.store.apply_leases(writes).await
            };
            self.acknowledge(batch, durable).await;
        }
    }

    /// Sends the replies of a batch whose write ended with `durable`.
    async fn acknowledge(&self, batch: Vec<Pending>, durable: Result<(), StoreError>) {
        if let Err(err) = &durable {
            // Not durable → a dynamic lease is not acknowledged: the client retries and
            // we try again (one address must never go to two clients). A static lease
            // is decided by the inventory, which no other client can be given, so it is
            // acknowledged anyway and its record is skipped (the next renewal writes
            // it): a full data partition must not stop the rack's own nodes booting.
            let withheld = batch.iter().filter(|p| !p.is_static()).count();
            match err {
                // The store logs once when the partition fills; not once per batch.
                // Busy: counted (store_busy), the clients retransmit.
                StoreError::Full { .. } | StoreError::Busy { .. } => tracing::debug!(
                    error = %err, withheld, acked_static = batch.len() - withheld,
                    "DHCP: leases not stored; dynamic ACKs withheld"
                ),
                _ => tracing::error!(
                    error = %err, withheld, acked_static = batch.len() - withheld,
                    "DHCP: cannot store leases; dynamic ACKs withheld"
                ),
            }
        }
        for p in batch {
            if durable.is_err() && !p.is_static() {
                self.metrics
                    .dhcp_packet(p.event.received.as_str(), "dropped");
                self.metrics.dhcp_drop(match durable {
                    Err(StoreError::Full { .. }) => "store_full",
                    Err(StoreError::Busy { .. }) => "store_busy",
                    _ => "store_error",
                });
                continue;
            }
            if durable.is_err() {
                self.metrics.dhcp_static_unrecorded();
            }
            if let Some((dst, bytes)) = p.reply {
                // A boot starts here: the node's next boot script may carry a join
                // token (noted before the ACK leaves, so the script request finds it).
                if let (Some(MessageType::Ack), Some(ip), true) =
                    (p.event.sent, p.event.ip, p.event.ipxe || p.event.firmware)
                {
                    self.timeline.boot_acked(p.event.mac, ip);
                }
                send(&self.sock, &bytes, dst).await;
                sent(&self.metrics, &self.timeline, &p.event);
                if let (Some(hook), Some(ip), Some(MessageType::Ack)) =
                    (&self.on_lease, p.event.ip, p.event.sent)
                {
                    hook.leased(Leased {
                        ip,
                        port: p.relay_port.clone(),
                    });
                }
            }
        }
    }
}
