//! Pulling the rack's share: fetch, scope filter (xname prefix or upstream group), apply as a
//! diff; cloud-init data; and the on-demand lookup of one unknown MAC.

use serde_json::Value;
use std::collections::BTreeSet;

use super::lookup::Outcome;
use super::upstream_http::list;
use super::{Federation, rfc3339_now};
use crate::store::{ApplyStats, BootParameters, Component, EthernetInterface, UpstreamSnapshot};

/// Whether `id` is inside the xname `prefix` (`x1000c0` holds `x1000c0s0b0n0`, not `x1000c01`).
pub fn in_prefix(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_alphabetic()))
}

fn normalize_ei(mut ei: EthernetInterface) -> Option<EthernetInterface> {
    let mac = pxe_core_mac(&ei.mac_address)?;
    ei.mac_address = mac.clone();
    ei.id = mac.replace(':', "");
    Some(ei)
}

fn pxe_core_mac(m: &str) -> Option<String> {
    pxe_core::MacAddr::parse_nic(m).ok().map(|m| m.to_string())
}

impl Federation {
    /// The rack's share of what the upstream holds.
    pub(super) async fn fetch(&self) -> anyhow::Result<UpstreamSnapshot> {
        let comps: Vec<Component> = self
            .get_list(&self.smd("/State/Components"), "Components")
            .await?;
        let eis: Vec<EthernetInterface> = self
            .get_list(
                &self.smd("/Inventory/EthernetInterfaces"),
                "EthernetInterfaces",
            )
            .await?;
        let groups: Vec<crate::store::Group> =
            self.get_list(&self.smd("/groups"), "groups").await?;
        let bps: Vec<BootParameters> = self
            .get_list(&self.bss("/bootparameters"), "bootparameters")
            .await?;
        Ok(self.scope(comps, eis, groups, bps))
    }

    pub(super) fn scope(
        &self,
        comps: Vec<Component>,
        eis: Vec<EthernetInterface>,
        groups: Vec<crate::store::Group>,
        bps: Vec<BootParameters>,
    ) -> UpstreamSnapshot {
        let cfg = &self.inner.cfg;
        let members: Option<BTreeSet<String>> = cfg.group.as_ref().map(|g| {
            groups
                .iter()
                .filter(|x| &x.label == g)
                .flat_map(|x| x.members.ids.iter().cloned())
                .collect()
        });
        let in_scope = |id: &str| match (&cfg.xname_prefix, &members) {
            (Some(p), _) => in_prefix(id, p),
            (_, Some(m)) => m.contains(id),
            _ => false,
        };
        let components: Vec<Component> = comps.into_iter().filter(|c| in_scope(&c.id)).collect();
        let interfaces: Vec<EthernetInterface> = eis
            .into_iter()
            .filter(|e| e.component_id.as_deref().is_some_and(in_scope))
            .filter_map(normalize_ei)
            .collect();
        let macs: BTreeSet<&str> = interfaces.iter().map(|e| e.mac_address.as_str()).collect();
        let nids: BTreeSet<i64> = components.iter().filter_map(|c| c.nid).collect();
        let boot_parameters = bps
            .into_iter()
            .filter_map(|mut bp| {
                bp.hosts.retain(|h| in_scope(h));
                bp.macs = bp
                    .macs
                    .iter()
                    .filter_map(|m| pxe_core_mac(m))
                    .filter(|m| macs.contains(m.as_str()))
                    .collect();
                bp.nids.retain(|n| nids.contains(n));
                (!bp.hosts.is_empty() || !bp.macs.is_empty() || !bp.nids.is_empty()).then_some(bp)
            })
            .collect();
        let groups = groups
            .into_iter()
            .filter_map(|mut g| {
                g.members.ids.retain(|m| in_scope(m));
                (!g.members.ids.is_empty()).then_some(g)
            })
            .collect();
        UpstreamSnapshot {
            components,
            interfaces,
            groups,
            boot_parameters,
        }
    }

    /// One full pull.
    pub async fn pull(&self) -> anyhow::Result<ApplyStats> {
        let snap = match self.fetch().await {
            Ok(s) => s,
            Err(e) => {
                let reachable = !e.chain().any(|c| {
                    c.downcast_ref::<reqwest::Error>()
                        .is_some_and(|r| r.is_connect() || r.is_timeout())
                });
                self.set_error(&e, reachable);
                return Err(e);
            }
        };
        let nodes: Vec<String> = snap
            .components
            .iter()
            .filter(|c| c.kind.as_deref() == Some("Node"))
            .map(|c| c.id.clone())
            .collect();
        let labels: Vec<String> = snap.groups.iter().map(|g| g.label.clone()).collect();
        let mut stats = self.inner.store.apply_upstream(snap, true).await?;
        match self.pull_cloud_init(&nodes, &labels).await {
            Ok((written, unchanged)) => {
                stats.written += written;
                stats.unchanged += unchanged;
            }
            Err(e) => {
                self.set_error(&e, true);
                return Err(e);
            }
        }
        let mut s = self.inner.status.lock().unwrap_or_else(|p| p.into_inner());
        s.reachable = true;
        s.last_pull = Some(rfc3339_now());
        s.last_pull_stats = Some(stats);
        s.last_error = None;
        Ok(stats)
    }

    pub(super) fn cloud_init_url(&self, path: &str) -> String {
        let base = self
            .inner
            .cfg
            .cloud_init
            .as_deref()
            .unwrap_or(&self.inner.cfg.smd);
        format!("{}/cloud-init/admin{path}", base.trim_end_matches('/'))
    }

    /// cloud-init data for the rack: the cluster defaults, the groups of the rack's SMD groups,
    /// and each in-scope node's instance-info; written only where it changed. An upstream
    /// without a cloud-init service (404) has nothing to give. (written, unchanged)
    pub(super) async fn pull_cloud_init(
        &self,
        nodes: &[String],
        labels: &[String],
    ) -> anyhow::Result<(usize, usize)> {
        use crate::store::CiKind;
        let mut want: Vec<(CiKind, String, Value)> = Vec::new();
        if let Some(d) = self
            .get_json(&self.cloud_init_url("/cluster-defaults"))
            .await?
        {
            want.push((
                CiKind::Defaults,
                crate::store::CLOUD_INIT_DEFAULTS_KEY.to_owned(),
                d,
            ));
        }
        if let Some(v) = self.get_json(&self.cloud_init_url("/groups")).await? {
            for g in list(v, "groups") {
                if let Some(name) = g.get("name").and_then(Value::as_str)
                    && labels.iter().any(|l| l == name)
                {
                    want.push((CiKind::Group, name.to_owned(), g.clone()));
                }
            }
        }
        for x in nodes {
            if let Some(d) = self
                .get_json(&self.cloud_init_url(&format!("/instance-info/{x}")))
                .await?
            {
                want.push((CiKind::Node, x.clone(), d));
            }
        }
        let (mut written, mut unchanged) = (0, 0);
        for (kind, key, doc) in want {
            if self.inner.store.get_cloud_init(kind, key.clone()).await? == Some(doc.clone()) {
                unchanged += 1;
            } else {
                self.inner.store.put_cloud_init(kind, key, doc).await?;
                written += 1;
            }
        }
        Ok((written, unchanged))
    }

    /// On demand: asks the upstream about `mac` (within the lookup deadline, if the lookup
    /// limits admit it now) and stores what is in this rack's scope. True if something was
    /// stored.
    pub async fn lookup_mac(&self, mac: &str) -> bool {
        match mac.parse::<pxe_core::MacAddr>() {
            Ok(m) => match self.admit(m) {
                Ok(lookup) => lookup.await,
                Err(_) => false,
            },
            Err(_) => false,
        }
    }

    /// Admits a lookup of `mac` now, or counts why not. The future holds one of the
    /// `lookup_concurrency` slots until it ends or is dropped.
    pub(super) fn admit(
        &self,
        mac: pxe_core::MacAddr,
    ) -> Result<impl std::future::Future<Output = bool> + Send + 'static, Outcome> {
        let ticket = match self.inner.lookups.admit(mac) {
            Ok(t) => t,
            Err(outcome) => {
                tracing::debug!(%mac, outcome = outcome.as_str(), "upstream lookup not made");
                self.inner.metrics.upstream_lookup(outcome.as_str());
                return Err(outcome);
            }
        };
        let me = self.clone();
        Ok(async move {
            let outcome = me.ask(mac).await;
            me.inner.metrics.upstream_lookup(outcome.as_str());
            ticket.finish(outcome);
            outcome == Outcome::Found
        })
    }

    async fn ask(&self, mac: pxe_core::MacAddr) -> Outcome {
        let mac = mac.to_string();
        let mac = mac.as_str();
        let work = async {
            let eis: Vec<EthernetInterface> = self
                .get_list(
                    &self.smd(&format!("/Inventory/EthernetInterfaces?MACAddress={mac}")),
                    "EthernetInterfaces",
                )
                .await?;
            let Some(xname) = eis.iter().find_map(|e| e.component_id.clone()) else {
                return Ok::<_, anyhow::Error>(false);
            };
            let comps: Vec<Component> = self
                .get_list(
                    &self.smd(&format!("/State/Components?id={xname}")),
                    "Components",
                )
                .await?;
            let bps: Vec<BootParameters> = self
                .get_list(
                    &self.bss(&format!("/bootparameters?mac={mac}")),
                    "bootparameters",
                )
                .await?;
            let snap = self.scope(comps, eis, Vec::new(), bps);
            if snap.components.is_empty() {
                return Ok(false);
            }
            self.inner.store.apply_upstream(snap, false).await?;
            Ok(true)
        };
        match tokio::time::timeout(self.inner.cfg.lookup_deadline, work).await {
            Ok(Ok(found)) => {
                tracing::info!(mac, found, "upstream lookup for an unknown MAC");
                if found {
                    Outcome::Found
                } else {
                    Outcome::Unknown
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(mac, error = %format!("{e:#}"), "upstream lookup failed");
                Outcome::Error
            }
            Err(_) => {
                tracing::warn!(mac, deadline = ?self.inner.cfg.lookup_deadline, "upstream lookup timed out");
                Outcome::Error
            }
        }
    }
}
