//! `rackboot serve`'s flags and the [`Settings`] they resolve to (flags > `RACKBOOT_*` env >
//! `--config` TOML > defaults derived from the interface). `services` starts what they describe.
//!
//! Owns: `rackboot serve`'s flags and the resolved `Settings`. May call: `config`, `netif`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use clap::Args;

use crate::config::{Config, DhcpMode};
use crate::netif::{self, InterfaceAddr};

#[derive(Debug, Args)]
#[command(
    after_help = "Every flag can also be set through its RACKBOOT_* environment variable, and \
                        every config-file key through RACKBOOT_<SECTION>__<KEY> (e.g. RACKBOOT_DHCP__LEASE_TIME=2h)."
)]
pub struct ServeArgs {
    /// The rack network interface to serve (DHCP, TFTP, HTTP). It must have an IPv4 address:
    /// the served subnet and the dynamic pool (upper half) are derived from it.
    #[arg(long, short = 'i', env = "RACKBOOT_INTERFACE")]
    pub interface: Option<String>,
    /// Where the store, images and keys live.
    #[arg(long, env = "RACKBOOT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Directory with the iPXE binaries (Debian's `ipxe` package installs /usr/lib/ipxe).
    #[arg(long, env = "RACKBOOT_IPXE_DIR")]
    pub ipxe_dir: Option<PathBuf>,
    /// Optional TOML config file for everything else (subnets, relays, pools, lease times, proxy mode,
    /// boot-file overrides, listen addresses and ports).
    #[arg(long, short = 'c', env = "RACKBOOT_CONFIG")]
    pub config: Option<PathBuf>,
    /// DHCP mode: hand out addresses, or only add PXE boot information (proxyDHCP).
    #[arg(long, env = "RACKBOOT_MODE", value_enum)]
    pub mode: Option<DhcpMode>,
    /// HTTP listen address [default: 0.0.0.0:80, so the CLI on the appliance reaches it on 127.0.0.1].
    #[arg(long, env = "RACKBOOT_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Address written into boot URLs [default: the interface address].
    #[arg(long, env = "RACKBOOT_ADVERTISE")]
    pub advertise: Option<Ipv4Addr>,
    /// Serve the admin API only on this interface (repeat, or comma-separate in the env var;
    /// e.g. `--admin-interface eth1 --admin-interface lo`). The boot-path HTTP and the identity
    /// HTTPS listeners are then bound to the rack interface alone. [default: `listen.admin_interfaces`;
    /// none: one listener serves the boot path and the token-protected admin API together]
    #[arg(
        long = "admin-interface",
        env = "RACKBOOT_ADMIN_INTERFACES",
        value_delimiter = ','
    )]
    pub admin_interfaces: Vec<String>,
}

/// Everything `serve` needs, after flags > env > file > defaults have been merged.
#[derive(Debug, Clone)]
pub struct Settings {
    pub iface: InterfaceAddr,
    pub data_dir: PathBuf,
    pub ipxe_dir: PathBuf,
    pub http_listen: SocketAddr,
    /// Where the admin API is served, when it is kept off the rack network.
    pub admin: Option<AdminListen>,
    pub advertise: Ipv4Addr,
    pub config: Config,
    /// The `--config` file, if one is in use (scheduled backups include it).
    pub config_file: Option<PathBuf>,
}

/// The admin API's own listeners: one per interface, each bound to its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminListen {
    pub interfaces: Vec<String>,
    pub port: u16,
}

impl Settings {
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Settings> {
        let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
        if let Some(mode) = args.mode {
            config.dhcp.mode = mode;
        }
        let Some(interface) = args.interface.or(config.interface.clone()) else {
            anyhow::bail!(
                "no rack interface given: pass --interface IF (or RACKBOOT_INTERFACE, or `interface` in --config)"
            );
        };
        let iface = netif::ipv4_of(&interface)?;
        let data_dir = args
            .data_dir
            .or(config.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("/var/lib/rackboot"));
        let ipxe_dir = args
            .ipxe_dir
            .or(config.ipxe_dir.clone())
            .unwrap_or_else(|| PathBuf::from("/usr/lib/ipxe"));
        let http_listen = args
            .http_listen
            .or(config.listen.http)
            .unwrap_or_else(|| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80)));
        let advertise = args.advertise.or(config.advertise).unwrap_or(iface.addr);
        let interfaces = if args.admin_interfaces.is_empty() {
            config.listen.admin_interfaces.clone()
        } else {
            args.admin_interfaces
        };
        let admin = admin_listen(
            &iface.name,
            interfaces,
            config.listen.admin_port,
            http_listen,
        )?;
        Ok(Settings {
            iface,
            data_dir,
            ipxe_dir,
            http_listen,
            admin,
            advertise,
            config,
            config_file: args.config,
        })
    }

    /// Whether the boot-path listeners are bound to the rack interface (the admin API is served
    /// elsewhere).
    pub fn rack_device(&self) -> Option<&str> {
        self.admin.as_ref().map(|_| self.iface.name.as_str())
    }

    /// Base URL of this appliance as nodes see it, e.g. `http://192.0.2.1` (port only if not 80).
    pub fn base_url(&self) -> String {
        match self.http_listen.port() {
            80 => format!("http://{}", self.advertise),
            port => format!("http://{}:{port}", self.advertise),
        }
    }
}

/// Validates the admin interfaces: each must exist, none may be the rack interface (that would
/// put the admin API back on the rack network), and the list has no duplicates.
fn admin_listen(
    rack: &str,
    interfaces: Vec<String>,
    port: Option<u16>,
    http: SocketAddr,
) -> anyhow::Result<Option<AdminListen>> {
    let mut seen: Vec<String> = Vec::new();
    for name in interfaces {
        let name = name.trim().to_owned();
        if name.is_empty() || seen.contains(&name) {
            continue;
        }
        if name == rack {
            anyhow::bail!(
                "--admin-interface {name} is the rack interface: the admin API would be reachable \
                 from the rack network; name the management interface (and lo for the local CLI)"
            );
        }
        if !netif::exists(&name) {
            anyhow::bail!(
                "--admin-interface {name}: no such interface (listen.admin_interfaces / \
                 RACKBOOT_ADMIN_INTERFACES)"
            );
        }
        seen.push(name);
    }
    if seen.is_empty() {
        return Ok(None);
    }
    Ok(Some(AdminListen {
        interfaces: seen,
        port: port.unwrap_or(http.port()),
    }))
}
