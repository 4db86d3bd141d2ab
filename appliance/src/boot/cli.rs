//! `rackboot boot` subcommands.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BootCommand {
    /// (being built)
    List,
}

pub async fn run(cmd: BootCommand) -> anyhow::Result<()> {
    match cmd {
        BootCommand::List => anyhow::bail!("rackboot boot is not available in this build yet"),
    }
}
