//! `rackboot token` subcommands.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

use super::LocalIssuer;
use super::scope::valid_scope;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a token from the local issuer key (created on first use) and print only the token,
    /// so `TOKEN=$(rackboot token create --scope admin)` works.
    Create {
        /// Where the issuer key lives (`<data-dir>/auth/issuer.pem`).
        #[arg(long, env = "RACKBOOT_DATA_DIR", default_value = "/var/lib/rackboot")]
        data_dir: PathBuf,
        /// Scopes to grant, e.g. `boot:read`, `inventory:write`, `admin` (repeat or space-separate).
        #[arg(long, short = 's', required = true, num_args = 1..)]
        scope: Vec<String>,
        /// Lifetime, e.g. `10m`, `1h` (at most 30 days).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Token subject (`sub`): who or what uses it.
        #[arg(long, default_value = "rackboot-admin")]
        subject: String,
    },
    /// Print the local issuer's public key set (what `/.well-known/jwks.json` serves).
    Jwks {
        #[arg(long, env = "RACKBOOT_DATA_DIR", default_value = "/var/lib/rackboot")]
        data_dir: PathBuf,
    },
}

/// Longest lifetime `token create` accepts.
const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

pub async fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            data_dir,
            scope,
            ttl,
            subject,
        } => {
            let scopes: Vec<String> = scope
                .iter()
                .flat_map(|s| s.split_whitespace())
                .map(str::to_owned)
                .collect();
            if let Some(bad) = scopes.iter().find(|s| !valid_scope(s)) {
                anyhow::bail!(
                    "unknown scope {bad:?}: use admin or <area>:read|write with area one of {}",
                    super::scope::AREAS.join(", ")
                );
            }
            if ttl.is_zero() || ttl > MAX_TTL {
                anyhow::bail!("--ttl must be between 1s and 30 days");
            }
            if subject.is_empty() || subject.len() > 256 {
                anyhow::bail!("--subject must be 1 to 256 characters");
            }
            let issuer = LocalIssuer::load_or_create(&data_dir)
                .context("cannot load or create the local issuer key (--data-dir)")?;
            let token = issuer.mint(&subject, &scopes, ttl)?;
            crate::outln!("{token}");
            Ok(())
        }
        TokenCommand::Jwks { data_dir } => {
            let issuer = LocalIssuer::load_or_create(&data_dir)
                .context("cannot load or create the local issuer key (--data-dir)")?;
            crate::output::print_json(&issuer.jwks());
            Ok(())
        }
    }
}
