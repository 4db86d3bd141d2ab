//! `rackboot discover`, `rackboot power`, `rackboot reprovision`, `rackboot bmc …`.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::PowerAction;
use super::routes::{
    CredentialsRequest, DiscoverRequest, DiscoverResponse, NodeResults, NodesRequest, PowerRequest,
};
use crate::client::{ApiClient, ClientArgs};
use crate::output::{print_json, print_table};

#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// BMCs: URLs (https://10.0.0.5), IPv4 addresses or CIDRs (192.0.2.0/24).
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// Accept any BMC certificate for this run (logged by the server). The default pins each
    /// BMC's certificate on first use.
    #[arg(long)]
    pub insecure: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct PowerArgs {
    /// on, off (graceful, then forced after discovery.off_timeout), soft-off, force-off,
    /// restart, status.
    #[arg(value_enum)]
    pub action: PowerAction,
    /// Node xnames.
    #[arg(required = true)]
    pub xnames: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ReprovisionArgs {
    /// Node xnames: each gets a one-time PXE boot override, then a restart (or power on).
    #[arg(required = true)]
    pub xnames: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum FirmwareCommand {
    /// Firmware versions across the rack (as last discovered or updated).
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Update nodes' firmware from an image in rackboot's store; waits for the BMC's task.
    Update {
        #[arg(required = true)]
        xnames: Vec<String>,
        /// Image name (rackboot image import NAME FILE).
        #[arg(long)]
        image: String,
        /// Redfish URI to update (default: the node's ComputerSystem).
        #[arg(long)]
        target: Option<String>,
        /// Upload the image to the BMC (multipart, MultipartHttpPushUri) even when it could
        /// fetch it from rackboot with SimpleUpdate. Without SimpleUpdate, pushing is automatic.
        #[arg(long)]
        push: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn firmware(cmd: FirmwareCommand) -> anyhow::Result<()> {
    match cmd {
        FirmwareCommand::List { client } => {
            let api = ApiClient::new(&client)?;
            let rows: Vec<super::FirmwareRow> = api.get("/rackboot/v1/firmware").await?;
            if client.json() {
                print_json(&rows);
            } else {
                let t: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        vec![
                            r.xname.clone(),
                            r.bmc.clone(),
                            r.model.clone().unwrap_or_default(),
                            r.bios_version.clone().unwrap_or_default(),
                            r.bmc_firmware.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                print_table(&["NODE", "BMC", "MODEL", "BIOS", "BMC FIRMWARE"], &t);
            }
            Ok(())
        }
        FirmwareCommand::Update {
            xnames,
            image,
            target,
            push,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            eprintln!(
                "updating {} node(s) from image {image}; waiting for the BMC tasks…",
                xnames.len()
            );
            let resp = api
                .post(
                    "/rackboot/v1/firmware/update",
                    &super::routes::FirmwareRequest {
                        xnames,
                        image,
                        target,
                        push,
                    },
                )
                .await?
                .context("rackboot sent no results")?;
            print_node_results(&serde_json::from_value(resp)?, client.json())
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum BmcCommand {
    /// Store BMC credentials (sealed at rest). The password is read from stdin or --password-file,
    /// never from the command line.
    CredsSet {
        /// "default", or one BMC's address.
        #[arg(long, default_value = "default")]
        target: String,
        #[arg(long)]
        username: String,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List stored credentials (targets and usernames; never passwords).
    CredsList {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Forget a BMC's pinned certificate (after a deliberate re-key), e.g. https://10.0.0.5
    Unpin {
        base: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn print_node_results(r: &NodeResults, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(r);
    } else {
        let rows: Vec<Vec<String>> = r
            .results
            .iter()
            .map(|n| {
                vec![
                    n.xname.clone(),
                    if n.ok { "ok".into() } else { "FAILED".into() },
                    n.power
                        .clone()
                        .or_else(|| n.bios_version.clone())
                        .unwrap_or_default(),
                    n.error
                        .clone()
                        .or_else(|| n.detail.clone())
                        .unwrap_or_default(),
                ]
            })
            .collect();
        let what = if r.results.iter().any(|n| n.bios_version.is_some()) {
            "BIOS"
        } else {
            "POWER"
        };
        print_table(&["NODE", "RESULT", what, "DETAIL"], &rows);
    }
    if r.results.iter().any(|n| !n.ok) {
        anyhow::bail!("some nodes failed (see above)");
    }
    Ok(())
}

pub async fn discover(args: DiscoverArgs) -> anyhow::Result<()> {
    let api = ApiClient::new(&args.client)?;
    eprintln!("discovering {} target(s)…", args.targets.len());
    let body = DiscoverRequest {
        targets: args.targets,
        insecure: args.insecure,
    };
    // A progress bar on a terminal; nothing extra in scripts and logs.
    let tty = std::io::stderr().is_terminal() && !args.client.json();
    let resp = api
        .post_ndjson("/rackboot/v1/discovery", &body, |line| {
            if let Some(p) = line
                .get("progress")
                .and_then(|p| serde_json::from_value::<super::Progress>(p.clone()).ok())
                && tty
            {
                eprint!("\r\x1b[K{}", progress_line(&p));
            }
        })
        .await?;
    if tty {
        eprintln!();
    }
    let resp: DiscoverResponse =
        serde_json::from_value(resp).context("rackboot sent no discovery results")?;
    if args.client.json() {
        print_json(&resp);
    } else {
        let mut rows = Vec::new();
        for t in &resp.results {
            if t.nodes.is_empty() {
                rows.push(vec![
                    t.target.clone(),
                    t.bmc.clone().unwrap_or_else(|| "-".into()),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    t.error.clone().unwrap_or_default(),
                ]);
            }
            for n in &t.nodes {
                rows.push(vec![
                    t.target.clone(),
                    t.bmc.clone().unwrap_or_default(),
                    format!("{} (nid {})", n.xname, n.nid),
                    n.macs.join(","),
                    n.ip.clone().unwrap_or_else(|| "-".into()),
                    n.power.clone().unwrap_or_default(),
                ]);
            }
        }
        print_table(
            &["TARGET", "BMC", "NODE", "MACS", "IP", "POWER/ERROR"],
            &rows,
        );
        let ok = resp.results.iter().filter(|t| t.ok).count();
        eprintln!("{ok} BMC(s) discovered, {} failed", resp.results.len() - ok);
    }
    Ok(())
}

pub async fn power(args: PowerArgs) -> anyhow::Result<()> {
    let api = ApiClient::new(&args.client)?;
    let body = PowerRequest {
        xnames: args.xnames,
        action: args.action,
    };
    let resp = api
        .post("/rackboot/v1/power", &body)
        .await?
        .context("rackboot sent no results")?;
    print_node_results(&serde_json::from_value(resp)?, args.client.json())
}

pub async fn reprovision(args: ReprovisionArgs) -> anyhow::Result<()> {
    let api = ApiClient::new(&args.client)?;
    let resp = api
        .post(
            "/rackboot/v1/reprovision",
            &NodesRequest {
                xnames: args.xnames,
            },
        )
        .await?
        .context("rackboot sent no results")?;
    print_node_results(&serde_json::from_value(resp)?, args.client.json())
}

pub async fn bmc(cmd: BmcCommand) -> anyhow::Result<()> {
    match cmd {
        BmcCommand::CredsSet {
            target,
            username,
            password_file,
            client,
        } => {
            let mut password = String::new();
            match password_file {
                Some(p) => {
                    password = std::fs::read_to_string(&p).with_context(|| {
                        format!("cannot read {} (--password-file)", p.display())
                    })?;
                }
                None => {
                    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                        eprint!("password for {username}@{target}: ");
                    }
                    std::io::stdin().read_to_string(&mut password)?;
                }
            }
            let password = password.trim_end_matches(['\r', '\n']).to_owned();
            if password.is_empty() {
                anyhow::bail!("empty password (give it on stdin or with --password-file)");
            }
            let api = ApiClient::new(&client)?;
            api.put(
                &format!("/rackboot/v1/bmc/credentials/{target}"),
                &CredentialsRequest { username, password },
            )
            .await?;
            eprintln!("credentials for {target} stored");
            Ok(())
        }
        BmcCommand::CredsList { client } => {
            let api = ApiClient::new(&client)?;
            let v: serde_json::Value = api.get("/rackboot/v1/bmc/credentials").await?;
            print_json(&v);
            Ok(())
        }
        BmcCommand::Unpin { base, client } => {
            let api = ApiClient::new(&client)?;
            let path = format!("/rackboot/v1/bmc/pins?base={}", encode(&base));
            api.delete(&path, None::<&()>).await?;
            eprintln!("pin for {base} cleared; the next connection pins the certificate it sees");
            Ok(())
        }
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One line of discovery progress: a bar over the probe stage (or the crawl stage once every
/// address is probed) and the counts.
pub fn progress_line(p: &super::Progress) -> String {
    const WIDTH: usize = 24;
    let (stage, done, of) = if p.probed < p.addresses {
        ("probing", p.probed, p.addresses)
    } else {
        ("crawling", p.crawled, p.bmcs)
    };
    let filled = (done * WIDTH).checked_div(of).unwrap_or(WIDTH).min(WIDTH);
    let mut line = format!(
        "{stage:<8} [{}{}] {done}/{of}",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled)
    );
    if p.addresses > 0 {
        line.push_str(&format!(" · probed {}/{}", p.probed, p.addresses));
    }
    line.push_str(&format!(" · BMCs {} · crawled {}", p.bmcs, p.crawled));
    if p.failed > 0 {
        line.push_str(&format!(" ({} failed)", p.failed));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Progress;

    #[test]
    fn progress_line_follows_the_stage() {
        let probing = Progress {
            addresses: 4094,
            probed: 1024,
            bmcs: 3,
            ..Default::default()
        };
        assert_eq!(
            progress_line(&probing),
            "probing  [######..................] 1024/4094 · probed 1024/4094 · BMCs 3 · crawled 0"
        );
        let crawling = Progress {
            addresses: 16,
            probed: 16,
            bmcs: 4,
            crawled: 2,
            failed: 1,
        };
        assert_eq!(
            progress_line(&crawling),
            "crawling [############............] 2/4 · probed 16/16 · BMCs 4 · crawled 2 (1 failed)"
        );
        // URL targets only, nothing to do yet: no division by zero, a full bar.
        let empty = Progress::default();
        assert!(progress_line(&empty).contains("[########################] 0/0"));
    }
}
