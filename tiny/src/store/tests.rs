//! The store across power cuts: a write cut at every byte offset loses at most the record being
//! written, on the file-backed flash (the file truncated) and through compaction (a flash that
//! stops programming after a byte budget); a corrupted byte is rejected by its CRC.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;

use super::*;
use crate::board::FileFlash;

const CAP: u32 = 8 * 1024;
type T = Tables<64>;
type J<F> = Journal<F, 128>;

fn reservation(i: u8) -> Record {
    Record::Reservation(Reservation {
        mac: [0x52, 0x54, 0, 0, 0, i],
        ip: [192, 0, 2, 10 + i],
        xname: heapless::String::try_from("x1000c0s0b0n0").unwrap(),
        nid: u32::from(i),
        boot_file: None,
        kernel: heapless::String::try_from("vmlinuz").unwrap(),
        initrd: heapless::String::try_from("initrd.img").unwrap(),
        params: heapless::String::try_from("console=ttyS0 quiet").unwrap(),
    })
}

fn lease(i: u8, expires_ms: u64) -> LeaseRecord {
    LeaseRecord {
        mac: [0x52, 0x54, 0, 0, 1, i],
        ip: [192, 0, 2, 100 + i],
        expires_ms,
        dynamic: true,
        released: false,
    }
}

fn open_file(path: &Path) -> (T, J<FileFlash>) {
    let mut t = T::new();
    let j = J::open(FileFlash::open(path, CAP).unwrap(), &mut t).unwrap();
    (t, j)
}

/// Everything in (`tables`, `leases`) as a comparable list.
fn snapshot(t: &T, j: &J<impl Flash>) -> Vec<Record> {
    let mut v: Vec<Record> = t.net.iter().map(|n| Record::Net(*n)).collect();
    v.extend(t.reservations.iter().cloned().map(Record::Reservation));
    v.extend(t.boot_files.iter().cloned().map(Record::BootFile));
    let mut leases: Vec<LeaseRecord> = j.leases().to_vec();
    leases.sort_by_key(|l| l.mac);
    v.extend(leases.into_iter().map(Record::Lease));
    v
}

#[test]
fn records_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flash");
    let (mut t, mut j) = open_file(&path);
    j.put(&mut t, &reservation(1)).unwrap();
    j.put_lease(&t, lease(1, 1000)).unwrap();
    j.put_lease(&t, lease(1, 2000)).unwrap();
    let before = snapshot(&t, &j);
    drop(j);
    let (t2, j2) = open_file(&path);
    assert_eq!(snapshot(&t2, &j2), before);
    assert_eq!(j2.leases(), &[lease(1, 2000)]);
}

/// Truncates a copy of the file at every byte of one appended record: the reopened store has
/// every earlier record, and the new one only when the cut is past its last byte.
#[test]
fn power_cut_at_every_byte_of_an_append_loses_at_most_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flash");
    let (mut t, mut j) = open_file(&path);
    for i in 0..5 {
        j.put(&mut t, &reservation(i)).unwrap();
        j.put_lease(&t, lease(i, 1000 + u64::from(i))).unwrap();
    }
    let before = snapshot(&t, &j);
    let start = u64::from(j.head + j.bank_base(j.bank));
    // The file as it was, with the append's bytes erased: what flash holds before the write.
    let base = std::fs::read(&path).unwrap();
    j.put_lease(&t, lease(9, 5000)).unwrap();
    let after = snapshot(&t, &j);
    let written = std::fs::read(&path).unwrap();
    let end = (start..written.len() as u64)
        .rev()
        .find(|&i| written[i as usize] != base[i as usize])
        .unwrap()
        + 1;
    assert!(end > start, "the append wrote something");
    drop(j);
    for cut in start..=end {
        let cut_path = dir.path().join(format!("cut-{cut}"));
        // Power lost after `cut` bytes reached the file: the rest of the file is gone
        // (read back as erased).
        std::fs::write(&cut_path, &written[..cut as usize]).unwrap();
        let (t2, j2) = open_file(&cut_path);
        let got = snapshot(&t2, &j2);
        if cut == end {
            assert_eq!(got, after, "cut at {cut} (whole record)");
        } else {
            assert_eq!(got, before, "cut at {cut} of {start}..{end}");
        }
        // The store is writable after the cut, and keeps what it had.
        let (mut t3, mut j3) = open_file(&cut_path);
        j3.put(&mut t3, &reservation(42)).unwrap();
        let (t4, j4) = open_file(&cut_path);
        assert!(t4.reservation([0x52, 0x54, 0, 0, 0, 42]).is_some());
        assert_eq!(
            j4.leases().len(),
            got.iter().filter(|r| matches!(r, Record::Lease(_))).count()
        );
    }
}

/// Flash in memory that stops programming after `budget` bytes (power lost mid-write) and
/// refuses writes onto bytes that are not erased (NOR flash cannot set bits).
struct CutFlash {
    bytes: Vec<u8>,
    budget: usize,
}

impl Flash for CutFlash {
    type Error = &'static str;
    fn capacity(&self) -> u32 {
        self.bytes.len() as u32
    }
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error> {
        let o = offset as usize;
        buf.copy_from_slice(&self.bytes[o..o + buf.len()]);
        Ok(())
    }
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), Self::Error> {
        let o = offset as usize;
        for (i, &b) in data.iter().enumerate() {
            if self.budget == 0 {
                return Err("power cut");
            }
            assert_eq!(
                self.bytes[o + i],
                0xFF,
                "write onto unerased flash at {}",
                o + i
            );
            self.bytes[o + i] = b;
            self.budget -= 1;
        }
        Ok(())
    }
    fn erase(&mut self, offset: u32, len: u32) -> Result<(), Self::Error> {
        if self.budget == 0 {
            return Err("power cut");
        }
        self.bytes[offset as usize..(offset + len) as usize].fill(0xFF);
        Ok(())
    }
    fn sync(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Fills a bank until the next lease compacts, then cuts power at every byte of that
/// compaction: reopening always finds every record written before it.
#[test]
fn power_cut_during_compaction_keeps_every_earlier_record() {
    let mut flash = CutFlash {
        bytes: vec![0xFF; CAP as usize],
        budget: usize::MAX,
    };
    let mut t = T::new();
    let mut j = J::open(&mut flash, &mut t).unwrap();
    for i in 0..4 {
        j.put(&mut t, &reservation(i)).unwrap();
    }
    // Rewrite the same few leases until the next lease (a 23-byte frame) cannot fit.
    let mut n = 0u64;
    while j.free() >= 22 {
        j.put_lease(&t, lease((n % 3) as u8, n)).unwrap();
        n += 1;
    }
    let generation = j.generation();
    let before = snapshot(&t, &j);
    drop(j);
    let image = flash.bytes.clone();
    let mut compacted_at = None;
    for budget in 0.. {
        let mut f = CutFlash {
            bytes: image.clone(),
            budget,
        };
        let mut t = T::new();
        let mut j = J::open(&mut f, &mut t).unwrap();
        let result = j.put_lease(&t, lease(7, 99_999));
        let done = result.is_ok();
        if done {
            assert_eq!(
                j.generation(),
                generation + 1,
                "the lease compacted the bank"
            );
        }
        drop(j);
        f.budget = usize::MAX;
        let mut t2 = T::new();
        let j2 = J::open(&mut f, &mut t2).unwrap();
        let got = snapshot(&t2, &j2);
        let mut expected = before.clone();
        if done {
            expected.push(Record::Lease(lease(7, 99_999)));
            expected.sort_by_key(|r| match r {
                Record::Lease(l) => (1, l.mac),
                _ => (0, [0; 6]),
            });
            let mut got = got;
            got.sort_by_key(|r| match r {
                Record::Lease(l) => (1, l.mac),
                _ => (0, [0; 6]),
            });
            assert_eq!(got, expected, "budget {budget}: complete");
            compacted_at = Some(budget);
            break;
        }
        assert_eq!(got, expected, "budget {budget}: cut mid-compaction");
    }
    assert!(
        compacted_at.unwrap() > 100,
        "the compaction wrote the whole state"
    );
}

/// One flipped byte anywhere in a record makes its CRC fail: the log ends before it, and the
/// records before it stay.
#[test]
fn a_corrupted_byte_is_rejected_by_the_crc() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flash");
    let (mut t, mut j) = open_file(&path);
    j.put(&mut t, &reservation(1)).unwrap();
    let before = snapshot(&t, &j);
    let start = (j.bank_base(j.bank) + j.head) as usize;
    j.put(&mut t, &reservation(2)).unwrap();
    let end = (j.bank_base(j.bank) + j.head) as usize;
    drop(j);
    let clean = std::fs::read(&path).unwrap();
    for at in start..end {
        let mut bytes = clean.clone();
        bytes[at] ^= 0x01;
        let p = dir.path().join(format!("flip-{at}"));
        std::fs::write(&p, &bytes).unwrap();
        let (t2, j2) = open_file(&p);
        assert_eq!(snapshot(&t2, &j2), before, "flipped byte {at}");
    }
}

#[test]
fn a_full_store_says_so() {
    let mut flash = CutFlash {
        bytes: vec![0xFF; 2 * 1024],
        budget: usize::MAX,
    };
    let mut t = T::new();
    let mut j = J::open(&mut flash, &mut t).unwrap();
    let mut full = false;
    for i in 0..64 {
        match j.put(&mut t, &reservation(i)) {
            Ok(()) => {}
            Err(StoreError::Full) => {
                full = true;
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(full, "64 reservations do not fit in 1 KiB banks");
}

impl<F: Flash> Flash for &mut F {
    type Error = F::Error;
    fn capacity(&self) -> u32 {
        (**self).capacity()
    }
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error> {
        (**self).read(offset, buf)
    }
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), Self::Error> {
        (**self).write(offset, data)
    }
    fn erase(&mut self, offset: u32, len: u32) -> Result<(), Self::Error> {
        (**self).erase(offset, len)
    }
    fn sync(&mut self) -> Result<(), Self::Error> {
        (**self).sync()
    }
}
