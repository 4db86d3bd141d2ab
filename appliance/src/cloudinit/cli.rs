//! `rackboot cloud-init …`: per-node, per-group and cluster-wide cloud-init data (over the API).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Map, Value};

use super::{CiFile, CiGroup, ClusterDefaults, Encoding, NodeData};
use crate::client::{ApiClient, ClientArgs};
use crate::output::{print_json, print_table};

#[derive(Debug, Subcommand)]
pub enum CloudInitCommand {
    /// Set a node's own cloud-init data (merged last, over its groups and the defaults).
    Set {
        /// The node's xname.
        xname: String,
        /// A `#cloud-config` YAML file; may use {{ xname }}, {{ nid }}, {{ hostname }},
        /// {{ ip }}, {{ mac }}, {{ groups }}, {{ cluster_name }}.
        #[arg(long, value_name = "FILE")]
        user_data: Option<PathBuf>,
        /// Extra meta-data keys, as a JSON object.
        #[arg(long, value_name = "JSON")]
        meta_data: Option<String>,
        /// An SSH public key for the node (repeatable).
        #[arg(long = "public-key", value_name = "KEY")]
        public_keys: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a node's own cloud-init data as stored.
    Show {
        xname: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show exactly what a node will get: meta-data, user-data (merged) and vendor-data.
    Render {
        xname: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set a group's cloud-init data (the group is an SMD group label).
    GroupSet {
        name: String,
        #[arg(long, value_name = "FILE")]
        user_data: Option<PathBuf>,
        #[arg(long, value_name = "JSON")]
        meta_data: Option<String>,
        /// Merge order among groups: lower first, so the higher priority wins.
        #[arg(long, default_value_t = 0)]
        priority: i64,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List groups with cloud-init data.
    Groups {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set the cluster defaults (merged first, under every group and node).
    Defaults {
        #[arg(long)]
        cluster_name: Option<String>,
        #[arg(long, value_name = "FILE")]
        user_data: Option<PathBuf>,
        #[arg(long, value_name = "JSON")]
        meta_data: Option<String>,
        #[arg(long = "public-key", value_name = "KEY")]
        public_keys: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn read_file(path: Option<PathBuf>) -> anyhow::Result<Option<CiFile>> {
    path.map(|p| {
        let content = std::fs::read_to_string(&p)
            .with_context(|| format!("cannot read {} (--user-data)", p.display()))?;
        Ok(CiFile {
            content,
            encoding: Encoding::Plain,
        })
    })
    .transpose()
}

fn meta(json: Option<String>) -> anyhow::Result<Map<String, Value>> {
    match json {
        None => Ok(Map::new()),
        Some(s) => match serde_json::from_str(&s).context("--meta-data is not JSON")? {
            Value::Object(m) => Ok(m),
            _ => {
                anyhow::bail!("--meta-data must be a JSON object, e.g. '{{\"role\":\"compute\"}}'")
            }
        },
    }
}

pub async fn run(cmd: CloudInitCommand) -> anyhow::Result<()> {
    match cmd {
        CloudInitCommand::Set {
            xname,
            user_data,
            meta_data,
            public_keys,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let data = NodeData {
                meta_data: meta(meta_data)?,
                public_keys,
                file: read_file(user_data)?,
            };
            api.put(&format!("/cloud-init/admin/instance-info/{xname}"), &data)
                .await?;
            eprintln!(
                "cloud-init data of {xname} saved; `rackboot cloud-init render {xname}` shows the result"
            );
            Ok(())
        }
        CloudInitCommand::Show { xname, client } => {
            let api = ApiClient::new(&client)?;
            let v: Value = api
                .get(&format!("/cloud-init/admin/instance-info/{xname}"))
                .await?;
            print_json(&v);
            Ok(())
        }
        CloudInitCommand::Render { xname, client } => {
            let api = ApiClient::new(&client)?;
            let v: Value = api
                .get(&format!("/cloud-init/admin/render/{xname}"))
                .await?;
            if client.json() {
                print_json(&v);
            } else {
                for doc in ["meta-data", "user-data", "vendor-data"] {
                    crate::outln!("--- {doc}");
                    crate::out!("{}", v.get(doc).and_then(Value::as_str).unwrap_or(""));
                    crate::outln!();
                }
            }
            Ok(())
        }
        CloudInitCommand::GroupSet {
            name,
            user_data,
            meta_data,
            priority,
            description,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let g = CiGroup {
                name: name.clone(),
                description,
                priority,
                meta_data: meta(meta_data)?,
                file: read_file(user_data)?,
            };
            api.put(&format!("/cloud-init/admin/groups/{name}"), &g)
                .await?;
            eprintln!("cloud-init group {name} saved");
            Ok(())
        }
        CloudInitCommand::Groups { client } => {
            let api = ApiClient::new(&client)?;
            let groups: Vec<CiGroup> = api.get("/cloud-init/admin/groups").await?;
            if client.json() {
                print_json(&groups);
            } else {
                let rows: Vec<Vec<String>> = groups
                    .iter()
                    .map(|g| {
                        vec![
                            g.name.clone(),
                            g.priority.to_string(),
                            g.meta_data.len().to_string(),
                            g.file.as_ref().map_or(0, |f| f.content.len()).to_string(),
                            g.description.clone(),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "GROUP",
                        "PRIORITY",
                        "META-KEYS",
                        "USER-DATA-BYTES",
                        "DESCRIPTION",
                    ],
                    &rows,
                );
            }
            Ok(())
        }
        CloudInitCommand::Defaults {
            cluster_name,
            user_data,
            meta_data,
            public_keys,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let mut d: ClusterDefaults = api.get("/cloud-init/admin/cluster-defaults").await?;
            if let Some(c) = cluster_name {
                d.cluster_name = c;
            }
            if let Some(f) = read_file(user_data)? {
                d.file = Some(f);
            }
            if meta_data.is_some() {
                d.meta_data = meta(meta_data)?;
            }
            if !public_keys.is_empty() {
                d.public_keys = public_keys;
            }
            api.put("/cloud-init/admin/cluster-defaults", &d).await?;
            eprintln!("cloud-init cluster defaults saved");
            Ok(())
        }
    }
}
