//! `rackboot lease` subcommands (over the API: leases live in the running server's store).

use clap::Subcommand;

use super::api::LeaseView;
use crate::client::{ApiClient, ClientArgs};
use crate::output::{print_json, print_table};

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// List DHCP leases: static ones (inventory reservations) and dynamic ones (the pool).
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Include expired dynamic leases.
        #[arg(long)]
        all: bool,
    },
}

pub async fn run(cmd: LeaseCommand) -> anyhow::Result<()> {
    match cmd {
        LeaseCommand::List { client, all } => {
            let api = ApiClient::new(&client)?;
            let path = if all {
                "/rackboot/v1/leases?all=true"
            } else {
                "/rackboot/v1/leases"
            };
            let leases: Vec<LeaseView> = api.get(path).await?;
            if client.json() {
                print_json(&leases);
            } else {
                let rows: Vec<Vec<String>> = leases
                    .iter()
                    .map(|l| {
                        vec![
                            l.mac.clone(),
                            l.ip.to_string(),
                            l.kind.clone(),
                            l.hostname.clone().unwrap_or_default(),
                            l.expires.clone(),
                        ]
                    })
                    .collect();
                print_table(&["MAC", "IP", "KIND", "HOSTNAME", "EXPIRES"], &rows);
            }
            Ok(())
        }
    }
}
