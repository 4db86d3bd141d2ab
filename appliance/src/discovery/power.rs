//! Power and one-time boot overrides through the BMCs (OpenCHAMI PCS's meaning of each action).

use std::time::Duration;

use redfish::{Bmc, Res};
use serde_json::json;

use super::{Discovery, NodeResult, PowerAction};

impl Discovery {
    /// Runs `action` on every node, in parallel; one result each.
    pub async fn power(&self, xnames: &[String], action: PowerAction) -> Vec<NodeResult> {
        self.each(xnames, move |me, x| async move {
            me.power_one(&x, action).await
        })
        .await
    }

    /// One-time PXE boot override, then restart (or power on) each node.
    pub async fn reprovision(&self, xnames: &[String]) -> Vec<NodeResult> {
        self.each(xnames, |me, x| async move { me.reprovision_one(&x).await })
            .await
    }

    async fn reset(bmc: &Bmc, sys: &Res, uri: &str, wanted: &[&str]) -> Result<String, String> {
        let allowed = sys.reset_types();
        let kind = wanted
            .iter()
            .find(|w| allowed.is_empty() || allowed.iter().any(|a| a == *w))
            .ok_or_else(|| {
                format!("the BMC advertises reset types {allowed:?}, none of {wanted:?}")
            })?;
        let target = sys
            .reset_target()
            .unwrap_or_else(|| format!("{uri}/Actions/ComputerSystem.Reset"));
        bmc.post(&target, &json!({ "ResetType": kind }))
            .await
            .map_err(|e| e.to_string())?;
        Ok((*kind).to_owned())
    }

    async fn power_one(
        &self,
        xname: &str,
        action: PowerAction,
    ) -> Result<(Option<String>, String), String> {
        let (base, uri, _) = self.locate(xname).await?;
        let mut bmc = self.connect(&base, false).await?;
        let r = async {
            let sys = bmc.get(&uri).await.map_err(|e| e.to_string())?;
            let state = sys.str("PowerState");
            let detail = match action {
                PowerAction::Status => "power state read".to_owned(),
                PowerAction::On => Self::reset(&bmc, &sys, &uri, &["On", "ForceOn"]).await?,
                PowerAction::ForceOff => Self::reset(&bmc, &sys, &uri, &["ForceOff"]).await?,
                PowerAction::SoftOff => {
                    Self::reset(&bmc, &sys, &uri, &["GracefulShutdown"]).await?
                }
                PowerAction::Restart => {
                    Self::reset(&bmc, &sys, &uri, &["GracefulRestart", "ForceRestart"]).await?
                }
                PowerAction::Off => {
                    let first =
                        Self::reset(&bmc, &sys, &uri, &["GracefulShutdown", "ForceOff"]).await?;
                    if first == "ForceOff" {
                        first
                    } else {
                        let deadline = tokio::time::Instant::now() + self.cfg.off_timeout;
                        loop {
                            let s = bmc.get(&uri).await.map_err(|e| e.to_string())?;
                            if s.str("PowerState").as_deref() == Some("Off") {
                                break "GracefulShutdown".to_owned();
                            }
                            if tokio::time::Instant::now() > deadline {
                                Self::reset(&bmc, &s, &uri, &["ForceOff"]).await?;
                                break "GracefulShutdown, then ForceOff after the timeout"
                                    .to_owned();
                            }
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            };
            let after = if action == PowerAction::Status {
                state
            } else {
                bmc.get(&uri).await.ok().and_then(|s| s.str("PowerState"))
            };
            Ok::<_, String>((after, detail))
        }
        .await;
        bmc.logout().await;
        r
    }

    async fn reprovision_one(&self, xname: &str) -> Result<(Option<String>, String), String> {
        let (base, uri, _) = self.locate(xname).await?;
        let mut bmc = self.connect(&base, false).await?;
        let r = async {
            bmc.patch(
                &uri,
                &json!({"Boot": {"BootSourceOverrideEnabled": "Once", "BootSourceOverrideTarget": "Pxe"}}),
            )
            .await
            .map_err(|e| e.to_string())?;
            let sys = bmc.get(&uri).await.map_err(|e| e.to_string())?;
            let kind = if sys.str("PowerState").as_deref() == Some("On") {
                Self::reset(&bmc, &sys, &uri, &["ForceRestart", "GracefulRestart"]).await?
            } else {
                Self::reset(&bmc, &sys, &uri, &["On", "ForceOn"]).await?
            };
            let after = bmc.get(&uri).await.ok();
            Ok::<_, String>((
                after.as_ref().and_then(|s| s.str("PowerState")),
                format!(
                    "one-time boot override {} then {kind}",
                    after
                        .as_ref()
                        .and_then(|s| s.at("/Boot/BootSourceOverrideTarget"))
                        .unwrap_or_else(|| "Pxe".into())
                ),
            ))
        }
        .await;
        bmc.logout().await;
        r
    }
}
