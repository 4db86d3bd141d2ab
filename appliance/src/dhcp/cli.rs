//! `rackboot lease` subcommands.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// (being built)
    List,
}

pub async fn run(cmd: LeaseCommand) -> anyhow::Result<()> {
    match cmd {
        LeaseCommand::List => anyhow::bail!("rackboot lease is not available in this build yet"),
    }
}
