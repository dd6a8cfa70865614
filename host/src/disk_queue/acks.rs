//! Which records are settled, and the cursor file that remembers it across restarts.
//!
//! Records settle in any order (an exporter has several requests in flight), but the cursor —
//! the first record not yet settled — only moves over a settled prefix. Everything from the
//! cursor on is delivered again after a restart: that is the at-least-once window, and why
//! records settled ahead of the cursor can be delivered twice.
//!
//! The cursor file is rewritten in place whenever the cursor moves (a 16-byte write that
//! survives the process being killed, as it sits in the page cache) and synced at most once a
//! second (what a lost machine may forget). It carries its own checksum; a damaged one is read
//! as "nothing settled", which replays more but loses nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// "SLQA": marks a cursor file.
const MAGIC: u32 = u32::from_le_bytes(*b"SLQA");
const LEN: usize = 16;
/// How often the cursor file is synced to the device.
const SYNC_EVERY: Duration = Duration::from_secs(1);

fn encode(cursor: u64) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4..12].copy_from_slice(&cursor.to_le_bytes());
    let crc = crc32fast::hash(&out[0..12]);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<u64> {
    let bytes: &[u8; LEN] = bytes.try_into().ok()?;
    let crc = u32::from_le_bytes(bytes[12..16].try_into().ok()?);
    let magic = u32::from_le_bytes(bytes[0..4].try_into().ok()?);
    (magic == MAGIC && crc32fast::hash(&bytes[0..12]) == crc)
        .then(|| u64::from_le_bytes(bytes[4..12].try_into().expect("eight bytes")))
}

/// What the cursor file said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// No file: a new queue.
    Missing,
    /// A cursor, checksum intact.
    Cursor(u64),
    /// A file that isn't a cursor (damaged).
    Damaged,
}

/// Reads the cursor file at `path`.
pub fn read(path: &Path) -> io::Result<Stored> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(decode(&bytes).map_or(Stored::Damaged, Stored::Cursor)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Stored::Missing),
        Err(error) => Err(error),
    }
}

/// The settled records and the cursor file.
#[derive(Debug)]
pub struct Acks {
    cursor: u64,
    /// Settled records past the cursor.
    ahead: BTreeSet<u64>,
    /// Records handed to the exporter and not settled: seq → when written (ms).
    in_flight: BTreeMap<u64, u64>,
    file: File,
    synced: Instant,
}

impl Acks {
    /// Tracks settlements from `cursor`, writing it to `path` (created if missing).
    pub fn new(path: &Path, cursor: u64) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
        let acks =
            Self { cursor, ahead: BTreeSet::new(), in_flight: BTreeMap::new(), file, synced: Instant::now() };
        acks.file.write_all_at(&encode(cursor), 0)?;
        acks.file.sync_data()?;
        Ok(acks)
    }

    /// Record `seq`, written at `written_at_ms`, is now the exporter's.
    pub fn handed_out(&mut self, seq: u64, written_at_ms: u64) {
        self.in_flight.insert(seq, written_at_ms);
    }

    /// When the oldest record the exporter holds was written.
    pub fn oldest_in_flight(&self) -> Option<u64> {
        // Records are written, and so numbered, in time order: the lowest seq is the oldest.
        self.in_flight.first_key_value().map(|(_, written_at_ms)| *written_at_ms)
    }

    /// Record `seq` is settled. Returns the new cursor if it moved; the file then says so.
    pub fn settle(&mut self, seq: u64) -> io::Result<Option<u64>> {
        self.in_flight.remove(&seq);
        if seq < self.cursor {
            return Ok(None);
        }
        if seq > self.cursor {
            self.ahead.insert(seq);
            return Ok(None);
        }
        self.cursor += 1;
        while self.ahead.remove(&self.cursor) {
            self.cursor += 1;
        }
        self.file.write_all_at(&encode(self.cursor), 0)?;
        if self.synced.elapsed() >= SYNC_EVERY {
            self.file.sync_data()?;
            self.synced = Instant::now();
        }
        Ok(Some(self.cursor))
    }
}

impl Drop for Acks {
    fn drop(&mut self) {
        // A clean stop leaves the cursor on the device, so the next start replays nothing.
        let _ = self.file.sync_data();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_moves_only_over_a_settled_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("acked");
        let mut acks = Acks::new(&path, 10).expect("opens");
        for seq in 10..15 {
            acks.handed_out(seq, 1000 + seq);
        }
        assert_eq!(acks.oldest_in_flight(), Some(1010));
        assert_eq!(acks.settle(12).expect("writes"), None, "12 is ahead of 10");
        assert_eq!(acks.settle(11).expect("writes"), None);
        assert_eq!(read(&path).expect("reads"), Stored::Cursor(10), "nothing moved yet");
        assert_eq!(acks.settle(10).expect("writes"), Some(13), "10, 11 and 12 settled");
        assert_eq!(read(&path).expect("reads"), Stored::Cursor(13), "the file follows");
        assert_eq!(acks.oldest_in_flight(), Some(1013));
        assert_eq!(acks.settle(10).expect("writes"), None, "settling twice changes nothing");
    }

    #[test]
    fn a_damaged_or_missing_file_is_told_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("acked");
        assert_eq!(read(&path).expect("reads"), Stored::Missing);
        drop(Acks::new(&path, 42).expect("opens"));
        let mut bytes = std::fs::read(&path).expect("reads");
        assert_eq!(decode(&bytes), Some(42));
        bytes[5] ^= 1;
        std::fs::write(&path, &bytes).expect("writes");
        assert_eq!(read(&path).expect("reads"), Stored::Damaged);
        std::fs::write(&path, b"short").expect("writes");
        assert_eq!(read(&path).expect("reads"), Stored::Damaged);
    }
}
