//! Event-driven discovery: a DHCP lease in `discovery.bmc_pool` is a BMC to discover.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::Discovery;
use crate::config;

impl Discovery {
    /// Starts auto-discovery when `discovery.bmc_pool` is set: every address DHCP hands out in
    /// that range is probed (after a short delay, then with back-off while nothing answers)
    /// and discovered. Returns the hook for the DHCP service.
    pub fn spawn_auto(
        &self,
        tasks: &mut tokio::task::JoinSet<()>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Option<crate::timeline::LeaseHook>> {
        let Some(range) = &self.cfg.bmc_pool else {
            return Ok(None);
        };
        let (first, last) =
            config::parse_pool(range).map_err(|e| anyhow::anyhow!("discovery.bmc_pool: {e}"))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<crate::timeline::Leased>(1024);
        let me = self.clone();
        tasks.spawn(async move {
            // When each address was last discovered, so lease renewals do not rescan.
            let mut done: BTreeMap<Ipv4Addr, tokio::time::Instant> = BTreeMap::new();
            let mut pending = tokio::task::JoinSet::new();
            loop {
                let ip = tokio::select! {
                    () = shutdown.cancelled() => break,
                    Some(lease) = rx.recv() => {
                        if let Some((circuit, remote)) = lease.port {
                            // Remembered even when this lease is not rescanned: a later manual
                            // discovery of the address names it by its port too.
                            if let Err(e) = me.store.put_bmc_relay_port(lease.ip.to_string(), circuit, remote).await {
                                tracing::warn!(ip = %lease.ip, error = %e, "could not record the BMC's switch port");
                            }
                        }
                        lease.ip
                    }
                    Some(r) = pending.join_next(), if !pending.is_empty() => {
                        match r {
                            Ok((ip, true)) => { done.insert(ip, tokio::time::Instant::now()); }
                            // Gave up: the next lease (renewal) of this address tries again.
                            Ok((ip, false)) => { done.remove(&ip); }
                            Err(_) => {}
                        }
                        continue;
                    }
                };
                if done
                    .get(&ip)
                    .is_some_and(|t| t.elapsed() < me.cfg.auto_rediscover_after)
                {
                    continue;
                }
                done.insert(ip, tokio::time::Instant::now());
                let me = me.clone();
                pending.spawn(async move {
                    tracing::info!(%ip, "BMC took a lease: discovering it");
                    for wait in [5u64, 15, 40, 120] {
                        tokio::time::sleep(Duration::from_secs(wait)).await;
                        let r = me.discover(&[ip.to_string()], false).await;
                        if r.iter().any(|t| t.ok) {
                            return (ip, true);
                        }
                        let why = r.first().and_then(|t| t.error.clone()).unwrap_or_default();
                        tracing::info!(%ip, error = %why, "auto-discovery: not yet; retrying");
                    }
                    tracing::warn!(%ip, "auto-discovery gave up on this address until its next lease");
                    (ip, false)
                });
            }
        });
        tracing::info!(%first, %last, "BMC auto-discovery on leases in discovery.bmc_pool");
        Ok(Some(crate::timeline::LeaseHook { first, last, tx }))
    }
}
