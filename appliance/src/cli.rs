//! The `rackboot` command line: one subcommand per capability, each defined in its module.
//!
//! Owns: the `rackboot` command line. May call: `version`, `config`, `netif`, `sys`, `seal`, `output`,
//! `store`, `http`, `metrics`, `auth`, `client`, `inventory`, `timeline`, `ipxe`, `tftp`, `dhcp`,
//! `images`, `cloudinit`, `identity`, `boot`, `discovery`, `federation`, `backup`, `ansible`, `dns`, `serve`,
//! `services`, `storm`, `update`.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// rackboot — a per-rack boot appliance: DHCP, TFTP and HTTP iPXE from one binary,
/// with OpenCHAMI-compatible boot (BSS) and inventory (SMD) APIs.
#[derive(Debug, Parser)]
#[command(
    name = "rackboot",
    version = crate::version::LONG,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log filter, in tracing's EnvFilter syntax (e.g. `info`, `rackboot=debug`).
    #[arg(long, global = true, env = "RACKBOOT_LOG", default_value = "info")]
    pub log_level: String,
    /// Log line format.
    #[arg(long, global = true, env = "RACKBOOT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve DHCP, TFTP and HTTP on a rack interface.
    Serve(crate::serve::ServeArgs),
    /// Mint API tokens from the local issuer key.
    #[command(subcommand)]
    Token(crate::auth::cli::TokenCommand),
    /// Manage boot images (kernels, initrds) served at /images/NAME.
    #[command(subcommand)]
    Image(crate::images::cli::ImageCommand),
    /// Manage nodes in the inventory (SMD Components and EthernetInterfaces).
    #[command(subcommand)]
    Node(crate::inventory::cli::NodeCommand),
    /// Manage boot parameters (BSS).
    #[command(subcommand)]
    Boot(crate::boot::cli::BootCommand),
    /// Show DHCP leases.
    #[command(subcommand)]
    Lease(crate::dhcp::cli::LeaseCommand),
    /// Per-node, per-group and cluster cloud-init data.
    #[command(subcommand, name = "cloud-init")]
    CloudInit(crate::cloudinit::cli::CloudInitCommand),
    /// Where every node's boot stands (nodes × stage); --watch for a live view.
    Status(crate::timeline::cli::StatusArgs),
    /// One node's boot timeline: every stage of its last boots, with timings.
    Timeline(crate::timeline::cli::TimelineArgs),
    /// Discover Redfish BMCs and put their nodes (with NIC MACs) into the inventory.
    Discover(crate::discovery::cli::DiscoverArgs),
    /// Power nodes on/off/restart through their BMCs, or read their power state.
    Power(crate::discovery::cli::PowerArgs),
    /// One-time PXE boot override, then restart the nodes.
    Reprovision(crate::discovery::cli::ReprovisionArgs),
    /// BMC credentials and certificate pins.
    #[command(subcommand)]
    Bmc(crate::discovery::cli::BmcCommand),
    /// Firmware versions and updates through the BMCs' UpdateService.
    #[command(subcommand)]
    Firmware(crate::discovery::cli::FirmwareCommand),
    /// The rack CA: show it, or replace it with an intermediate signed elsewhere.
    #[command(subcommand)]
    Ca(crate::identity::cli::CaCommand),
    /// Node certificates: list, revoke, approve pending enrollments, audit.
    #[command(subcommand)]
    Cert(crate::identity::cli::CertCommand),
    /// Secrets served over mTLS to one node or to a group's nodes.
    #[command(subcommand)]
    Secret(crate::identity::cli::SecretCommand),
    /// Node side: enroll for a certificate with the join token from the kernel command line,
    /// renew it, fetch secrets over mTLS.
    #[command(subcommand)]
    Agent(crate::identity::agent::AgentCommand),
    /// Federation with the upstream OpenCHAMI API: reachable, last pull, outbox depth.
    Upstream(crate::federation::cli::UpstreamArgs),
    /// Encrypted backups of the store, keys, config and images; verify and restore them.
    #[command(subcommand)]
    Backup(crate::backup::cli::BackupCommand),
    /// The appliance image itself: its A/B root slots, signed update bundles, updates.
    #[command(subcommand)]
    Appliance(crate::update::cli::ApplianceCommand),
    /// For packagers: writes the man pages or shell completions of this binary into a directory
    /// (`cargo xtask release` runs it, so they describe exactly the shipped command line).
    #[command(name = "__generate", hide = true)]
    #[cfg(feature = "generate")]
    Generate(GenerateArgs),
    /// Ansible dynamic inventory (`--list`, `--host NAME`) from the rack's inventory; a symlink
    /// named `rackboot-ansible-inventory` to this binary is an inventory script.
    #[command(name = "ansible-inventory")]
    AnsibleInventory(crate::ansible::cli::AnsibleInventoryArgs),
    /// Load-test a PXE server (rackboot or any other) with a boot storm of simulated nodes.
    #[cfg(feature = "storm")]
    Storm(crate::storm::StormArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    pub what: Generated,
    /// The directory to write into (created if missing).
    pub dir: std::path::PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generated {
    /// `rackboot.1` and one `rackboot-<subcommand>.1` per subcommand.
    Man,
    /// bash, zsh and fish completions.
    Completions,
}

/// Writes man pages (clap_mangen) or completions (clap_complete) for the `rackboot` command line.
#[cfg(feature = "generate")]
pub fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use clap::CommandFactory;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let mut cmd = Cli::command();
    match args.what {
        Generated::Man => clap_mangen::generate_to(cmd, &args.dir)?,
        Generated::Completions => {
            use clap_complete::Shell;
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                clap_complete::generate_to(shell, &mut cmd, "rackboot", &args.dir)?;
            }
        }
    }
    Ok(())
}

/// The process arguments; started as `rackboot-ansible-inventory` (a symlink Ansible runs as
/// an inventory script with `--list` or `--host NAME`), as `rackboot ansible-inventory …`.
pub fn args() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let script = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == crate::ansible::cli::SCRIPT_NAME);
    if script {
        args.insert(1, "ansible-inventory".into());
    }
    args
}

/// Sets up `tracing` for the whole process. Logs go to stderr; stdout is for command output.
pub fn init_logging(args: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log that cannot be written (its partition is full) must not stop rackboot: with
        // this on, tracing-subscriber reports the failed write with eprintln!, which panics on
        // the same full disk and kills whichever task was logging (docs/runbook-disk-full.md).
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // One TLS provider for the whole process (aws-lc-rs); rustls panics without a default.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match cli.command {
        Command::Serve(args) => crate::services::run(args).await,
        Command::Token(cmd) => crate::auth::cli::run(cmd).await,
        Command::Image(cmd) => crate::images::cli::run(cmd).await,
        Command::Node(cmd) => crate::inventory::cli::run(cmd).await,
        Command::Boot(cmd) => crate::boot::cli::run(cmd).await,
        Command::Lease(cmd) => crate::dhcp::cli::run(cmd).await,
        Command::CloudInit(cmd) => crate::cloudinit::cli::run(cmd).await,
        Command::Status(args) => crate::timeline::cli::status(args).await,
        Command::Timeline(args) => crate::timeline::cli::timeline(args).await,
        Command::Discover(args) => crate::discovery::cli::discover(args).await,
        Command::Power(args) => crate::discovery::cli::power(args).await,
        Command::Reprovision(args) => crate::discovery::cli::reprovision(args).await,
        Command::Bmc(cmd) => crate::discovery::cli::bmc(cmd).await,
        Command::Firmware(cmd) => crate::discovery::cli::firmware(cmd).await,
        Command::Ca(cmd) => crate::identity::cli::ca(cmd).await,
        Command::Cert(cmd) => crate::identity::cli::cert(cmd).await,
        Command::Secret(cmd) => crate::identity::cli::secret(cmd).await,
        Command::Agent(cmd) => crate::identity::agent::run(cmd).await,
        Command::Upstream(args) => crate::federation::cli::run(args).await,
        #[cfg(feature = "generate")]
        Command::Generate(args) => generate(&args),
        Command::Backup(cmd) => crate::backup::cli::run(cmd).await,
        Command::Appliance(cmd) => crate::update::cli::run(cmd).await,
        Command::AnsibleInventory(args) => crate::ansible::cli::run(args).await,
        #[cfg(feature = "storm")]
        Command::Storm(args) => crate::storm::run(args).await,
    }
}
