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

/// How many payload bytes the copies may hold together.
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
    /// Its payload.
    pub payload: Bytes,
}

impl Appended {
    /// The offset just past it in its segment.
    pub fn end(&self) -> u64 {
        self.offset + (HEADER_LEN + self.payload.len()) as u64
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
    pub fn push(&mut self, mut meta: Meta, placed: Placed, payload: Bytes) {
        meta.seq = placed.seq;
        self.bytes += payload.len();
        self.records.push_back(Appended { meta, segment: placed.segment, offset: placed.offset, payload });
        while self.bytes > BUDGET
            && let Some(oldest) = self.records.pop_front()
        {
            self.bytes -= oldest.payload.len();
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
            self.bytes -= oldest.payload.len();
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

    fn meta() -> Meta {
        Meta { seq: 0, written_at_ms: 1, items: 1, signal: Signal::Traces }
    }

    fn push(recent: &mut Recent, seq: u64, segment: u64, offset: u64, len: usize) {
        recent.push(meta(), Placed { seq, segment, offset }, Bytes::from(vec![0; len]));
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
