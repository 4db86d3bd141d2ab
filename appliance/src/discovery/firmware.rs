//! Firmware: versions across the rack, and updates through the BMCs' UpdateService.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Discovery, NodeResult};

/// The image a firmware update sends: its URL on rackboot (for SimpleUpdate) and its bytes
/// (for a multipart push; a read-only mapping, not a copy).
#[derive(Debug, Clone)]
pub struct FirmwareImage {
    pub name: String,
    pub uri: String,
    pub data: bytes::Bytes,
    /// Push even when the BMC also offers SimpleUpdate.
    pub push: bool,
}

/// A node's firmware as last read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FirmwareRow {
    pub xname: String,
    pub bmc: String,
    pub model: Option<String>,
    pub bios_version: Option<String>,
    pub bmc_firmware: Option<String>,
}

impl Discovery {
    /// Firmware versions across the rack, from the RedfishEndpoints (as last discovered or
    /// updated).
    pub async fn firmware_list(&self) -> Result<Vec<FirmwareRow>, String> {
        let mut rows = Vec::new();
        for e in self
            .store
            .list_redfish_endpoints()
            .await
            .map_err(|e| e.to_string())?
        {
            let bmc_fw = e
                .extra
                .get("Managers")
                .and_then(|m| m.get(0))
                .and_then(|m| m.get("FirmwareVersion"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            for s in e
                .extra
                .get("Systems")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                rows.push(FirmwareRow {
                    xname: s
                        .get("Node")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    bmc: e.id.clone(),
                    model: s.get("Model").and_then(Value::as_str).map(str::to_owned),
                    bios_version: s
                        .get("BiosVersion")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    bmc_firmware: bmc_fw.clone(),
                });
            }
        }
        rows.sort_by(|a, b| a.xname.cmp(&b.xname));
        Ok(rows)
    }

    /// Updates each node's firmware: `UpdateService.SimpleUpdate` pointing the BMC at
    /// rackboot's own `/images/NAME`, or, where the BMC only offers it (or `push` asks), a
    /// multipart push of the image to `MultipartHttpPushUri`. The resulting Task is polled to
    /// the end, then the BIOS version is re-read and recorded.
    pub async fn firmware_update(
        &self,
        xnames: &[String],
        image: FirmwareImage,
        target: Option<String>,
    ) -> Vec<NodeResult> {
        let mut out = self
            .each(xnames, move |me, x| {
                let (image, target) = (image.clone(), target.clone());
                async move { me.firmware_one(&x, &image, target).await }
            })
            .await;
        // `each` carries one value per node; for firmware it is the new version, not power.
        for r in &mut out {
            r.bios_version = r.power.take();
        }
        out
    }

    async fn firmware_one(
        &self,
        xname: &str,
        image: &FirmwareImage,
        target: Option<String>,
    ) -> Result<(Option<String>, String), String> {
        let (base, uri, _) = self.locate(xname).await?;
        let mut bmc = self.connect(&base, false).await?;
        let r = async {
            let root = bmc.service_root().await.map_err(|e| e.to_string())?;
            let us_path = root
                .link("UpdateService")
                .ok_or("the BMC has no UpdateService")?;
            let us = bmc.get(&us_path).await.map_err(|e| e.to_string())?;
            let simple = us.at("/Actions/#UpdateService.SimpleUpdate/target");
            let push = us.str("MultipartHttpPushUri");
            let targets = [target.clone().unwrap_or_else(|| uri.clone())];
            let before = bmc.get(&uri).await.ok().and_then(|s| s.str("BiosVersion"));
            let (answer, location) = match (simple.filter(|_| !image.push), push) {
                (Some(action), _) => {
                    let body = json!({
                        "ImageURI": image.uri,
                        "TransferProtocol": "HTTP",
                        "Targets": targets,
                    });
                    bmc.post(&action, &body).await.map_err(|e| e.to_string())?
                }
                (_, Some(push_uri)) => {
                    tracing::info!(node = %xname, uri = %push_uri, bytes = image.data.len(), "firmware: multipart push");
                    let params = json!({
                        "Targets": targets,
                        "@Redfish.OperationApplyTime": "Immediate",
                    });
                    bmc.post_multipart(&push_uri, &params, &image.name, image.data.clone())
                        .await
                        .map_err(|e| e.to_string())?
                }
                (None, None) if image.push => {
                    return Err("--push asked for a multipart push, but the BMC has no MultipartHttpPushUri".to_owned());
                }
                (None, None) => {
                    return Err("the BMC's UpdateService offers neither SimpleUpdate nor MultipartHttpPushUri".to_owned());
                }
            };
            let task = location.or_else(|| redfish::odata_id(&answer));
            let mut state = "no task (completed at once)".to_owned();
            if let Some(task) = task {
                let deadline = tokio::time::Instant::now() + self.cfg.firmware_timeout;
                loop {
                    let t = bmc.get(&task).await.map_err(|e| e.to_string())?;
                    let s = t.str("TaskState").unwrap_or_default();
                    tracing::info!(node = %xname, task = %task, state = %s, percent = t.str("PercentComplete").unwrap_or_default(), "firmware update task");
                    match s.as_str() {
                        "Completed" => {
                            state = format!("task {task} completed ({})", t.str("TaskStatus").unwrap_or_else(|| "OK".into()));
                            break;
                        }
                        "Exception" | "Killed" | "Cancelled" | "Interrupted" => {
                            let msg = t
                                .0
                                .pointer("/Messages/0/Message")
                                .and_then(Value::as_str)
                                .unwrap_or("no message");
                            return Err(format!("firmware task {task} ended {s}: {msg}"));
                        }
                        _ => {}
                    }
                    if tokio::time::Instant::now() > deadline {
                        return Err(format!("firmware task {task} still {s} after {:?}", self.cfg.firmware_timeout));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            let after = bmc.get(&uri).await.map_err(|e| e.to_string())?.str("BiosVersion");
            self.record_version(xname, after.clone()).await?;
            Ok((
                after.clone(),
                format!(
                    "{state}; BIOS {} -> {}",
                    before.unwrap_or_else(|| "?".into()),
                    after.unwrap_or_else(|| "?".into())
                ),
            ))
        }
        .await;
        bmc.logout().await;
        r
    }

    async fn record_version(&self, xname: &str, version: Option<String>) -> Result<(), String> {
        let _serial = self.apply.lock().await;
        for mut e in self
            .store
            .list_redfish_endpoints()
            .await
            .map_err(|e| e.to_string())?
        {
            let mut changed = false;
            if let Some(Value::Array(systems)) = e.extra.get_mut("Systems") {
                for s in systems.iter_mut() {
                    if s.get("Node").and_then(Value::as_str) == Some(xname)
                        && let Some(o) = s.as_object_mut()
                    {
                        o.insert("BiosVersion".into(), json!(version));
                        changed = true;
                    }
                }
            }
            if changed {
                return self
                    .store
                    .put_redfish_endpoint(e, true)
                    .await
                    .map_err(|e| e.to_string());
            }
        }
        Ok(())
    }
}
