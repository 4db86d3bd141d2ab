//! Node secrets: stored sealed (the name and scope bound in as associated data), read by a node
//! over mTLS, its own value before its groups'; every write and read audited.

use super::{Identity, NodeIdentity};
use crate::http::Problem;
use crate::store::{Audit, SecretScope};

impl Identity {
    /// Stores a secret for a node or group (sealed; the name and scope are bound into it).
    pub async fn set_secret(
        &self,
        name: &str,
        scope: SecretScope,
        value: &str,
    ) -> Result<(), Problem> {
        let aad = format!("{}:{}:{name}", scope.kind, scope.scope);
        let sealed = self
            .inner
            .sealer
            .seal(&aad, value)
            .map_err(Problem::internal)?;
        self.inner
            .store
            .put_secret(name.to_owned(), scope.clone(), sealed)
            .await?;
        self.inner
            .store
            .audit(Audit {
                xname: (scope.kind == "node").then(|| scope.scope.clone()),
                action: "secret-set",
                serial: None,
                ok: true,
                detail: format!("{name} for {} {}", scope.kind, scope.scope),
            })
            .await?;
        Ok(())
    }

    /// Secret `name` for `node`: its own value wins over a group's.
    pub async fn secret(&self, node: &NodeIdentity, name: &str) -> Result<String, Problem> {
        let scopes = self.inner.store.secret_scopes(name.to_owned()).await?;
        let groups: Vec<String> = self
            .inner
            .store
            .list_groups()
            .await?
            .into_iter()
            .filter(|g| g.members.ids.iter().any(|m| m == &node.xname))
            .map(|g| g.label)
            .collect();
        let pick = scopes
            .iter()
            .find(|(s, _)| s.kind == "node" && s.scope == node.xname)
            .or_else(|| {
                scopes
                    .iter()
                    .find(|(s, _)| s.kind == "group" && groups.contains(&s.scope))
            });
        let Some((scope, sealed)) = pick else {
            return Err(self
                .refuse(
                    Some(&node.xname),
                    "secret-read",
                    Problem::not_found(format!(
                        "no secret {name:?} for {} or its groups",
                        node.xname
                    )),
                )
                .await);
        };
        let aad = format!("{}:{}:{name}", scope.kind, scope.scope);
        let value = self
            .inner
            .sealer
            .open_sealed(&aad, sealed)
            .map_err(Problem::internal)?;
        self.inner
            .store
            .audit(Audit {
                xname: Some(node.xname.clone()),
                action: "secret-read",
                serial: Some(node.serial.clone()),
                ok: true,
                detail: format!("{name} ({} {})", scope.kind, scope.scope),
            })
            .await?;
        Ok(value)
    }
}
