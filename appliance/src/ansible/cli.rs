//! `rackboot ansible-inventory --list | --host NAME`: Ansible's inventory-script protocol over
//! `GET /ansible/v1/inventory`. Ansible runs the script with only `--list` or `--host NAME`, so
//! the connection comes from `RACKBOOT_URL` and `RACKBOOT_TOKEN` (as for every CLI command);
//! a symlink named `rackboot-ansible-inventory` to the binary is the script itself.

use clap::Args;
use serde_json::Value;

use crate::client::{ApiClient, ClientArgs};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["list", "host"])))]
pub struct AnsibleInventoryArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Every group and host, with `_meta.hostvars` (Ansible's `--list`).
    #[arg(long)]
    pub list: bool,
    /// One host's variables (Ansible's `--host NAME`; `{}` for a host it does not know).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
}

/// The argv[0] that makes the binary behave as `rackboot ansible-inventory`.
pub const SCRIPT_NAME: &str = "rackboot-ansible-inventory";

pub async fn run(args: AnsibleInventoryArgs) -> anyhow::Result<()> {
    let api = ApiClient::new(&args.client)?;
    let inventory: Value = api.get("/ansible/v1/inventory").await?;
    let out = match &args.host {
        Some(name) => inventory
            .pointer(&format!(
                "/_meta/hostvars/{}",
                name.replace('~', "~0").replace('/', "~1")
            ))
            .cloned()
            .unwrap_or_else(|| Value::Object(serde_json::Map::new())),
        None => inventory,
    };
    crate::outln!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
