//! `rackboot node`: nodes in the inventory, over the SMD API (Component + EthernetInterface).

use std::net::Ipv4Addr;

use clap::Subcommand;
use serde_json::json;

use crate::client::{ApiClient, ClientArgs};
use crate::output::{print_json, print_table};
use crate::store::{Component, EthernetInterface};

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Add a node: its Component and the EthernetInterface whose MAC gets IP as a static lease.
    Add {
        #[command(flatten)]
        client: ClientArgs,
        /// Node xname, e.g. x1000c0s0b0n0.
        xname: String,
        /// Boot NIC MAC address (any case).
        #[arg(long)]
        mac: String,
        /// The address DHCP gives this MAC.
        #[arg(long)]
        ip: Ipv4Addr,
        /// Node ID (hostname nidNNNN, `nid=` on the kernel command line).
        #[arg(long)]
        nid: Option<i64>,
        /// SMD role.
        #[arg(long, default_value = "Compute")]
        role: String,
    },
    /// List nodes with their interfaces.
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one node: Component, interfaces, boot parameters.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        xname: String,
    },
    /// Remove a node's Component and its EthernetInterfaces.
    #[command(alias = "remove")]
    Rm {
        #[command(flatten)]
        client: ClientArgs,
        xname: String,
    },
}

pub async fn run(cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::Add {
            client,
            xname,
            mac,
            ip,
            nid,
            role,
        } => {
            super::xname::parse_node(&xname).map_err(|e| anyhow::anyhow!(e))?;
            let api = ApiClient::new(&client)?;
            let comp = json!({"ID": xname, "Type": "Node", "State": "Ready", "Enabled": true, "NID": nid, "Role": role});
            api.post("/hsm/v2/State/Components", &json!({"Components": [comp]}))
                .await?;
            let ei = json!({"MACAddress": mac, "IPAddresses": [{"IPAddress": ip.to_string()}], "ComponentID": xname, "Type": "Node"});
            api.post("/hsm/v2/Inventory/EthernetInterfaces", &ei)
                .await?;
            crate::outln!("added {xname}: {mac} → {ip}");
            Ok(())
        }
        NodeCommand::List { client } => {
            let api = ApiClient::new(&client)?;
            let comps: serde_json::Value = api.get("/hsm/v2/State/Components?type=Node").await?;
            let comps: Vec<Component> = comps
                .get("Components")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            let eis: Vec<EthernetInterface> =
                api.get("/hsm/v2/Inventory/EthernetInterfaces").await?;
            if client.json() {
                print_json(&json!({"Components": comps, "EthernetInterfaces": eis}));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = comps
                .iter()
                .map(|c| {
                    let nics: Vec<&EthernetInterface> = eis
                        .iter()
                        .filter(|e| e.component_id.as_deref() == Some(&c.id))
                        .collect();
                    vec![
                        c.id.clone(),
                        c.nid.map(|n| n.to_string()).unwrap_or_default(),
                        c.state.clone().unwrap_or_default(),
                        nics.iter()
                            .map(|e| e.mac_address.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        nics.iter()
                            .filter_map(|e| e.ip_addresses.first().map(|a| a.ip_address.as_str()))
                            .collect::<Vec<_>>()
                            .join(","),
                    ]
                })
                .collect();
            print_table(&["XNAME", "NID", "STATE", "MAC", "IP"], &rows);
            Ok(())
        }
        NodeCommand::Show { client, xname } => {
            let api = ApiClient::new(&client)?;
            let comp: serde_json::Value = api
                .get(&format!("/hsm/v2/State/Components/{xname}"))
                .await?;
            let eis: serde_json::Value = api
                .get(&format!(
                    "/hsm/v2/Inventory/EthernetInterfaces?ComponentID={xname}"
                ))
                .await?;
            let boot: serde_json::Value = api
                .get(&format!("/boot/v1/bootparameters?name={xname}"))
                .await
                .unwrap_or(serde_json::Value::Null);
            print_json(
                &json!({"Component": comp, "EthernetInterfaces": eis, "BootParameters": boot}),
            );
            Ok(())
        }
        NodeCommand::Rm { client, xname } => {
            let api = ApiClient::new(&client)?;
            let eis: Vec<EthernetInterface> = api
                .get(&format!(
                    "/hsm/v2/Inventory/EthernetInterfaces?ComponentID={xname}"
                ))
                .await?;
            for e in eis {
                api.delete(
                    &format!("/hsm/v2/Inventory/EthernetInterfaces/{}", e.id),
                    None::<&()>,
                )
                .await?;
            }
            api.delete(&format!("/hsm/v2/State/Components/{xname}"), None::<&()>)
                .await?;
            crate::outln!("removed {xname}");
            Ok(())
        }
    }
}
