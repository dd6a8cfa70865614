//! The queue's records on disk: segment files named by their first record's seq, appended to
//! and synced one record at a time, deleted whole once every record in them is settled.
//!
//! Opening a directory reads what an earlier run left: segments wholly before the cursor are
//! deleted, the rest are checked record by record, and a torn tail on the last one — the write
//! a killed process was in the middle of — is cut off and counted.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::record::{self, HEADER_LEN, Meta};

/// One segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// The seq of its first record (its name).
    pub first_seq: u64,
    /// Bytes of whole records in it.
    pub bytes: u64,
}

/// Where [`Log::append`] put a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// The record's seq.
    pub seq: u64,
    /// The segment it is in (its first seq).
    pub segment: u64,
    /// Its byte offset in that segment.
    pub offset: u64,
}

/// The file of the segment starting at `first_seq`.
pub fn segment_path(directory: &Path, first_seq: u64) -> PathBuf {
    directory.join(format!("{first_seq:020}.seg"))
}

/// What opening the log found beyond its records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Items in records from the cursor on: what will be delivered again.
    pub items: u64,
    /// Records the earlier run left whole and unsettled.
    pub records: u64,
    /// Bytes cut off the end (a torn write).
    pub torn_bytes: u64,
}

/// The segments and the file being appended to.
#[derive(Debug)]
pub struct Log {
    directory: PathBuf,
    /// Oldest first; the last is being appended to.
    segments: VecDeque<Segment>,
    active: File,
    next_seq: u64,
    total_bytes: u64,
    segment_limit: u64,
    /// Records written since the last sync.
    unsynced: bool,
    last_sync: std::time::Instant,
}

/// Segment files in `directory`, oldest first.
fn list(directory: &Path) -> io::Result<Vec<u64>> {
    let mut firsts = Vec::new();
    for entry in fs::read_dir(directory)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(first) = name.strip_suffix(".seg").and_then(|stem| stem.parse::<u64>().ok()) {
            firsts.push(first);
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

fn sync_directory(directory: &Path) -> io::Result<()> {
    File::open(directory)?.sync_all()
}

impl Log {
    /// Opens the log in `directory`, whose cursor file said `cursor` (the first unsettled
    /// record). Segments of at most `segment_limit` bytes (one record may exceed it).
    pub fn open(directory: &Path, cursor: u64, segment_limit: u64) -> io::Result<(Self, Recovered)> {
        let mut firsts = list(directory)?;
        // Segments wholly before the cursor were settled; an earlier run died before deleting.
        while firsts.len() > 1 && firsts[1] <= cursor {
            fs::remove_file(segment_path(directory, firsts.remove(0)))?;
        }
        let mut recovered = Recovered::default();
        let mut segments = VecDeque::with_capacity(firsts.len());
        let mut next_seq = cursor;
        let count = firsts.len();
        for (index, first_seq) in firsts.into_iter().enumerate() {
            let path = segment_path(directory, first_seq);
            let bytes = fs::read(&path)?;
            let scan = record::scan(&bytes, first_seq);
            for found in scan.records.iter().filter(|r| r.meta.seq >= cursor) {
                recovered.items += found.meta.items;
                recovered.records += 1;
            }
            let mut length = bytes.len() as u64;
            if index + 1 == count && scan.end < bytes.len() {
                // The last segment's tail is where a killed write stopped: cut it off so
                // appends continue from whole records.
                recovered.torn_bytes = (bytes.len() - scan.end) as u64;
                length = scan.end as u64;
                fs::OpenOptions::new().write(true).open(&path)?.set_len(length)?;
            }
            if let Some(last) = scan.records.last() {
                next_seq = next_seq.max(last.meta.seq + 1);
            }
            next_seq = next_seq.max(first_seq);
            segments.push_back(Segment { first_seq, bytes: length });
        }
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        if segments.is_empty() {
            segments.push_back(Segment { first_seq: next_seq, bytes: 0 });
        }
        let active_first = segments.back().expect("one at least").first_seq;
        let active = Self::open_segment(directory, active_first)?;
        let log = Self {
            directory: directory.to_path_buf(),
            segments,
            active,
            next_seq,
            total_bytes,
            segment_limit,
            unsynced: false,
            last_sync: std::time::Instant::now(),
        };
        Ok((log, recovered))
    }

    fn open_segment(directory: &Path, first_seq: u64) -> io::Result<File> {
        let path = segment_path(directory, first_seq);
        let created = !path.exists();
        let file = fs::OpenOptions::new().create(true).append(true).open(&path)?;
        if created {
            // The new name must survive a lost machine too, not only the data in it.
            sync_directory(directory)?;
        }
        Ok(file)
    }

    /// The seq the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes of every segment together.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> &VecDeque<Segment> {
        &self.segments
    }

    /// Appends one record; returns its seq and where it went. On failure nothing of it stays in
    /// the file. It is on the device only after [`Log::sync`]; until then a killed process keeps
    /// it (the page cache does) but a lost machine may not.
    pub fn append(&mut self, mut meta: Meta, payload: &[u8]) -> io::Result<Placed> {
        let record_len = (HEADER_LEN + payload.len()) as u64;
        let active = *self.segments.back().expect("one at least");
        if active.bytes > 0 && active.bytes + record_len > self.segment_limit {
            self.roll()?;
        }
        meta.seq = self.next_seq;
        let header = record::header(&meta, payload);
        let written = write_both(&mut self.active, &header, payload);
        let active = self.segments.back_mut().expect("one at least");
        if let Err(error) = written {
            // Leave no partial record behind for the next append to follow.
            let _ = self.active.set_len(active.bytes);
            return Err(error);
        }
        let placed = Placed { seq: meta.seq, segment: active.first_seq, offset: active.bytes };
        active.bytes += record_len;
        self.total_bytes += record_len;
        self.next_seq += 1;
        self.unsynced = true;
        Ok(placed)
    }

    /// Puts every record appended so far on the device.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.active.sync_data()?;
            self.unsynced = false;
        }
        self.last_sync = std::time::Instant::now();
        Ok(())
    }

    /// When [`Log::sync`] last ran.
    pub fn last_sync(&self) -> std::time::Instant {
        self.last_sync
    }

    /// Starts a new segment at the next seq, syncing the one it leaves.
    pub fn roll(&mut self) -> io::Result<()> {
        self.sync()?;
        self.active = Self::open_segment(&self.directory, self.next_seq)?;
        self.segments.push_back(Segment { first_seq: self.next_seq, bytes: 0 });
        Ok(())
    }

    /// Deletes every segment whose records all come before `cursor` (never the one being
    /// appended to); returns how many bytes that freed.
    pub fn release_before(&mut self, cursor: u64) -> io::Result<u64> {
        let mut freed = 0;
        while self.segments.len() > 1 && self.segments[1].first_seq <= cursor {
            let oldest = self.segments.pop_front().expect("two at least");
            fs::remove_file(segment_path(&self.directory, oldest.first_seq))?;
            self.total_bytes -= oldest.bytes;
            freed += oldest.bytes;
        }
        Ok(freed)
    }
}

/// `header` then `payload`, in one `writev` when the file takes both at once (it nearly always
/// does): a record is one system call, not two.
fn write_both(file: &mut File, header: &[u8], payload: &[u8]) -> io::Result<()> {
    let written = loop {
        match file.write_vectored(&[io::IoSlice::new(header), io::IoSlice::new(payload)]) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            written => break written?,
        }
    };
    if written < header.len() {
        file.write_all(&header[written..])?;
        return file.write_all(payload);
    }
    file.write_all(&payload[written - header.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Signal;
    use crate::disk_queue::record::Form;

    fn meta(items: u64) -> Meta {
        Meta { seq: 0, written_at_ms: 1, items, signal: Signal::Traces, form: Form::Encoded }
    }

    #[test]
    fn records_roll_into_new_segments_and_settled_ones_are_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, recovered) = Log::open(dir.path(), 0, 160).expect("opens");
        assert_eq!(recovered, Recovered::default());
        for _ in 0..5 {
            log.append(meta(1), &[7; 40]).expect("appends");
        }
        let firsts: Vec<u64> = log.segments().iter().map(|s| s.first_seq).collect();
        assert_eq!(firsts, [0, 2, 4], "two 77-byte records per 160-byte segment");
        assert_eq!(log.total_bytes(), 5 * 77);
        assert_eq!(log.release_before(3).expect("deletes"), 154, "only the first is wholly settled");
        assert!(!segment_path(dir.path(), 0).exists());
        assert_eq!(log.release_before(100).expect("deletes"), 154, "the active segment stays");
        assert_eq!(log.segments().len(), 1);
    }

    #[test]
    fn reopening_finds_the_unsettled_records_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = Log::open(dir.path(), 0, 1 << 20).expect("opens");
        for items in 1..=4 {
            log.append(meta(items), b"payload").expect("appends");
        }
        drop(log);
        let path = segment_path(dir.path(), 0);
        let mut file = fs::OpenOptions::new().append(true).open(&path).expect("opens");
        file.write_all(&[0x53, 0x4c, 0x51, 0x31, 9, 9]).expect("a torn header");
        drop(file);

        let (mut log, recovered) = Log::open(dir.path(), 2, 1 << 20).expect("reopens");
        assert_eq!(recovered, Recovered { items: 3 + 4, records: 2, torn_bytes: 6 });
        assert_eq!(log.next_seq(), 4);
        assert_eq!(log.append(meta(5), b"next").expect("appends").seq, 4);
        let scan = record::scan(&fs::read(&path).expect("reads"), 0);
        assert_eq!(scan.records.len(), 5, "the new record follows the last whole one");
    }
}
