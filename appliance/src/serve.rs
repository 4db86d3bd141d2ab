//! `rackboot serve`: wires the store, DHCP, TFTP and HTTP services together.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The rack network interface to serve (DHCP, TFTP, HTTP).
    #[arg(long, short = 'i', env = "RACKBOOT_INTERFACE")]
    pub interface: Option<String>,
    /// Where the store, images and keys live.
    #[arg(long, env = "RACKBOOT_DATA_DIR", default_value = "/var/lib/rackboot")]
    pub data_dir: PathBuf,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "serve on {:?} is not available in this build yet",
        args.interface
    )
}
