//! Records this run appended that the feeder has not read yet, kept in memory so that it hands
//! them out without reading them back from the file it just wrote (a copy of every byte, and a
//! checksum over it, per record).
//!
//! The copies share the batches' buffers, so keeping one costs no copy either; a budget bounds
//! what they hold while the exporter lags behind (its destination is slow or down), and past it
//! the oldest are let go: the feeder reads those from the file, as it does everything a restart
//! finds there.

use std::collections::VecDeque;

use bytes::Bytes;

use super::log::Placed;
use super::record::{HEADER_LEN, Meta};
use crate::batch::Compressed;

/// How many bytes the copies may hold together (encoded requests and gzip bodies).
pub const BUDGET: usize = 8 << 20;

/// One record as it was appended.
#[derive(Debug, Clone)]
pub struct Appended {
    /// Its header's fields.
    pub meta: Meta,
    /// The segment it is in (its first seq).
    pub segment: u64,
    /// Its byte offset in that segment.
    pub offset: u64,
    /// Its batch's encoded request.
    pub payload: Bytes,
    /// The gzip body the record holds instead of `payload`, when it holds one.
    pub gzip: Option<Compressed>,
}

impl Appended {
    /// The offset just past it in its segment.
    pub fn end(&self) -> u64 {
        let stored = self.gzip.as_ref().map_or(self.payload.len(), |gzip| gzip.body().len());
        self.offset + (HEADER_LEN + stored) as u64
    }

    /// The bytes it keeps in memory.
    fn held(&self) -> usize {
        self.payload.len() + self.gzip.as_ref().map_or(0, |gzip| gzip.body().len())
    }
}

/// The copies, oldest first: in append order, which is seq order and file order.
#[derive(Debug, Default)]
pub struct Recent {
    records: VecDeque<Appended>,
    bytes: usize,
}

impl Recent {
    /// Keeps a copy of the record `placed` says was just appended, letting the oldest go while
    /// the budget is passed.
    pub fn push(&mut self, mut meta: Meta, placed: Placed, payload: Bytes, gzip: Option<Compressed>) {
        meta.seq = placed.seq;
        let appended = Appended { meta, segment: placed.segment, offset: placed.offset, payload, gzip };
        self.bytes += appended.held();
        self.records.push_back(appended);
        while self.bytes > BUDGET
            && let Some(oldest) = self.records.pop_front()
        {
            self.bytes -= oldest.held();
        }
    }

    /// The record at `offset` in `segment`, if a copy is kept; copies of records before it
    /// (the feeder has read past them) are let go.
    pub fn take(&mut self, segment: u64, offset: u64) -> Option<Appended> {
        while let Some(oldest) = self.records.front() {
            if (oldest.segment, oldest.offset) > (segment, offset) {
                return None;
            }
            let oldest = self.records.pop_front().expect("looked at");
            self.bytes -= oldest.held();
            if (oldest.segment, oldest.offset) == (segment, offset) {
                return Some(oldest);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Signal;
    use crate::disk_queue::record::Form;

    fn meta() -> Meta {
        Meta { seq: 0, written_at_ms: 1, items: 1, signal: Signal::Traces, form: Form::Encoded }
    }

    fn push(recent: &mut Recent, seq: u64, segment: u64, offset: u64, len: usize) {
        recent.push(meta(), Placed { seq, segment, offset }, Bytes::from(vec![0; len]), None);
    }

    #[test]
    fn copies_are_taken_in_file_order_and_those_passed_are_let_go() {
        let mut recent = Recent::default();
        push(&mut recent, 0, 0, 0, 10);
        push(&mut recent, 1, 0, 42, 10);
        push(&mut recent, 2, 2, 0, 10);
        assert!(recent.take(0, 10).is_none(), "no record starts there");
        let record = recent.take(0, 42).expect("kept");
        assert_eq!((record.meta.seq, record.end()), (1, 42 + HEADER_LEN as u64 + 10));
        assert!(recent.take(0, 0).is_none(), "let go when the feeder passed it");
        assert_eq!(recent.take(2, 0).expect("kept").meta.seq, 2);
        assert_eq!(recent.bytes, 0);
    }

    /// A record holding a gzip body ends where that body does, and both count against the
    /// budget.
    #[test]
    fn a_gzip_record_ends_after_its_body() {
        let mut recent = Recent::default();
        let payload = Bytes::from(vec![7; 1000]);
        let (body, member) = crate::gzip::compress_joinable(&payload).expect("in memory");
        let body_len = body.len();
        let gzip = Compressed::new(
            crate::config::CompressionConfig::Gzip,
            body.into(),
            crate::gzip::splice::MemberMap::known(Some(member)),
        );
        let meta = Meta { form: Form::Gzip, ..meta() };
        recent.push(meta, Placed { seq: 0, segment: 0, offset: 0 }, payload, Some(gzip));
        assert_eq!(recent.bytes, 1000 + body_len);
        let record = recent.take(0, 0).expect("kept");
        assert_eq!(record.end(), (HEADER_LEN + body_len) as u64);
        assert_eq!(recent.bytes, 0);
    }

    #[test]
    fn the_budget_lets_the_oldest_go() {
        let mut recent = Recent::default();
        let half = BUDGET / 2;
        for seq in 0..3 {
            push(&mut recent, seq, 0, seq * 1000, half);
        }
        assert!(recent.bytes <= BUDGET);
        assert!(recent.take(0, 0).is_none(), "over the budget: read from the file");
        assert_eq!(recent.take(0, 1000).expect("kept").meta.seq, 1);
    }
}
