//! `rackboot image` subcommands.
//!
//! They work directly on the data dir (not over the API): images are large, the file is already
//! on the appliance, and file permissions on the data dir are the authorization. They are safe
//! to run while `rackboot serve` runs: blobs appear by atomic rename and the name is recorded
//! after the blob is durable, so the server sees either the old image or the complete new one.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use clap::Subcommand;

use super::ImageStore;
use crate::client::OutputFormat;
use crate::output::{print_json, print_table};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import FILE as image NAME (replaces an existing NAME); served at /images/NAME.
    Import {
        #[arg(long, env = "RACKBOOT_DATA_DIR", default_value = "/var/lib/rackboot")]
        data_dir: PathBuf,
        /// Refuse the import unless the file has this SHA-256 (hex).
        #[arg(long)]
        sha256: Option<String>,
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        /// Image name: 1 to 128 of A-Z a-z 0-9 . _ -
        name: String,
        file: PathBuf,
    },
    /// List images.
    #[command(alias = "ls")]
    List {
        #[arg(long, env = "RACKBOOT_DATA_DIR", default_value = "/var/lib/rackboot")]
        data_dir: PathBuf,
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Remove image NAME (its data goes too unless another name uses it).
    #[command(alias = "remove")]
    Rm {
        #[arg(long, env = "RACKBOOT_DATA_DIR", default_value = "/var/lib/rackboot")]
        data_dir: PathBuf,
        name: String,
    },
}

pub async fn run(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Import {
            data_dir,
            sha256,
            output,
            name,
            file,
        } => {
            let store = open(&data_dir).await?;
            let rec = store
                .import_file(&name, &file, sha256.as_deref())
                .await
                .with_context(|| format!("cannot import {} as {name}", file.display()))?;
            match output {
                OutputFormat::Json => print_json(&rec),
                OutputFormat::Table => {
                    crate::outln!("{}  sha256:{}  {} bytes", rec.name, rec.sha256, rec.size);
                }
            }
            Ok(())
        }
        ImageCommand::List { data_dir, output } => {
            let store = open(&data_dir).await?;
            let list = store.list().await?;
            match output {
                OutputFormat::Json => print_json(&list),
                OutputFormat::Table => {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|r| {
                            let created = humantime::format_rfc3339_seconds(
                                UNIX_EPOCH + Duration::from_secs(r.created),
                            );
                            let state = if store.is_corrupt(&r.sha256) {
                                "CORRUPT"
                            } else {
                                "ok"
                            };
                            vec![
                                r.name.clone(),
                                r.size.to_string(),
                                r.sha256.chars().take(16).collect(),
                                created.to_string(),
                                state.to_owned(),
                            ]
                        })
                        .collect();
                    print_table(&["NAME", "SIZE", "SHA256", "CREATED", "STATE"], &rows);
                }
            }
            Ok(())
        }
        ImageCommand::Rm { data_dir, name } => {
            let store = open(&data_dir).await?;
            if !store.remove(&name).await? {
                anyhow::bail!("no image named {name:?} (see `rackboot image list`)");
            }
            Ok(())
        }
    }
}

async fn open(data_dir: &std::path::Path) -> anyhow::Result<ImageStore> {
    let context = || {
        format!(
            "cannot open the image store in {} (--data-dir)",
            data_dir.display()
        )
    };
    let store = crate::store::Store::open(data_dir).with_context(context)?;
    ImageStore::open(store, data_dir)
        .await
        .with_context(context)
}
