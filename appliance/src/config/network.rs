//! `[listen]`, `[dhcp]` (with relay subnets) and `[boot]`: what the rack network is served.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, bail};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The largest `listen.tftp_max_transfers` (the TFTP service's table has this many slots).
pub const TFTP_MAX_TRANSFERS: usize = 4096;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// UDP port for DHCP (67). 0 disables the DHCP service.
    pub dhcp_port: u16,
    /// UDP port for TFTP (69). 0 disables the TFTP service.
    pub tftp_port: u16,
    /// TFTP transfers served at once (1 to 4096). A read request past the limit gets no answer,
    /// so the firmware sends it again a few seconds later, rather than an ERROR, which ends
    /// EDK2's and iPXE's download and with it the boot.
    pub tftp_max_transfers: usize,
    /// HTTP listen address. Defaults to the interface address on port 80.
    pub http: Option<SocketAddr>,
    /// Interfaces the admin API is served on (e.g. `["eth1", "lo"]`: the management network and
    /// the appliance's own CLI). Empty (the default): one HTTP listener serves the boot path and
    /// the token-protected admin API together. Set: the admin API answers only on these
    /// interfaces (listeners bound to each device on `admin_port`), and the boot-path HTTP and
    /// the identity HTTPS listeners are bound to the rack interface, so nothing of the admin API
    /// is reachable from the rack network, firewall or not.
    pub admin_interfaces: Vec<String>,
    /// TCP port of the admin listeners. Defaults to the HTTP listen port.
    pub admin_port: Option<u16>,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            dhcp_port: 67,
            tftp_port: 69,
            tftp_max_transfers: 1024,
            http: None,
            admin_interfaces: Vec::new(),
            admin_port: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// Hand out addresses (static from inventory, dynamic pool for unknown clients) and boot info.
    #[default]
    Authoritative,
    /// Another DHCP server assigns addresses; rackboot only adds PXE boot information.
    Proxy,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Dhcp {
    pub mode: DhcpMode,
    /// Default lease time, e.g. "1h".
    #[serde(with = "super::units::humantime_serde_compat")]
    pub lease_time: Duration,
    /// Subnets served. Empty = one subnet derived from the interface address.
    #[serde(rename = "subnet")]
    pub subnets: Vec<Subnet>,
}

impl Default for Dhcp {
    fn default() -> Self {
        Self {
            mode: DhcpMode::Authoritative,
            lease_time: Duration::from_secs(3600),
            subnets: Vec::new(),
        }
    }
}

/// One served subnet: the interface's own, or one behind a DHCP relay (chosen by giaddr).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    /// e.g. "192.0.2.0/24"
    pub network: ipnet::Ipv4Net,
    /// Dynamic pool, "first-last". Defaults to the upper half of the subnet.
    pub pool: Option<String>,
    pub router: Option<Ipv4Addr>,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    #[serde(default, with = "super::units::humantime_serde_compat::option")]
    pub lease_time: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Boot {
    /// BIOS PXE boot file.
    pub bios: String,
    /// UEFI x64 boot file (snponly.efi: uses the firmware's NIC driver; preferred over ipxe.efi).
    pub uefi_x64: String,
    /// UEFI IA32 boot file.
    pub uefi_ia32: String,
    /// UEFI ARM64 boot file.
    pub uefi_arm64: String,
    /// Upper bound of the boot script's retry chain before it reboots the node.
    pub max_retries: u32,
}

impl Default for Boot {
    fn default() -> Self {
        Self {
            bios: "undionly.kpxe".into(),
            uefi_x64: "snponly.efi".into(),
            uefi_ia32: "ipxe-i386.efi".into(),
            uefi_arm64: "snponly-arm64.efi".into(),
            max_retries: 10,
        }
    }
}

/// Parses a pool range "first-last" (inclusive) with first <= last.
pub fn parse_pool(s: &str) -> anyhow::Result<(Ipv4Addr, Ipv4Addr)> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("pool {s:?}: expected \"first-last\""))?;
    let a: Ipv4Addr = a
        .trim()
        .parse()
        .with_context(|| format!("pool {s:?}: bad first address"))?;
    let b: Ipv4Addr = b
        .trim()
        .parse()
        .with_context(|| format!("pool {s:?}: bad last address"))?;
    if a > b {
        bail!("pool {s:?}: first address is after the last");
    }
    Ok((a, b))
}

/// The default dynamic pool: the upper half of `net`, minus the broadcast address.
pub fn default_pool(net: ipnet::Ipv4Net) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let base = u32::from(net.network());
    let size = 1u64 << (32 - u32::from(net.prefix_len()));
    if size < 8 {
        return None;
    }
    let half = u32::try_from(size / 2).ok()?;
    let first = base.checked_add(half)?;
    let last = u32::from(net.broadcast()).checked_sub(1)?;
    Some((Ipv4Addr::from(first), Ipv4Addr::from(last)))
}
