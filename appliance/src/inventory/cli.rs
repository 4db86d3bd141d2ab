//! `rackboot node` subcommands.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// (being built)
    List,
}

pub async fn run(cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::List => anyhow::bail!("rackboot node is not available in this build yet"),
    }
}
