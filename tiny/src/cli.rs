//! The command line: `serve`, and `store` commands that provision the flash image.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use heapless::String as HString;
use pxe_core::MacAddr;

use crate::board::FileFlash;
use crate::serve::{self, FLASH_BYTES, RESERVATIONS};
use crate::store::{BootFile, Journal, NetConfig, Record, Reservation, Tables};

/// Runs the command in `args`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut rest = args.iter().map(String::as_str);
    match rest.next() {
        Some("serve") => {
            let flags = Flags::parse(rest)?;
            let mac = match flags.get("mac") {
                Some(m) => mac(m)?.0,
                None => [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01],
            };
            serve::run(
                &PathBuf::from(flags.need("flash")?),
                flags.need("tap")?,
                mac,
            )
        }
        Some("store") => {
            let mut flags = Flags::default();
            let mut cmd = Vec::new();
            let mut it = rest.peekable();
            while let Some(a) = it.next() {
                if a == "--flash" {
                    flags
                        .0
                        .push(("flash".into(), it.next().unwrap_or_default().into()));
                } else {
                    cmd.push(a);
                    cmd.extend(it.by_ref());
                }
            }
            store(&PathBuf::from(flags.need("flash")?), &cmd)
        }
        _ => Err("usage: rackboot-tiny serve|store … (see the crate docs)".into()),
    }
}

fn store(path: &Path, cmd: &[&str]) -> Result<(), String> {
    let flash =
        FileFlash::open(path, FLASH_BYTES).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut tables: Box<Tables<RESERVATIONS>> = Box::default();
    let mut journal: Box<Journal<FileFlash, { serve::LEASES }>> =
        Box::new(Journal::open(flash, &mut tables).map_err(|e| format!("open store: {e:?}"))?);
    let (verb, rest) = cmd.split_first().ok_or("store: missing command")?;
    let flags = Flags::parse(rest.iter().copied())?;
    let record = match *verb {
        "net" => {
            let (ip, prefix) = flags
                .need("server")?
                .split_once('/')
                .ok_or("--server IP/PREFIX")?;
            let (first, last) = match flags.get("pool") {
                Some(p) => {
                    let (a, b) = p.split_once('-').ok_or("--pool FIRST-LAST")?;
                    (ipv4(a)?, ipv4(b)?)
                }
                None => (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED),
            };
            Record::Net(NetConfig {
                server: ipv4(ip)?.octets(),
                prefix: prefix.parse().map_err(|_| "bad prefix")?,
                pool_first: first.octets(),
                pool_last: last.octets(),
                lease_secs: flags.get("lease-secs").map_or(Ok(3600), |s| {
                    s.parse().map_err(|_| "bad --lease-secs".to_owned())
                })?,
            })
        }
        "boot-file" => {
            let [name, source] = rest else {
                return Err("store boot-file NAME SOURCE".into());
            };
            Record::BootFile(BootFile {
                name: bounded(name)?,
                source: bounded(source)?,
            })
        }
        "reserve" => Record::Reservation(Reservation {
            mac: mac(flags.need("mac")?)?.0,
            ip: ipv4(flags.need("ip")?)?.octets(),
            xname: bounded(flags.need("xname")?)?,
            nid: flags.need("nid")?.parse().map_err(|_| "bad --nid")?,
            boot_file: flags.get("boot-file").map(bounded).transpose()?,
            kernel: bounded(flags.need("kernel")?)?,
            initrd: bounded(flags.need("initrd")?)?,
            params: bounded(flags.get("params").unwrap_or_default())?,
        }),
        "show" => {
            println!(
                "generation {} free {}",
                journal.generation(),
                journal.free()
            );
            println!("net {:?}", tables.net);
            for r in &tables.reservations {
                println!("reservation {r:?}");
            }
            for b in &tables.boot_files {
                println!("boot-file {b:?}");
            }
            for l in journal.leases() {
                println!(
                    "lease mac={} ip={} dynamic={} expires_ms={}",
                    MacAddr(l.mac),
                    Ipv4Addr::from(l.ip),
                    l.dynamic,
                    l.expires_ms
                );
            }
            return Ok(());
        }
        other => return Err(format!("store: unknown command {other}")),
    };
    journal
        .put(&mut tables, &record)
        .map_err(|e| format!("write: {e:?}"))
}

#[derive(Default)]
struct Flags(Vec<(String, String)>);

impl Flags {
    fn parse<'a>(mut it: impl Iterator<Item = &'a str>) -> Result<Flags, String> {
        let mut flags = Flags::default();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else {
                continue; // positional arguments are read by the command itself
            };
            let value = it.next().ok_or(format!("--{name} needs a value"))?;
            flags.0.push((name.to_owned(), value.to_owned()));
        }
        Ok(flags)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn need(&self, name: &str) -> Result<&str, String> {
        self.get(name).ok_or(format!("--{name} is required"))
    }
}

fn ipv4(s: &str) -> Result<Ipv4Addr, String> {
    s.parse().map_err(|_| format!("bad IPv4 address {s:?}"))
}

fn mac(s: &str) -> Result<MacAddr, String> {
    MacAddr::parse_nic(s).map_err(|_| format!("bad MAC {s:?}"))
}

fn bounded<const N: usize>(s: &str) -> Result<HString<N>, String> {
    HString::try_from(s).map_err(|_| format!("{s:?} is longer than {N} bytes"))
}
