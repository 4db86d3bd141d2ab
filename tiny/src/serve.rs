//! `rackboot-tiny serve`: loads the flash store, builds the engines, and runs the embassy
//! executor with the network stack, DHCP, TFTP and HTTP.
//!
//! Everything the boot path touches is allocated once, before the counting allocator is armed:
//! the [`Profile`] (tables, journal, DHCP engine, socket buffers) lives in a `StaticCell`, the
//! tasks' futures in the executor's static task storage.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use embassy_executor::{Executor, Spawner};
use embassy_net::{Ipv4Cidr, Runner, Stack, StackResources, StaticConfigV4};
use pxe_core::boot::BootPolicy;
use pxe_core::dhcp::fixed_pool::FixedPool;
use pxe_core::dhcp::server::{
    self, DhcpServer, Inventory, LeaseChange, LeaseKind, Mode, ServerConfig, SubnetConfig,
};
use pxe_core::embassy::{DhcpHooks, Files, TftpEvents, UdpBuffers};
use pxe_core::tftp::frontend::Refusal;
use pxe_core::tftp::{SessionConfig, State};
use pxe_core::{Duration, Instant, MacAddr};
use static_cell::StaticCell;

use crate::alloc_count;
use crate::board::{BootFlash, FileFlash, HostBootFiles, Nic};
use crate::store::{Journal, LeaseRecord, Tables};

/// Size of the flash partition holding the store.
pub const FLASH_BYTES: u32 = 64 * 1024;
/// Static reservations.
pub const RESERVATIONS: usize = 64;
/// Leases the store keeps.
pub const LEASES: usize = 128;
/// Addresses in the dynamic pool.
pub const POOL: usize = 64;
/// TFTP transfers served at once.
pub const TFTP_SESSIONS: usize = 4;
/// HTTP connections served at once.
pub const HTTP_CONNECTIONS: usize = 2;
/// Stack of the executor thread (a board's main stack). Generous: a debug build builds the
/// profile on the stack before moving it into its static cell; the gauge
/// ([`alloc_count::stack_high_water`]) measures only what the running executor uses.
pub const STACK_BYTES: usize = 8 * 1024 * 1024;
/// TCP buffers per HTTP connection. The receive side holds a request; the send side bounds the
/// data in flight, so one boot file moves at one send buffer per round trip to the node: on a
/// loaded host a round trip through QEMU can take tens of milliseconds, and with 16 KiB one
/// capture saw the kernel's transfer 4× slower than Linux's TCP (docs/benchmarks.md,
/// "Embedded profile"). 2 × 48 KiB keeps static RAM at 242 KiB of the 256 KiB budget.
const HTTP_RX: usize = 1024;
const HTTP_TX: usize = 48 * 1024;
/// Sockets: DHCP, TFTP :69, one per TFTP session, one per HTTP connection.
const SOCKETS: usize = 2 + TFTP_SESSIONS + HTTP_CONNECTIONS;

/// The profile's state: everything the boot path needs, allocated once.
pub struct Profile {
    tables: Tables<RESERVATIONS>,
    journal: Journal<FileFlash, LEASES>,
    dhcp: DhcpServer<FixedPool<POOL>>,
    dhcp_bufs: UdpBuffers<4, 4096>,
    tftp_listen: UdpBuffers<4, 2048>,
    tftp_transfers: [UdpBuffers<8, 4096>; TFTP_SESSIONS],
    http: [HttpBufs; HTTP_CONNECTIONS],
}

struct HttpBufs {
    rx: [u8; HTTP_RX],
    tx: [u8; HTTP_TX],
}

static PROFILE: StaticCell<Profile> = StaticCell::new();
static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
static EXECUTOR: StaticCell<Executor> = StaticCell::new();

/// Runs the profile on TAP device `tap` from the store in `flash_path`. Returns only on a
/// start-up error.
pub fn run(flash_path: &Path, tap: &str, mac: [u8; 6]) -> Result<(), String> {
    let flash = FileFlash::open(flash_path, FLASH_BYTES)
        .map_err(|e| format!("{}: {e}", flash_path.display()))?;
    let mut tables = Tables::new();
    let journal = Journal::open(flash, &mut tables).map_err(|e| format!("open store: {e:?}"))?;
    let net = tables.net.ok_or("the store has no network (store net …)")?;
    let config = server_config(&net)?;
    let mut dhcp = DhcpServer::fixed(config);
    let now = pxe_core::embassy::now();
    for l in journal.leases() {
        dhcp.restore(&lease(l), now);
    }
    let nic = Nic::open(tap, mac).map_err(|e| format!("TAP {tap}: {e}"))?;
    let cidr = Ipv4Cidr::new(net.server_ip(), net.prefix);
    let tap_name = tap.to_owned();
    let executor = std::thread::Builder::new()
        .name("executor".into())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            alloc_count::this_is_the_executor();
            let profile = PROFILE.init_with(|| Profile {
                tables,
                journal,
                dhcp,
                dhcp_bufs: UdpBuffers::new(),
                tftp_listen: UdpBuffers::new(),
                tftp_transfers: core::array::from_fn(|_| UdpBuffers::new()),
                http: core::array::from_fn(|_| HttpBufs {
                    rx: [0; HTTP_RX],
                    tx: [0; HTTP_TX],
                }),
            });
            let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
                address: cidr,
                gateway: None,
                dns_servers: heapless::Vec::new(),
            });
            let resources = RESOURCES.init_with(StackResources::new);
            let (stack, runner) = embassy_net::new(nic, config, resources, seed(mac));
            eprintln!(
                "rackboot-tiny: serving on {tap_name} as {} ({} reservations, {} boot files)",
                cidr,
                profile.tables.reservations.len(),
                profile.tables.boot_files.len()
            );
            let executor = EXECUTOR.init_with(Executor::new);
            // Start-up's temporaries are dead: paint what they used, measure from here.
            alloc_count::paint_stack();
            executor.run(|spawner: Spawner| {
                // Each task is spawned once, into its pool of one: spawning cannot fail.
                if let Ok(t) = net_task(runner) {
                    spawner.spawn(t);
                }
                if let Ok(t) = boot_task(stack, profile) {
                    spawner.spawn(t);
                }
            });
        })
        .map_err(|e| format!("executor thread: {e}"))?;
    let _ = executor.join();
    Err("the executor stopped".into())
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Nic>) -> ! {
    runner.run().await
}

/// The boot path: DHCP, TFTP and HTTP, joined in one task so they share the profile's state
/// by plain borrows (one executor thread, no locks).
#[embassy_executor::task]
async fn boot_task(stack: Stack<'static>, p: &'static mut Profile) -> ! {
    // Start-up is over: from here on the profile's code must not allocate.
    let _ = embassy_time::Instant::now();
    alloc_count::arm();
    let Profile {
        tables,
        journal,
        dhcp,
        dhcp_bufs,
        tftp_listen,
        tftp_transfers,
        http,
    } = p;
    let tables: &Tables<RESERVATIONS> = tables;
    let dhcp_fut = async {
        let mut hooks = Leases { journal, tables };
        let inventory = Reservations(tables);
        let err =
            pxe_core::embassy::serve_dhcp(stack, dhcp_bufs, dhcp, &inventory, &mut hooks).await;
        eprintln!("rackboot-tiny: DHCP socket: {err:?}");
    };
    let tftp_fut = async {
        let mut files = TftpFiles {
            tables,
            flash: HostBootFiles,
        };
        let err = pxe_core::embassy::serve_tftp(
            stack,
            tftp_listen,
            tftp_transfers,
            &mut files,
            &SessionConfig::default(),
            &mut TftpLog,
        )
        .await;
        eprintln!("rackboot-tiny: TFTP socket: {err:?}");
    };
    let [h0, h1] = http;
    let http0 = async {
        let mut flash = HostBootFiles;
        crate::http::serve(stack, &mut h0.rx, &mut h0.tx, tables, &mut flash).await
    };
    let http1 = async {
        let mut flash = HostBootFiles;
        crate::http::serve(stack, &mut h1.rx, &mut h1.tx, tables, &mut flash).await
    };
    embassy_futures::join::join4(dhcp_fut, tftp_fut, http0, http1).await;
    loop {
        embassy_time::Timer::after_secs(3600).await;
    }
}

/// TFTP events go to the log (stderr: unbuffered, no allocation).
struct TftpLog;

impl TftpEvents for TftpLog {
    fn started(&mut self, client: SocketAddrV4, file: &str) {
        eprintln!("rackboot-tiny: tftp start {file} to {client}");
    }
    fn ended(&mut self, client: SocketAddrV4, state: State) {
        eprintln!("rackboot-tiny: tftp end {client}: {state:?}");
    }
    fn abandoned(&mut self, client: SocketAddrV4) {
        eprintln!("rackboot-tiny: tftp abandoned {client}");
    }
    fn refused(&mut self, client: SocketAddrV4, why: Refusal) {
        eprintln!("rackboot-tiny: tftp refused {client}: {why:?}");
    }
}

/// The DHCP hooks: leases go to the flash journal before their reply is sent.
struct Leases<'a> {
    journal: &'a mut Journal<FileFlash, LEASES>,
    tables: &'a Tables<RESERVATIONS>,
}

impl DhcpHooks for Leases<'_> {
    async fn persist(&mut self, change: &LeaseChange) -> bool {
        let record = match *change {
            LeaseChange::Bound(l) => LeaseRecord {
                mac: l.mac.0,
                ip: l.ip.octets(),
                expires_ms: l.expires.millis(),
                dynamic: l.kind == LeaseKind::Dynamic,
                released: false,
            },
            LeaseChange::Released { mac, ip } | LeaseChange::Declined { mac, ip, .. } => {
                LeaseRecord {
                    mac: mac.0,
                    ip: ip.octets(),
                    expires_ms: 0,
                    dynamic: true,
                    released: true,
                }
            }
            _ => return true,
        };
        let stored = self.journal.put_lease(self.tables, record).is_ok();
        eprintln!(
            "rackboot-tiny: lease mac={} ip={} stored={stored}",
            MacAddr(record.mac),
            Ipv4Addr::from(record.ip)
        );
        // A reservation's address is the node's whatever happens: its ACK goes out even when
        // the record cannot be written (as `rackboot serve` does on a full disk).
        stored || matches!(change, LeaseChange::Bound(l) if l.kind == LeaseKind::Static)
    }
}

/// The reservations as the DHCP engine sees them.
struct Reservations<'a>(&'a Tables<RESERVATIONS>);

impl Inventory for Reservations<'_> {
    fn reservation(&self, mac: MacAddr) -> Option<server::Reservation<'_>> {
        self.0.reservation(mac.0).map(|r| server::Reservation {
            ip: Ipv4Addr::from(r.ip),
            hostname: Some(r.xname.as_str()),
            boot_file: r.boot_file.as_deref(),
        })
    }

    fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        self.0.reservations.iter().any(|r| r.ip == ip.octets())
    }
}

/// TFTP serves the boot files by name.
struct TftpFiles<'a, B> {
    tables: &'a Tables<RESERVATIONS>,
    flash: B,
}

impl<B: BootFlash> Files for TftpFiles<'_, B> {
    type File = B::File;
    fn open(&mut self, path: &str) -> Option<(B::File, u64)> {
        let file = self.tables.boot_file(path)?;
        let opened = self.flash.open(&file.source);
        eprintln!(
            "rackboot-tiny: tftp open {path}: {}",
            opened.as_ref().map_or(0, |f| f.1)
        );
        opened
    }
}

fn server_config(net: &crate::store::NetConfig) -> Result<ServerConfig, String> {
    let server = net.server_ip();
    let prefix = net.prefix.min(32);
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    let pool = (net.pool_first != [0; 4]).then(|| {
        (
            Ipv4Addr::from(net.pool_first),
            Ipv4Addr::from(net.pool_last),
        )
    });
    let mut base: heapless::String<32> = heapless::String::new();
    core::fmt::Write::write_fmt(&mut base, format_args!("http://{server}"))
        .map_err(|_| "server address")?;
    let mut subnets = heapless::Vec::new();
    let _ = subnets.push(SubnetConfig {
        network: Ipv4Addr::from(u32::from(server) & mask),
        prefix,
        server_ip: server,
        router: None,
        dns: heapless::Vec::new(),
        domain: heapless::String::new(),
        lease_time: Duration::from_secs(u64::from(net.lease_secs)),
        pool,
    });
    Ok(ServerConfig {
        subnets,
        mode: Mode::Authoritative,
        boot: BootPolicy::new(&base).map_err(|e| e.to_string())?,
        offer_hold: Duration::from_secs(30),
        decline_quarantine: Duration::from_secs(600),
    })
}

fn lease(l: &LeaseRecord) -> server::Lease {
    server::Lease {
        mac: MacAddr(l.mac),
        ip: Ipv4Addr::from(l.ip),
        expires: Instant::from_millis(l.expires_ms),
        kind: if l.dynamic {
            LeaseKind::Dynamic
        } else {
            LeaseKind::Static
        },
    }
}

fn seed(mac: [u8; 6]) -> u64 {
    let mut s = [0u8; 8];
    if let Some(d) = s.get_mut(..6) {
        d.copy_from_slice(&mac);
    }
    u64::from_le_bytes(s) ^ std::process::id() as u64
}
