//! `rackboot token` subcommands.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// (being built)
    List,
}

pub async fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::List => anyhow::bail!("rackboot token is not available in this build yet"),
    }
}
