//! Pushing through the outbox: each queued change delivered in order (POST, PUT on 409),
//! deleted only after the upstream accepted it.

use anyhow::bail;

use super::Federation;
use crate::store::OutboxItem;

impl Federation {
    /// Delivers one outbox item; Ok when the upstream holds it.
    pub(super) async fn deliver(&self, item: &OutboxItem) -> anyhow::Result<()> {
        match item.kind.as_str() {
            "RedfishEndpoint" => {
                let url = self.smd("/Inventory/RedfishEndpoints");
                let resp = self.send(|h| h.post(&url).json(&item.body)).await?;
                let status = resp.status();
                if status.is_success() {
                    return Ok(());
                }
                if status == reqwest::StatusCode::CONFLICT {
                    let put = self.smd(&format!("/Inventory/RedfishEndpoints/{}", item.key));
                    let resp = self.send(|h| h.put(&put).json(&item.body)).await?;
                    if resp.status().is_success() {
                        return Ok(());
                    }
                    bail!("PUT {put}: {}", resp.status());
                }
                let body = crate::http::capped::read_prefix(resp, 200).await;
                bail!(
                    "POST {url}: {status}: {}",
                    body.chars().take(200).collect::<String>()
                )
            }
            "ComponentState" => {
                let url = self.smd(&format!("/State/Components/{}/StateData", item.key));
                let resp = self.send(|h| h.patch(&url).json(&item.body)).await?;
                let status = resp.status();
                if status.is_success() {
                    return Ok(());
                }
                if status == reqwest::StatusCode::NOT_FOUND {
                    // Not a component the upstream knows: nothing to update, nothing to retry.
                    tracing::warn!(xname = %item.key, "upstream has no such component; state not pushed");
                    return Ok(());
                }
                bail!("PATCH {url}: {status}")
            }
            "ComponentFlag" => {
                let url = self.smd(&format!("/State/Components/{}/FlagOnly", item.key));
                let resp = self.send(|h| h.patch(&url).json(&item.body)).await?;
                let status = resp.status();
                if status.is_success() {
                    return Ok(());
                }
                if status == reqwest::StatusCode::NOT_FOUND {
                    tracing::warn!(xname = %item.key, "upstream has no such component; flag not pushed");
                    return Ok(());
                }
                bail!("PATCH {url}: {status}")
            }
            other => {
                tracing::error!(kind = other, "outbox item of an unknown kind dropped");
                Ok(())
            }
        }
    }

    /// Sends the outbox in order until it is empty; stops at the first failure.
    pub async fn drain(&self) -> anyhow::Result<usize> {
        let mut sent = 0;
        loop {
            let head = self.inner.store.outbox_head(256).await?;
            if head.is_empty() {
                return Ok(sent);
            }
            let mut done = Vec::new();
            let mut failed = None;
            for item in &head {
                match self.deliver(item).await {
                    Ok(()) => done.push(item.id),
                    Err(e) => {
                        failed = Some((item.id, e));
                        break;
                    }
                }
            }
            sent += done.len();
            let batch = u64::try_from(done.len()).unwrap_or(0);
            if !done.is_empty() {
                self.inner.store.outbox_done(done).await?;
            }
            self.inner
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pushed += batch;
            if let Some((id, e)) = failed {
                self.inner.store.outbox_failed(id, format!("{e:#}")).await?;
                return Err(e);
            }
        }
    }
}
