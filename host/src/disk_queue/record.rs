//! How one batch is laid out on disk, and how a segment's bytes are read back — including
//! finding the next good record after a damaged one.
//!
//! A record is a fixed header and the batch's encoded request:
//!
//! ```text
//! magic u32 | payload length u32 | CRC-32 u32 | seq u64 | written at (ms) u64 | items u64 | kind u8 | payload
//! ```
//!
//! All little-endian. `kind` is the signal's index (0 traces, 1 metrics, 2 logs), plus 0x80 when
//! the payload is the request gzipped ([`Form::Gzip`]); records written before that bit existed
//! read as they always did, while a host older than it takes a gzip record for damage. The CRC covers everything after itself (the rest of the header and the
//! payload), so a torn write, a flipped bit or a record from another sequence is caught before
//! a byte of it is trusted. The magic number is what [`scan`] looks for to find the next
//! record after a damaged stretch.

use crate::config::Signal;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 37;

/// "SLQ1": marks the start of every record.
const MAGIC: u32 = u32::from_le_bytes(*b"SLQ1");

/// The largest payload a record may claim: a length beyond it is damage, not a record. Far above
/// any request a receiver accepts.
pub const MAX_PAYLOAD: usize = 1 << 30;

/// The `kind` bit of a gzip payload.
const GZIP: u8 = 0x80;

/// How a record's payload holds its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Form {
    /// The encoded `Export*ServiceRequest` itself.
    #[default]
    Encoded,
    /// One gzip member that decompresses to it: what an exporter that sends gzip would send.
    Gzip,
}

/// What a record says about its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Its place in the queue: every record's is one more than the one before it.
    pub seq: u64,
    /// When it was written, in milliseconds since the Unix epoch.
    pub written_at_ms: u64,
    /// Spans, data points or log records in the batch.
    pub items: u64,
    /// The batch's signal.
    pub signal: Signal,
    /// How the payload holds the batch.
    pub form: Form,
}

/// The header for `payload` described by `meta`.
pub fn header(meta: &Meta, payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    let length = u32::try_from(payload.len()).expect("payloads are bounded by MAX_PAYLOAD");
    out[4..8].copy_from_slice(&length.to_le_bytes());
    out[12..20].copy_from_slice(&meta.seq.to_le_bytes());
    out[20..28].copy_from_slice(&meta.written_at_ms.to_le_bytes());
    out[28..36].copy_from_slice(&meta.items.to_le_bytes());
    let signal = u8::try_from(meta.signal.index()).expect("three signals");
    out[36] = signal | if meta.form == Form::Gzip { GZIP } else { 0 };
    let crc = checksum(&out, payload);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

fn checksum(header: &[u8; HEADER_LEN], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[12..]);
    hasher.update(payload);
    hasher.finalize()
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

/// A header whose fields are plausible; its CRC is checked once the payload is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the record says about its batch.
    pub meta: Meta,
    /// The payload's length.
    pub payload_len: usize,
    crc: u32,
    raw: [u8; HEADER_LEN],
}

impl Header {
    /// Reads a header; `None` when it can't be one (wrong magic, a length past
    /// [`MAX_PAYLOAD`], an unknown kind).
    pub fn parse(raw: &[u8; HEADER_LEN]) -> Option<Self> {
        if u32_at(raw, 0) != MAGIC {
            return None;
        }
        let payload_len = usize::try_from(u32_at(raw, 4)).ok().filter(|&n| n <= MAX_PAYLOAD)?;
        let signal = *Signal::ALL.get(usize::from(raw[36] & !GZIP))?;
        let form = if raw[36] & GZIP == 0 { Form::Encoded } else { Form::Gzip };
        let (seq, written_at_ms, items) = (u64_at(raw, 12), u64_at(raw, 20), u64_at(raw, 28));
        let meta = Meta { seq, written_at_ms, items, signal, form };
        Some(Self { meta, payload_len, crc: u32_at(raw, 8), raw: *raw })
    }

    /// The record's whole length on disk.
    pub fn record_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Whether `payload` is the one this header was written with.
    pub fn matches(&self, payload: &[u8]) -> bool {
        payload.len() == self.payload_len && checksum(&self.raw, payload) == self.crc
    }
}

/// One whole, checked record found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Where it starts.
    pub offset: usize,
    /// What it says.
    pub meta: Meta,
    /// Its length, header included.
    pub len: usize,
}

/// The checked record starting at `offset` of `bytes`, if a whole one does.
pub fn record_at(bytes: &[u8], offset: usize) -> Option<Found> {
    let raw: &[u8; HEADER_LEN] = bytes.get(offset..offset.checked_add(HEADER_LEN)?)?.try_into().ok()?;
    let header = Header::parse(raw)?;
    let payload = bytes.get(offset + HEADER_LEN..offset.checked_add(header.record_len())?)?;
    header.matches(payload).then_some(Found { offset, meta: header.meta, len: header.record_len() })
}

/// The first whole, checked record at or after `from` in `bytes` whose seq is at least `min_seq`:
/// where reading resumes after damage.
pub fn next_good(bytes: &[u8], from: usize, min_seq: u64) -> Option<Found> {
    let magic = MAGIC.to_le_bytes();
    let mut at = from;
    while let Some(window) = bytes.get(at..) {
        let found = window.windows(4).position(|w| w == magic)?;
        at += found;
        if let Some(record) = record_at(bytes, at).filter(|r| r.meta.seq >= min_seq) {
            return Some(record);
        }
        at += 1;
    }
    None
}

/// What reading a whole segment found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Every good record, in order, with consecutive seqs except across damage.
    pub records: Vec<Found>,
    /// Stretches that held no good record: (offset, length).
    pub damaged: Vec<(usize, usize)>,
    /// Where the good data ends: past it is a torn tail (or nothing).
    pub end: usize,
}

/// Reads every record of a segment whose first record is `first_seq`. Damage in the middle is
/// stepped over (the next good record after it is found by its magic number and checksum); a
/// damaged end — a write the process died in — is reported as `end` short of the length.
pub fn scan(bytes: &[u8], first_seq: u64) -> Scan {
    let mut out = Scan::default();
    let mut offset = 0;
    let mut expected = first_seq;
    while offset < bytes.len() {
        // A later seq than expected is a gap the writer never leaves but a reader must survive;
        // an earlier one is stale bytes, so damage.
        let found = record_at(bytes, offset).filter(|r| r.meta.seq >= expected);
        let record = match found {
            Some(record) => record,
            None => match next_good(bytes, offset + 1, expected) {
                Some(record) => {
                    out.damaged.push((offset, record.offset - offset));
                    record
                }
                None => break,
            },
        };
        out.records.push(record);
        expected = record.meta.seq + 1;
        offset = record.offset + record.len;
        out.end = offset;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, payload: &[u8]) -> Vec<u8> {
        let form = if seq.is_multiple_of(2) { Form::Encoded } else { Form::Gzip };
        let meta =
            Meta { seq, written_at_ms: 1_700_000_000_000 + seq, items: seq + 1, signal: Signal::Logs, form };
        let mut out = header(&meta, payload).to_vec();
        out.extend_from_slice(payload);
        out
    }

    fn segment(first: u64, payloads: &[&[u8]]) -> Vec<u8> {
        payloads.iter().enumerate().flat_map(|(i, p)| record(first + i as u64, p)).collect()
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let bytes = record(7, b"payload");
        let found = record_at(&bytes, 0).expect("whole");
        let meta = Meta {
            seq: 7,
            written_at_ms: 1_700_000_000_007,
            items: 8,
            signal: Signal::Logs,
            form: Form::Gzip,
        };
        assert_eq!(found.meta, meta);
        assert_eq!((found.offset, found.len), (0, HEADER_LEN + 7));
        assert_eq!(record_at(&record(8, b"payload"), 0).expect("whole").meta.form, Form::Encoded);
    }

    /// Records laid out by hand: one written before the gzip bit existed (the kind byte the
    /// signal alone) reads as it always did; the bit marks a gzip payload; other kinds are damage.
    #[test]
    fn the_kind_byte_is_the_signal_and_the_gzip_bit() {
        let record = |kind: u8| {
            let header = ["534c5131", "07000000", "00000000", "0500000000000000", "0100000000000000"];
            let mut bytes = hex::decode(header.concat() + "0200000000000000").expect("hex");
            bytes.push(kind);
            bytes.extend_from_slice(b"payload");
            let crc = crc32fast::hash(&bytes[12..]);
            bytes[8..12].copy_from_slice(&crc.to_le_bytes());
            record_at(&bytes, 0).map(|found| (found.meta.signal, found.meta.form))
        };
        assert_eq!(record(1), Some((Signal::Metrics, Form::Encoded)));
        assert_eq!(record(0x82), Some((Signal::Logs, Form::Gzip)));
        for kind in [3, 0x40, 0x83, 0xff] {
            assert_eq!(record(kind), None, "kind {kind:#x}");
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let bytes = record(3, b"some payload bytes");
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(record_at(&damaged, 0), None, "bit {bit} flipped went unnoticed");
        }
    }

    #[test]
    fn a_torn_tail_ends_the_good_data() {
        let whole = segment(10, &[b"one", b"two", b"three"]);
        for cut in 0..whole.len() {
            let scan = scan(&whole[..cut], 10);
            let complete = scan.records.len();
            let boundaries = [0, HEADER_LEN + 3, 2 * (HEADER_LEN + 3)];
            let expected_end = boundaries[..].iter().copied().filter(|&b| b <= cut).max().unwrap_or(0);
            assert_eq!(scan.end, expected_end, "cut at {cut}");
            assert_eq!(complete, boundaries.iter().filter(|&&b| b > 0 && b <= cut).count(), "cut at {cut}");
            assert!(scan.damaged.is_empty(), "a short tail is not damage in the middle");
        }
    }

    #[test]
    fn damage_in_the_middle_is_stepped_over() {
        let mut bytes = segment(0, &[b"first", b"second", b"third"]);
        let second = HEADER_LEN + 5;
        bytes[second + HEADER_LEN + 1] ^= 0xff;
        let scan = scan(&bytes, 0);
        let seqs: Vec<u64> = scan.records.iter().map(|r| r.meta.seq).collect();
        assert_eq!(seqs, [0, 2], "the damaged record is skipped, the one after it kept");
        assert_eq!(scan.damaged, [(second, HEADER_LEN + 6)]);
        assert_eq!(scan.end, bytes.len());
    }

    #[test]
    fn a_record_from_another_place_in_the_queue_is_not_taken() {
        let bytes = [segment(0, &[b"a"]), record(5, b"b")].concat();
        let scan = scan(&bytes, 0);
        assert_eq!(scan.records.len(), 2, "a later seq after damage-free bytes is a gap, not a break");
        let stale = [segment(4, &[b"a"]), record(2, b"b")].concat();
        let scan = super::scan(&stale, 4);
        assert_eq!(scan.records.len(), 1, "an older seq can't follow a newer one");
        assert_eq!(scan.end, HEADER_LEN + 1);
    }
}
