//! What a board provides, and the host's stand-ins for it.
//!
//! A board crate replaces this module: [`Nic`] wraps its Ethernet driver (here a Linux TAP
//! through `embassy-net-tuntap`), [`FileFlash`] becomes its flash driver behind
//! [`crate::store::Flash`], [`HostBootFiles`] reads boot files from flash or storage behind
//! [`BootFlash`], and embassy-time's std driver becomes the board's timer driver (a Cargo
//! feature of embassy-time, no code here). The stand-ins may allocate inside themselves (a board
//! has none of them); [`Nic`] marks its calls so the counting allocator attributes them
//! ([`crate::alloc_count`]).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::task::Context;

use embassy_net_driver::{Capabilities, Driver, HardwareAddress, LinkState};
use embassy_net_tuntap::TunTapDevice;

use crate::alloc_count::StandIn;
use crate::store::Flash;

/// Reads boot files (kernels, initrds, iPXE binaries) in fixed chunks: never whole files.
pub trait BootFlash {
    /// An open boot file.
    type File: pxe_core::tftp::FileSource;
    /// Opens the file at `source` (a [`crate::store::BootFile`] location) with its size.
    fn open(&mut self, source: &str) -> Option<(Self::File, u64)>;
}

/// Boot files read from host paths (`pread` into the caller's chunk).
pub struct HostBootFiles;

/// An open host file.
pub struct HostFile(File);

impl BootFlash for HostBootFiles {
    type File = HostFile;
    fn open(&mut self, source: &str) -> Option<(HostFile, u64)> {
        let file = File::open(source).ok()?;
        let len = file.metadata().ok()?.len();
        Some((HostFile(file), len))
    }
}

impl pxe_core::tftp::FileSource for HostFile {
    type Error = std::io::Error;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.0.read_at(buf, offset)
    }
}

/// A flash partition as a fixed-size file. Bytes past the end of a shorter file (a test cut it)
/// read as erased.
pub struct FileFlash {
    file: File,
    capacity: u32,
}

impl FileFlash {
    /// Opens `path`, creating it erased (0xFF) at `capacity` bytes if missing.
    pub fn open(path: &Path, capacity: u32) -> std::io::Result<FileFlash> {
        let exists = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut flash = FileFlash { file, capacity };
        if !exists {
            flash.erase(0, capacity)?;
            flash.sync()?;
        }
        Ok(flash)
    }
}

impl Flash for FileFlash {
    type Error = std::io::Error;

    fn capacity(&self) -> u32 {
        self.capacity
    }

    fn read(&mut self, offset: u32, buf: &mut [u8]) -> std::io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let Some(rest) = buf.get_mut(done..) else {
                break;
            };
            match self.file.read_at(rest, u64::from(offset) + done as u64)? {
                0 => {
                    rest.fill(0xFF);
                    break;
                }
                n => done += n,
            }
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(data, u64::from(offset))
    }

    fn erase(&mut self, offset: u32, len: u32) -> std::io::Result<()> {
        let chunk = [0xFFu8; 4096];
        let mut at = 0u32;
        while at < len {
            let n = (len - at).min(chunk.len() as u32);
            self.file.write_all_at(
                chunk.get(..n as usize).unwrap_or(&chunk),
                u64::from(offset + at),
            )?;
            at += n;
        }
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

/// The NIC: a TAP device. `embassy-net-tuntap` allocates a `Vec` per received and per sent
/// frame and its reactor (async-io) runs on a thread of its own; every call into it is marked
/// [`StandIn::Tap`], and the network stack's own work inside its tokens is not.
pub struct Nic(TunTapDevice);

impl Nic {
    /// Opens the TAP device `name` (created if missing) with MAC `mac`.
    pub fn open(name: &str, mac: [u8; 6]) -> std::io::Result<Nic> {
        let mut tap = TunTapDevice::new(name)?;
        tap.set_hardware_address(mac);
        Ok(Nic(tap))
    }
}

/// A received frame's token.
pub struct NicRx<T>(T);
/// A token to send one frame.
pub struct NicTx<T>(T);

impl Driver for Nic {
    type RxToken<'a>
        = NicRx<<TunTapDevice as Driver>::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = NicTx<<TunTapDevice as Driver>::TxToken<'a>>
    where
        Self: 'a;

    fn receive(&mut self, cx: &mut Context) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let _tap = StandIn::Tap.enter();
        self.0.receive(cx).map(|(rx, tx)| (NicRx(rx), NicTx(tx)))
    }

    fn transmit(&mut self, cx: &mut Context) -> Option<Self::TxToken<'_>> {
        let _tap = StandIn::Tap.enter();
        self.0.transmit(cx).map(NicTx)
    }

    fn link_state(&mut self, cx: &mut Context) -> LinkState {
        self.0.link_state(cx)
    }

    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }

    fn hardware_address(&self) -> HardwareAddress {
        self.0.hardware_address()
    }
}

impl<T: embassy_net_driver::RxToken> embassy_net_driver::RxToken for NicRx<T> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let _tap = StandIn::Tap.enter();
        self.0.consume(|frame| {
            let _stack = StandIn::leave();
            f(frame)
        })
    }
}

impl<T: embassy_net_driver::TxToken> embassy_net_driver::TxToken for NicTx<T> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let _tap = StandIn::Tap.enter();
        self.0.consume(len, |frame| {
            let _stack = StandIn::leave();
            f(frame)
        })
    }
}
