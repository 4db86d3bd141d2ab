//! `rackboot boot`: boot parameters over the BSS API.

use clap::Subcommand;
use serde_json::json;

use crate::client::{ApiClient, ClientArgs};
use crate::output::{print_json, print_table};
use crate::store::BootParameters;

#[derive(Debug, Subcommand)]
pub enum BootCommand {
    /// Set (replace) the boot parameters of a node, selected by --xname, --mac or --nid.
    Set {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, required_unless_present_any = ["mac", "nid"])]
        xname: Option<String>,
        #[arg(long)]
        mac: Option<String>,
        #[arg(long)]
        nid: Option<i64>,
        /// Kernel URL, e.g. http://192.0.2.1/images/vmlinuz
        #[arg(long)]
        kernel: String,
        /// Initrd URL.
        #[arg(long, default_value = "")]
        initrd: String,
        /// Kernel command line (xname, nid, BOOTIF and the cloud-init seed are added).
        #[arg(long, default_value = "")]
        params: String,
    },
    /// Show boot parameters (all, or those of --xname/--mac/--nid).
    Show {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        xname: Option<String>,
        #[arg(long)]
        mac: Option<String>,
        #[arg(long)]
        nid: Option<i64>,
    },
}

pub async fn run(cmd: BootCommand) -> anyhow::Result<()> {
    match cmd {
        BootCommand::Set {
            client,
            xname,
            mac,
            nid,
            kernel,
            initrd,
            params,
        } => {
            let api = ApiClient::new(&client)?;
            let body = json!({
                "hosts": xname.iter().collect::<Vec<_>>(),
                "macs": mac.iter().collect::<Vec<_>>(),
                "nids": nid.iter().collect::<Vec<_>>(),
                "kernel": kernel, "initrd": initrd, "params": params,
            });
            api.put("/boot/v1/bootparameters", &body).await?;
            crate::outln!("boot parameters set");
            Ok(())
        }
        BootCommand::Show {
            client,
            xname,
            mac,
            nid,
        } => {
            let api = ApiClient::new(&client)?;
            let mut q = Vec::new();
            q.extend(xname.map(|x| format!("name={x}")));
            q.extend(mac.map(|m| format!("mac={m}")));
            q.extend(nid.map(|n| format!("nid={n}")));
            let path = if q.is_empty() {
                "/boot/v1/bootparameters".to_owned()
            } else {
                format!("/boot/v1/bootparameters?{}", q.join("&"))
            };
            let list: Vec<BootParameters> = api.get(&path).await?;
            if client.json() {
                print_json(&list);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|b| {
                    let mut sel: Vec<String> = b.hosts.clone();
                    sel.extend(b.macs.iter().cloned());
                    sel.extend(b.nids.iter().map(|n| format!("nid {n}")));
                    vec![
                        sel.join(","),
                        b.kernel.clone(),
                        b.initrd.clone(),
                        b.params.clone(),
                    ]
                })
                .collect();
            print_table(&["NODES", "KERNEL", "INITRD", "PARAMS"], &rows);
            Ok(())
        }
    }
}
