//! `rackboot backup create/verify/restore/keygen`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::secret;
use crate::client::OutputFormat;
use crate::output::{print_json, print_table};

#[derive(Debug, Subcommand)]
#[command(after_help = "\
A backup TARGET is a directory that holds many backups: one encrypted archive per backup \
(TARGET/rackboot-<UTC time>.tar.age) and the image blobs they share, by content hash \
(TARGET/blobs/sha256/), so a second backup to the same TARGET copies only new blobs. \
`verify` and `restore` take one ARCHIVE file and find its blobs in the `blobs/` directory \
beside it (or --blobs DIR). The passphrase comes from --passphrase-file, \
RACKBOOT_BACKUP_PASSPHRASE or a terminal prompt, never from the command line. \
See docs/runbook-backup.md.")]
pub enum BackupCommand {
    /// Back up the store (a consistent snapshot, safe while `rackboot serve` runs), the keys,
    /// the config file and the image blobs into the directory TARGET.
    Create(CreateArgs),
    /// Decrypt an archive and check every member, the store snapshot and every blob it needs;
    /// print what it holds. Writes nothing.
    Verify(VerifyArgs),
    /// Restore an archive as a data dir. Refuses a non-empty data dir unless --force.
    Restore(RestoreArgs),
    /// Print a new age identity (AGE-SECRET-KEY-1…) on stdout and its recipient (age1…) on
    /// stderr: encrypt scheduled backups to the recipient, keep the identity offline.
    Keygen,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Target directory (created if missing): the archive is written as
    /// TARGET/rackboot-<UTC time>.tar.age, new image blobs into TARGET/blobs/sha256/.
    pub target: PathBuf,
    /// The data dir to back up [default: `data_dir` of the --config file, else
    /// /var/lib/rackboot].
    #[arg(long, env = "RACKBOOT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The config file `rackboot serve` uses (same flag and variable as serve); it is
    /// included in the backup. Without it the backup holds no config.
    #[arg(long, short = 'c', env = "RACKBOOT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Encrypt to this age recipient (age1…, from `rackboot backup keygen` or age-keygen)
    /// instead of a passphrase. Repeat for several.
    #[arg(long)]
    pub recipient: Vec<String>,
    /// File whose first line is the passphrase.
    #[arg(long, env = "RACKBOOT_BACKUP_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// File whose first line is the passphrase.
    #[arg(long, env = "RACKBOOT_BACKUP_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// age identity file (AGE-SECRET-KEY-1…) for an archive encrypted to a recipient.
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// Where the archive's image blobs are [default: `blobs/` beside ARCHIVE].
    #[arg(long)]
    pub blobs: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The archive (a TARGET/rackboot-*.tar.age file).
    pub archive: PathBuf,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The archive (a TARGET/rackboot-*.tar.age file).
    pub archive: PathBuf,
    /// The data dir to restore into: new, or empty (a fresh data partition's lost+found is
    /// ignored). The config file from the backup goes to DATA_DIR/restored-config/.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Restore into a non-empty data dir: its contents are first moved aside (to
    /// DATA_DIR.before-restore-<time>, or DATA_DIR/.before-restore-<time> on a mount point),
    /// never deleted. Stop `rackboot serve` first.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

pub async fn run(cmd: BackupCommand) -> anyhow::Result<()> {
    // Everything below is file IO and scrypt: off the async runtime.
    tokio::task::spawn_blocking(move || run_blocking(cmd)).await?
}

fn run_blocking(cmd: BackupCommand) -> anyhow::Result<()> {
    match cmd {
        BackupCommand::Create(a) => {
            let seal = secret::seal(&a.recipient, a.passphrase_file.as_deref())?;
            if a.config.is_none() {
                eprintln!(
                    "note: no config file given (--config, RACKBOOT_CONFIG): the backup holds none"
                );
            }
            let data_dir = match a.data_dir {
                Some(d) => d,
                None => data_dir_of(a.config.as_deref())?,
            };
            let created = super::create(&super::CreateOptions {
                data_dir,
                config: a.config,
                target: a.target,
                seal,
                keep: None,
            })?;
            match a.output {
                OutputFormat::Json => print_json(&serde_json::json!({
                    "archive": created.archive,
                    "created": created.manifest.created,
                    "schema_version": created.manifest.schema_version,
                    "members": created.manifest.members.len(),
                    "blobs": created.manifest.blobs.len(),
                    "blobs_written": created.blobs_written,
                    "blob_bytes_written": created.blob_bytes_written,
                    "blobs_present": created.blobs_present,
                    "store": created.summary,
                })),
                OutputFormat::Table => {
                    crate::outln!("{}", created.archive.display());
                    eprintln!(
                        "backup created: {} files, {} image blobs ({} new, {} bytes; {} already in the target)",
                        created.manifest.members.len(),
                        created.manifest.blobs.len(),
                        created.blobs_written,
                        created.blob_bytes_written,
                        created.blobs_present
                    );
                }
            }
        }
        BackupCommand::Verify(a) => {
            let unseal = secret::unseal(
                a.keys.identity.as_deref(),
                a.keys.passphrase_file.as_deref(),
            )?;
            let blobs = blobs_dir(&a.archive, a.keys.blobs);
            let v = super::verify(&a.archive, &unseal, &blobs)?;
            match a.output {
                OutputFormat::Json => print_json(&v),
                OutputFormat::Table => print_inspected(&v),
            }
        }
        BackupCommand::Restore(a) => {
            let unseal = secret::unseal(
                a.keys.identity.as_deref(),
                a.keys.passphrase_file.as_deref(),
            )?;
            let blobs = blobs_dir(&a.archive, a.keys.blobs);
            let r = super::restore(
                &a.archive,
                &unseal,
                &super::RestoreOptions {
                    data_dir: a.data_dir,
                    blobs_dir: blobs,
                    force: a.force,
                },
            )?;
            match a.output {
                OutputFormat::Json => print_json(&r),
                OutputFormat::Table => {
                    crate::outln!(
                        "restored the backup of {} ({}) into {}",
                        r.manifest.created,
                        r.manifest.source_data_dir,
                        r.data_dir
                    );
                    crate::outln!(
                        "store: schema {}, {} nodes, {} leases, {} certificates, {} images",
                        r.store.schema_version,
                        r.store.nodes,
                        r.store.leases,
                        r.store.certs,
                        r.store.images.len()
                    );
                    if let Some(c) = &r.config {
                        crate::outln!(
                            "config file (was {}): {c}",
                            r.manifest.config_file.as_deref().unwrap_or("?")
                        );
                    }
                    if let Some(m) = &r.moved_aside {
                        crate::outln!("the data dir's previous contents: {m}");
                    }
                }
            }
        }
        BackupCommand::Keygen => {
            let id = age::x25519::Identity::generate();
            let recipient = id.to_public().to_string();
            use age::secrecy::ExposeSecret;
            eprintln!("recipient: {recipient}");
            crate::outln!("# recipient: {recipient}");
            crate::outln!("{}", id.to_string().expose_secret());
        }
    }
    Ok(())
}

/// `data_dir` of the config file (read loosely: a backup of an appliance whose config no
/// longer validates must still work), else rackboot's default.
fn data_dir_of(config: Option<&Path>) -> anyhow::Result<PathBuf> {
    let default = PathBuf::from("/var/lib/rackboot");
    let Some(path) = config else {
        return Ok(default);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the config file {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| anyhow::anyhow!("{} is not TOML: {e}", path.display()))?;
    Ok(table
        .get("data_dir")
        .and_then(|v| v.as_str())
        .map_or(default, PathBuf::from))
}

fn blobs_dir(archive: &Path, given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| super::default_blobs_dir(archive))
}

fn print_inspected(v: &super::Inspected) {
    let m = &v.manifest;
    crate::outln!("archive:          {}", v.archive);
    crate::outln!(
        "integrity:        ok (decrypted, {} members and {} blobs match their SHA-256)",
        m.members.len(),
        v.blobs_checked
    );
    crate::outln!("created:          {}", m.created);
    crate::outln!("rackboot version: {}", m.rackboot_version);
    crate::outln!("schema version:   {}", v.store.schema_version);
    crate::outln!("source data dir:  {}", m.source_data_dir);
    crate::outln!(
        "config file:      {}",
        m.config_file.as_deref().unwrap_or("(none)")
    );
    let s = &v.store;
    crate::outln!(
        "store:            {} nodes ({} components), {} interfaces, {} BMCs, {} boot parameters, {} leases, {} certificates ({} valid), {} secrets",
        s.nodes,
        s.components,
        s.ethernet_interfaces,
        s.redfish_endpoints,
        s.boot_parameters,
        s.leases,
        s.certs,
        s.certs_valid,
        s.secrets
    );
    crate::outln!();
    print_table(
        &["KEY", "PATH", "FINGERPRINT"],
        &v.keys
            .iter()
            .map(|k| vec![k.what.clone(), k.path.clone(), k.fingerprint.clone()])
            .collect::<Vec<_>>(),
    );
    crate::outln!();
    print_table(
        &["IMAGE", "SIZE", "SHA256"],
        &s.images
            .iter()
            .map(|i| vec![i.name.clone(), i.size.to_string(), i.sha256.clone()])
            .collect::<Vec<_>>(),
    );
}
