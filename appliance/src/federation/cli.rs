//! `rackboot upstream`: the federation status.

use clap::Args;

use crate::client::{ApiClient, ClientArgs};
use crate::output::print_json;

#[derive(Debug, Args)]
pub struct UpstreamArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: UpstreamArgs) -> anyhow::Result<()> {
    let api = ApiClient::new(&args.client)?;
    let v: serde_json::Value = api.get("/rackboot/v1/upstream").await?;
    if args.client.json() {
        print_json(&v);
        return Ok(());
    }
    let field = |k: &str| v.get(k).cloned().unwrap_or(serde_json::Value::Null);
    if field("configured") != serde_json::Value::Bool(true) {
        crate::outln!(
            "no upstream configured ([upstream] in --config): this rackboot stands alone"
        );
        return Ok(());
    }
    let text = |k: &str| match field(k) {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    crate::outln!("upstream:      {} ({})", text("smd"), text("scope"));
    crate::outln!(
        "reachable:     {}",
        if field("reachable") == serde_json::Value::Bool(true) {
            "yes"
        } else {
            "NO (serving the local copy)"
        }
    );
    crate::outln!(
        "last pull:     {} {}",
        text("last_pull"),
        text("last_pull_stats")
    );
    crate::outln!(
        "outbox:        {} waiting, oldest {} s; {} pushed since start",
        text("outbox_depth"),
        text("outbox_oldest_age_s"),
        text("pushed")
    );
    crate::outln!("owned here:    {}", text("upstream_owned"));
    if field("last_error") != serde_json::Value::Null {
        crate::outln!(
            "last error:    {} ({})",
            text("last_error"),
            text("last_error_at")
        );
    }
    Ok(())
}
