//! The feeder: reads records in order and hands each, as a batch carrying its [`Claim`], to
//! the exporter's memory queue — waiting while that queue is full, and following the exporter
//! when a reload replaces it. A record this run appended comes from its copy in memory when one
//! is still kept, and is read from the file otherwise.
//!
//! A damaged record (a bad sector, a file changed behind the host's back) is stepped over: the
//! next good record is found by its magic number and checksum, and the records lost in between
//! — the gap in seqs — are counted as corrupt and settled, so the cursor moves on.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::record::{self, Form, HEADER_LEN, Header, Meta};
use super::{Claim, DiskQueue, lock, log};
use crate::batch::{Batch, Compressed};
use crate::config::CompressionConfig;

/// How often the oldest-item gauge is refreshed while the feeder waits.
const REFRESH: Duration = Duration::from_secs(1);

/// Where the feeder reads next.
#[derive(Debug)]
pub struct Position {
    /// The next seq to hand out.
    seq: u64,
    /// The segment being read (its first seq) and the offset in it.
    segment: u64,
    offset: u64,
    /// The least seq the next record in this segment may have: one past the last good one.
    /// Reading follows [`record::scan`]'s rules, so the feeder hands out exactly what a scan
    /// of the same bytes finds.
    expected: u64,
    file: Option<(u64, File)>,
}

impl Position {
    /// Reading from record `seq`, which is in the segment starting at `segment`.
    pub fn new(seq: u64, segment: u64) -> Self {
        Self { seq, segment, offset: 0, expected: segment, file: None }
    }

    fn enter(&mut self, segment: u64) {
        (self.segment, self.offset, self.expected) = (segment, 0, segment);
    }
}

/// A record read back, not yet handed out.
struct Record {
    meta: Meta,
    /// The batch's encoded request.
    payload: Bytes,
    /// The gzip body the record holds, which decompresses to `payload`.
    gzip: Option<Compressed>,
    end: u64,
}

/// Runs until nobody holds the queue and everything written has been handed out: reads
/// records as they are appended and hands them out.
pub fn run(queue: &Arc<DiskQueue>, runtime: &tokio::runtime::Handle) {
    // One feeder at a time: one started by a new attachment waits here for the one finishing.
    let mut position = lock(&queue.position);
    loop {
        // Read before looking for records: a queue closing already when the look found nothing
        // has nothing more coming, unless someone attached since (and may have appended and let
        // go while this thread was between its look and the stop): that is caught on the next
        // turn.
        let closing = queue.closing();
        let grown = queue.grown.notified();
        tokio::pin!(grown);
        grown.as_mut().enable();
        let record = match next_record(queue, &mut position) {
            Ok(Some(record)) => record,
            Ok(None) => {
                queue.update_age(None);
                // With `sync = "periodic"` nothing else syncs a queue that went quiet.
                if let Err(error) = queue.sync() {
                    queue.log_error(&error);
                }
                if let Some(seen) = closing
                    && queue.stop_if_closing(seen)
                {
                    return;
                }
                runtime.block_on(async {
                    tokio::select! {
                        () = grown => {}
                        () = tokio::time::sleep(REFRESH) => {}
                    }
                });
                continue;
            }
            Err(error) => {
                queue.log_error(&queue.io_error("reading", &error));
                runtime.block_on(tokio::time::sleep(REFRESH));
                continue;
            }
        };
        if !hand_over(queue, &record, runtime) {
            return;
        }
        position.seq = record.meta.seq + 1;
        position.offset = record.end;
    }
}

/// Hands `record` to the current consumer, waiting for room; false when the queue closed with
/// no consumer left to take it (it stays on disk for the next start).
fn hand_over(queue: &Arc<DiskQueue>, record: &Record, runtime: &tokio::runtime::Handle) -> bool {
    let meta = record.meta;
    runtime.block_on(async {
        let mut consumer = queue.consumer.subscribe();
        loop {
            queue.update_age(Some(meta.written_at_ms));
            let current = consumer.borrow_and_update().clone();
            let reserved = match &current {
                Some((_, sender)) => tokio::select! {
                    reserved = sender.reserve() => reserved,
                    _ = consumer.changed() => continue,
                    () = tokio::time::sleep(REFRESH) => continue,
                },
                None => None,
            };
            let Some(slot) = reserved else {
                // No exporter, or it is gone: a reload's replacement attaches soon.
                if queue.closing().is_some_and(|now| queue.stop_if_closing(now)) {
                    return false;
                }
                tokio::select! {
                    _ = consumer.changed() => {}
                    () = tokio::time::sleep(REFRESH) => {}
                }
                continue;
            };
            lock(&queue.acks).handed_out(meta.seq, meta.written_at_ms);
            if meta.seq < queue.replay_before {
                queue.metrics.replayed.inc_by(meta.items);
            }
            let claim = Claim { queue: queue.clone(), seq: meta.seq, items: meta.items };
            let mut batch = Batch::from_encoded(meta.signal, record.payload.clone(), meta.items);
            if let Some(gzip) = &record.gzip {
                // The exporter sends it as it is, or joins it with others, compressing nothing.
                batch = batch.with_compressed(gzip.clone());
            }
            slot.send(Arc::new(batch.with_claim(claim)));
            return true;
        }
    })
}

/// The next record after `position`, if one has been appended; steps over damage.
fn next_record(queue: &DiskQueue, position: &mut Position) -> io::Result<Option<Record>> {
    loop {
        let (length, next_segment) = {
            let log = lock(&queue.log);
            let segments = log.segments();
            match segments.iter().position(|s| s.first_seq == position.segment) {
                Some(i) => (segments[i].bytes, segments.get(i + 1).map(|s| s.first_seq)),
                None => {
                    // Deleted (settled) or never there: carry on from the oldest.
                    let oldest = segments.front().map_or(position.seq, |s| s.first_seq);
                    if oldest == position.segment {
                        return Ok(None);
                    }
                    position.enter(oldest);
                    continue;
                }
            }
        };
        if position.offset >= length {
            match next_segment {
                Some(next) => {
                    position.enter(next);
                    continue;
                }
                None => return Ok(None),
            }
        }
        match read_at(queue, position, length)? {
            Read::Record(record) if record.meta.seq < position.seq => {
                // Settled before this run started: the cursor's segment begins with those.
                position.offset = record.end;
                position.expected = record.meta.seq + 1;
            }
            Read::Record(record) => {
                skip_gap(queue, position, record.meta.seq);
                position.expected = record.meta.seq + 1;
                return Ok(Some(record));
            }
            Read::Damaged { resume } => {
                if let Some(suppressed) = queue.errors.check() {
                    tracing::error!(
                        exporter = %queue.name, directory = %queue.directory.display(), segment = position.segment,
                        offset = position.offset, skipped_bytes = resume.unwrap_or(length) - position.offset,
                        similar_errors_not_logged = suppressed,
                        "Disk queue: a damaged record; skipping to the next good one"
                    );
                }
                match resume {
                    Some(offset) => position.offset = offset,
                    None => {
                        position.offset = length;
                        if let Some(next) = next_segment {
                            skip_gap(queue, position, next);
                        }
                    }
                }
            }
        }
    }
}

/// Records `position.seq..seq` were lost to damage: counted, and settled so the cursor moves.
fn skip_gap(queue: &DiskQueue, position: &mut Position, seq: u64) {
    if seq <= position.seq {
        return;
    }
    queue.metrics.corrupt.inc_by(seq - position.seq);
    for lost in position.seq..seq {
        lock(&queue.acks).handed_out(lost, 0);
        queue.settle(lost, 0);
    }
    position.seq = seq;
}

enum Read {
    Record(Record),
    /// Not a whole good record here; the next good one (with a seq not below the position's)
    /// starts at `resume`, if any does before `length`.
    Damaged {
        resume: Option<u64>,
    },
}

fn read_at(queue: &DiskQueue, position: &mut Position, length: u64) -> io::Result<Read> {
    let segment = position.segment;
    if let Some(copy) = lock(&queue.recent).take(segment, position.offset)
        && copy.meta.seq >= position.expected
    {
        let end = copy.end();
        return Ok(Read::Record(Record { meta: copy.meta, payload: copy.payload, gzip: copy.gzip, end }));
    }
    if position.file.as_ref().is_none_or(|(open, _)| *open != segment) {
        position.file = Some((segment, File::open(log::segment_path(&queue.directory, segment))?));
    }
    let (_, file) = position.file.as_ref().expect("opened above");
    let offset = position.offset;
    let read_back = |bytes: usize| queue.metrics.read_back.inc_by(bytes as u64);
    let mut raw = [0u8; HEADER_LEN];
    let header = if offset + HEADER_LEN as u64 <= length {
        file.read_exact_at(&mut raw, offset)?;
        read_back(raw.len());
        Header::parse(&raw).filter(|h| offset + h.record_len() as u64 <= length)
    } else {
        None
    };
    // A record older than one before it in the segment is stale bytes: damage, as in a scan.
    if let Some(header) = header.filter(|h| h.meta.seq >= position.expected) {
        let mut payload = vec![0u8; header.payload_len];
        file.read_exact_at(&mut payload, offset + HEADER_LEN as u64)?;
        read_back(payload.len());
        if header.matches(&payload) {
            let end = offset + header.record_len() as u64;
            let Some((payload, gzip)) = unpack(header.meta.form, payload) else {
                // Checked, yet not gzip: not a record this host could have written.
                return Ok(Read::Damaged { resume: Some(end) });
            };
            return Ok(Read::Record(Record { meta: header.meta, payload, gzip, end }));
        }
    }
    let mut rest = vec![0u8; usize::try_from(length - offset).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut rest, offset)?;
    read_back(rest.len());
    let resume = record::next_good(&rest, 1, position.expected).map(|found| offset + found.offset as u64);
    Ok(Read::Damaged { resume })
}

/// A record's batch from its checked payload: the encoded request, and the gzip body it was
/// stored as, if it was (inflated here: only records read back from the file pay for it).
/// `None` for a gzip payload that does not inflate.
fn unpack(form: Form, stored: Vec<u8>) -> Option<(Bytes, Option<Compressed>)> {
    match form {
        Form::Encoded => Some((stored.into(), None)),
        Form::Gzip => {
            let (payload, map) = crate::gzip::splice::gunzip_mapped(&stored, record::MAX_PAYLOAD).ok()?;
            Some((payload.into(), Some(Compressed::new(CompressionConfig::Gzip, stored.into(), map))))
        }
    }
}
