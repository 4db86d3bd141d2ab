//! The configuration and leases, in postcard records on a flash partition ([`Flash`]).
//!
//! Layout: the partition is two equal banks. A bank starts with a header (magic, generation,
//! CRC-32) followed by records appended one after another; erased flash (0xFF) ends the log. A
//! record is a frame: format version (1 byte), payload length (u16 LE), CRC-32 of the version,
//! length and payload (u32 LE), then the postcard payload (not self-describing, hence the
//! version byte).
//!
//! Writes only ever turn erased bytes into data (flash semantics): a record is appended in one
//! write after the last one. When a record does not fit, the live state (configuration, latest
//! lease per MAC) is compacted into the other bank: erase it, write the records, then its header
//! with the next generation, last. Loading takes the valid header with the highest generation
//! and reads records until the first erased or invalid frame.
//!
//! A power cut therefore loses at most the record being written: a torn frame fails its CRC (or
//! its length runs into erased bytes) and the log ends just before it; a torn compaction has no
//! valid header, so the old bank still holds everything. A log that ends in a torn frame is
//! compacted when opened, so later appends never write over the torn bytes.

mod crc;
mod records;
#[cfg(test)]
mod tests;

pub use records::{BootFile, LeaseRecord, NetConfig, Record, Reservation, Tables};

/// A flash partition (a board's flash driver; a fixed-size file on the host, [`crate::board`]).
pub trait Flash {
    /// Driver error.
    type Error: core::fmt::Debug;
    /// Partition size in bytes.
    fn capacity(&self) -> u32;
    /// Reads `buf.len()` bytes at `offset` (erased bytes read as 0xFF).
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error>;
    /// Programs `data` at `offset`; the range was erased since it was last written.
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), Self::Error>;
    /// Erases (sets to 0xFF) `len` bytes at `offset`.
    fn erase(&mut self, offset: u32, len: u32) -> Result<(), Self::Error>;
    /// Returns once everything written is durable.
    fn sync(&mut self) -> Result<(), Self::Error>;
}

/// Largest record payload.
pub const MAX_RECORD: usize = 512;
const FRAME_HEADER: usize = 7;
const BANK_HEADER: u32 = 12;
const MAGIC: [u8; 4] = *b"RBT1";
const VERSION: u8 = 1;
const ERASED: u8 = 0xFF;

/// Why the store refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError<E> {
    /// The flash driver failed.
    Flash(E),
    /// The live state does not fit in one bank, even compacted.
    Full,
    /// A record does not encode (a string past its bound).
    Encode,
    /// The partition is too small for two banks.
    TooSmall,
}

/// The append-only record log on a flash partition, with the dynamic leases it holds.
/// Reservations, boot files and the network live in [`Tables`], which the caller keeps.
pub struct Journal<F, const L: usize> {
    flash: F,
    /// Active bank (0 or 1).
    bank: u8,
    generation: u32,
    /// Next write offset inside the active bank.
    head: u32,
    leases: heapless::Vec<LeaseRecord, L>,
    buf: [u8; FRAME_HEADER + MAX_RECORD],
}

impl<F: Flash, const L: usize> Journal<F, L> {
    /// Loads the newest valid bank of `flash` into `tables` and the journal (formatting an empty
    /// partition), compacting first if the log ends in a torn record.
    pub fn open<const R: usize>(
        flash: F,
        tables: &mut Tables<R>,
    ) -> Result<Self, StoreError<F::Error>> {
        let mut journal = Journal {
            flash,
            bank: 0,
            generation: 0,
            head: BANK_HEADER,
            leases: heapless::Vec::new(),
            buf: [0; FRAME_HEADER + MAX_RECORD],
        };
        if journal.bank_size() < BANK_HEADER + (FRAME_HEADER + MAX_RECORD) as u32 {
            return Err(StoreError::TooSmall);
        }
        let g0 = journal.header(0)?;
        let g1 = journal.header(1)?;
        let newest = match (g0, g1) {
            (Some(a), Some(b)) if b > a => Some((1, b)),
            (Some(a), _) => Some((0, a)),
            (None, Some(b)) => Some((1, b)),
            (None, None) => None,
        };
        let Some((bank, generation)) = newest else {
            // Blank (or never committed): start generation 1 in bank 0.
            journal.bank = 1;
            journal.compact(tables)?;
            return Ok(journal);
        };
        journal.bank = bank;
        journal.generation = generation;
        let torn = journal.replay(tables)?;
        if torn {
            journal.compact(tables)?;
        }
        Ok(journal)
    }

    /// The leases held (latest record per MAC).
    pub fn leases(&self) -> &[LeaseRecord] {
        &self.leases
    }

    /// Bytes still free in the active bank.
    pub fn free(&self) -> u32 {
        self.bank_size().saturating_sub(self.head)
    }

    /// The generation of the active bank (it grows by one per compaction).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Applies `record` to `tables` and the journal's leases and makes it durable. A
    /// configuration record needs `tables` mutable; see [`Journal::put_lease`] for leases.
    pub fn put<const R: usize>(
        &mut self,
        tables: &mut Tables<R>,
        record: &Record,
    ) -> Result<(), StoreError<F::Error>> {
        if !tables.apply(record) {
            return Err(StoreError::Full);
        }
        self.apply_lease(record);
        self.write_record(tables, record)
    }

    /// Records a lease (the boot path: only the journal changes).
    pub fn put_lease<const R: usize>(
        &mut self,
        tables: &Tables<R>,
        lease: LeaseRecord,
    ) -> Result<(), StoreError<F::Error>> {
        let record = Record::Lease(lease);
        self.apply_lease(&record);
        self.write_record(tables, &record)
    }

    fn apply_lease(&mut self, record: &Record) {
        let Record::Lease(lease) = record else {
            return;
        };
        self.leases.retain(|l| l.mac != lease.mac);
        if lease.released {
            return;
        }
        if self.leases.is_full() {
            // Keep the newest: drop the lease that ends first.
            if let Some(i) = (0..self.leases.len())
                .min_by_key(|&i| self.leases.get(i).map_or(0, |l| l.expires_ms))
            {
                self.leases.swap_remove(i);
            }
        }
        let _ = self.leases.push(*lease);
    }

    fn write_record<const R: usize>(
        &mut self,
        tables: &Tables<R>,
        record: &Record,
    ) -> Result<(), StoreError<F::Error>> {
        let len = self.encode(record)?;
        if self.head + len as u32 > self.bank_size() {
            // Compaction writes the whole state, `record` included.
            return self.compact(tables);
        }
        self.append_encoded(len)?;
        self.flash.sync().map_err(StoreError::Flash)
    }

    /// Writes the live state into the other bank and switches to it.
    fn compact<const R: usize>(&mut self, tables: &Tables<R>) -> Result<(), StoreError<F::Error>> {
        let target = 1 - self.bank;
        let base = self.bank_base(target);
        self.flash
            .erase(base, self.bank_size())
            .map_err(StoreError::Flash)?;
        let (old_bank, old_head) = (self.bank, self.head);
        self.bank = target;
        self.head = BANK_HEADER;
        let written = self.write_state(tables);
        if let Err(e) = written {
            self.bank = old_bank;
            self.head = old_head;
            return Err(e);
        }
        self.flash.sync().map_err(StoreError::Flash)?;
        // The header goes last: until it is written (and synced) the old bank is the newest.
        let generation = self.generation.wrapping_add(1).max(1);
        let header = bank_header(generation);
        let committed = self
            .flash
            .write(base, &header)
            .and_then(|()| self.flash.sync());
        if let Err(e) = committed {
            self.bank = old_bank;
            self.head = old_head;
            return Err(StoreError::Flash(e));
        }
        self.generation = generation;
        Ok(())
    }

    fn write_state<const R: usize>(
        &mut self,
        tables: &Tables<R>,
    ) -> Result<(), StoreError<F::Error>> {
        if let Some(net) = &tables.net {
            self.append_fitting(&Record::Net(*net))?;
        }
        for r in &tables.reservations {
            self.append_fitting(&Record::Reservation(r.clone()))?;
        }
        for b in &tables.boot_files {
            self.append_fitting(&Record::BootFile(b.clone()))?;
        }
        for i in 0..self.leases.len() {
            let Some(lease) = self.leases.get(i).copied() else {
                break;
            };
            self.append_fitting(&Record::Lease(lease))?;
        }
        Ok(())
    }

    fn append_fitting(&mut self, record: &Record) -> Result<(), StoreError<F::Error>> {
        let len = self.encode(record)?;
        if self.head + len as u32 > self.bank_size() {
            return Err(StoreError::Full);
        }
        self.append_encoded(len)
    }

    /// Frames `record` into `self.buf`; returns the frame length.
    fn encode(&mut self, record: &Record) -> Result<usize, StoreError<F::Error>> {
        let (header, payload) = self.buf.split_at_mut(FRAME_HEADER);
        let payload = postcard::to_slice(record, payload).map_err(|_| StoreError::Encode)?;
        let len = u16::try_from(payload.len()).map_err(|_| StoreError::Encode)?;
        let [l0, l1] = len.to_le_bytes();
        let crc = crc::crc32_parts(&[VERSION, l0, l1], payload);
        let [c0, c1, c2, c3] = crc.to_le_bytes();
        header.copy_from_slice(&[VERSION, l0, l1, c0, c1, c2, c3]);
        Ok(FRAME_HEADER + usize::from(len))
    }

    fn append_encoded(&mut self, len: usize) -> Result<(), StoreError<F::Error>> {
        let at = self.bank_base(self.bank) + self.head;
        let frame = self.buf.get(..len).ok_or(StoreError::Encode)?;
        self.flash.write(at, frame).map_err(StoreError::Flash)?;
        self.head += len as u32;
        Ok(())
    }

    /// Reads the records of the active bank; returns whether the log ends in a torn frame.
    fn replay<const R: usize>(
        &mut self,
        tables: &mut Tables<R>,
    ) -> Result<bool, StoreError<F::Error>> {
        let base = self.bank_base(self.bank);
        let end = self.bank_size();
        let mut at = BANK_HEADER;
        loop {
            if at + FRAME_HEADER as u32 > end {
                break;
            }
            let mut header = [0u8; FRAME_HEADER];
            self.flash
                .read(base + at, &mut header)
                .map_err(StoreError::Flash)?;
            if header == [ERASED; FRAME_HEADER] {
                break;
            }
            let [version, l0, l1, c0, c1, c2, c3] = header;
            let len = usize::from(u16::from_le_bytes([l0, l1]));
            if version != VERSION || len > MAX_RECORD || at + (FRAME_HEADER + len) as u32 > end {
                self.head = at;
                return Ok(true);
            }
            let Some(payload) = self.buf.get_mut(..len) else {
                self.head = at;
                return Ok(true);
            };
            self.flash
                .read(base + at + FRAME_HEADER as u32, payload)
                .map_err(StoreError::Flash)?;
            let crc = u32::from_le_bytes([c0, c1, c2, c3]);
            if crc != crc::crc32_parts(&[version, l0, l1], payload) {
                self.head = at;
                return Ok(true);
            }
            // A CRC-valid record of an unknown shape (from a newer writer) is skipped.
            if let Ok(record) = postcard::from_bytes::<Record>(payload) {
                let _ = tables.apply(&record);
                self.apply_lease(&record);
            }
            at += (FRAME_HEADER + len) as u32;
        }
        self.head = at;
        Ok(false)
    }

    fn header(&mut self, bank: u8) -> Result<Option<u32>, StoreError<F::Error>> {
        let mut h = [0u8; BANK_HEADER as usize];
        self.flash
            .read(self.bank_base(bank), &mut h)
            .map_err(StoreError::Flash)?;
        let generation = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        Ok((h == bank_header(generation)).then_some(generation))
    }

    fn bank_size(&self) -> u32 {
        self.flash.capacity() / 2
    }

    fn bank_base(&self, bank: u8) -> u32 {
        u32::from(bank) * self.bank_size()
    }
}

/// A bank's header: magic, generation, CRC-32 of both.
fn bank_header(generation: u32) -> [u8; BANK_HEADER as usize] {
    let [m0, m1, m2, m3] = MAGIC;
    let [g0, g1, g2, g3] = generation.to_le_bytes();
    let [c0, c1, c2, c3] = crc::crc32(&[m0, m1, m2, m3, g0, g1, g2, g3]).to_le_bytes();
    [m0, m1, m2, m3, g0, g1, g2, g3, c0, c1, c2, c3]
}
