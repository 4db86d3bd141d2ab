//! What the store holds: postcard records and the tables they build.

use core::net::Ipv4Addr;

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

/// Boot files (iPXE binaries, kernels, initrds) the store can name.
pub const MAX_BOOT_FILES: usize = 8;

/// One record of the log. New variants go at the end (postcard encodes the variant index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// The served network.
    Net(NetConfig),
    /// A static reservation (replaces the one for the same MAC).
    Reservation(Reservation),
    /// Removes the reservation of this MAC.
    Unreserve([u8; 6]),
    /// Where a boot file's bytes are (replaces the one of the same name).
    BootFile(BootFile),
    /// A lease (replaces the one for the same MAC).
    Lease(LeaseRecord),
}

/// The network this server serves (one subnet, the one its NIC is on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    /// Our address.
    pub server: [u8; 4],
    /// Prefix length of the subnet.
    pub prefix: u8,
    /// Dynamic pool, inclusive (`[0; 4]` twice: none).
    pub pool_first: [u8; 4],
    /// Last pool address.
    pub pool_last: [u8; 4],
    /// Lease time in seconds.
    pub lease_secs: u32,
}

impl NetConfig {
    /// Our address.
    pub fn server_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.server)
    }
}

/// A node: its MAC, address, names and what it boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The node's MAC.
    pub mac: [u8; 6],
    /// Its address.
    pub ip: [u8; 4],
    /// Its xname (also the DHCP host name).
    pub xname: String<32>,
    /// Its node id.
    pub nid: u32,
    /// Firmware-stage boot file override.
    pub boot_file: Option<String<32>>,
    /// Boot file name of the kernel.
    pub kernel: String<32>,
    /// Boot file name of the initrd.
    pub initrd: String<32>,
    /// Kernel parameters (the boot script adds `initrd=`, `xname=`, `nid=` and `BOOTIF=`).
    pub params: String<128>,
}

/// Where a boot file's bytes are, as the board's [`crate::board::BootFlash`] understands it (a
/// host path for the TAP stand-in, a partition name on a board).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootFile {
    /// The name TFTP and HTTP serve it under (`snponly.efi`, `vmlinuz`).
    pub name: String<32>,
    /// Its location.
    pub source: String<128>,
}

/// A lease the DHCP engine granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The client.
    pub mac: [u8; 6],
    /// Its address.
    pub ip: [u8; 4],
    /// End of the lease, milliseconds on the engine's clock.
    pub expires_ms: u64,
    /// From the pool (else a reservation).
    pub dynamic: bool,
    /// Released by the client (the record removes the lease).
    pub released: bool,
}

/// The configuration the records build: network, reservations (at most `R`), boot files.
#[derive(Debug, Clone, Default)]
pub struct Tables<const R: usize> {
    /// The served network.
    pub net: Option<NetConfig>,
    /// Static reservations.
    pub reservations: Vec<Reservation, R>,
    /// Boot files.
    pub boot_files: Vec<BootFile, MAX_BOOT_FILES>,
}

impl<const R: usize> Tables<R> {
    /// Empty tables.
    pub const fn new() -> Self {
        Self {
            net: None,
            reservations: Vec::new(),
            boot_files: Vec::new(),
        }
    }

    /// Applies a record; `false` when a table is full.
    pub fn apply(&mut self, record: &Record) -> bool {
        match record {
            Record::Net(n) => self.net = Some(*n),
            Record::Reservation(r) => match self.reservations.iter_mut().find(|x| x.mac == r.mac) {
                Some(slot) => *slot = r.clone(),
                None => return self.reservations.push(r.clone()).is_ok(),
            },
            Record::Unreserve(mac) => self.reservations.retain(|x| x.mac != *mac),
            Record::BootFile(b) => match self.boot_files.iter_mut().find(|x| x.name == b.name) {
                Some(slot) => *slot = b.clone(),
                None => return self.boot_files.push(b.clone()).is_ok(),
            },
            Record::Lease(_) => {}
        }
        true
    }

    /// The reservation of `mac`.
    pub fn reservation(&self, mac: [u8; 6]) -> Option<&Reservation> {
        self.reservations.iter().find(|r| r.mac == mac)
    }

    /// The boot file named `name`.
    pub fn boot_file(&self, name: &str) -> Option<&BootFile> {
        self.boot_files.iter().find(|b| b.name == name)
    }
}
