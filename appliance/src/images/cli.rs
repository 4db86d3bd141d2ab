//! `rackboot image` subcommands.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// (being built)
    List,
}

pub async fn run(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::List => anyhow::bail!("rackboot image is not available in this build yet"),
    }
}
