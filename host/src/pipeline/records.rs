//! The records a pipeline group writes to its disk-queued exporters.
//!
//! A group is the batches a pipeline takes from its queue before one `fdatasync` (see
//! [`super::GROUP_COMMIT`]). What it routes to one disk-queued exporter, of one signal, is
//! written as a few records up to the exporter's own request sizes, not as a record per batch:
//! a gzip record is then one compression (one Huffman table, and a compressor that does better
//! on a larger input), one write and one checksum for several requests. The exporter merges
//! records into requests of those sizes anyway, so what it sends does not change.
//!
//! A batch that still holds its client's gzip body, for an exporter whose records are gzip, is
//! written alone as that body: nothing is compressed for it at all.

use std::ops::Range;
use std::sync::Arc;

use crate::batch::Batch;
use crate::config::{BatchConfig, CompressionConfig, Signal};
use crate::exporters::ExporterInput;

/// The batches a group routes to each disk-queued exporter, waiting to be written.
#[derive(Debug)]
pub struct GroupRecords {
    /// Each disk-queued exporter and the batches for it.
    exporters: Vec<(ExporterInput, Vec<Part>)>,
}

/// A batch for one exporter, with the position in the group of the request it came from.
type Part = (usize, Arc<Batch>);

/// The batch written for several: made once for every exporter that is routed exactly those
/// batches, so its compression is shared too (a `hybrid.toml` tenant's traces go to two disk
/// queues). Keyed by the parts' addresses, which the group keeps alive.
type Shared = Vec<(Vec<*const Batch>, Arc<Batch>)>;

impl GroupRecords {
    /// Records for `durable`, a pipeline's disk-queued exporters.
    pub fn new(durable: &[ExporterInput]) -> Self {
        Self { exporters: durable.iter().map(|exporter| (exporter.clone(), Vec::new())).collect() }
    }

    /// Takes `batch` for `exporter` (one of those it was made for), from the group's
    /// `request`-th request.
    pub fn add(&mut self, exporter: &ExporterInput, request: usize, batch: Arc<Batch>) {
        if let Some((_, batches)) = self.exporters.iter_mut().find(|(e, _)| e.name() == exporter.name()) {
            batches.push((request, batch));
        }
    }

    /// Writes what each exporter was given, in order, as few records as its limits allow, and
    /// forgets it. `unstored` hears of every request a record holding part of it was not stored
    /// for, with the reason.
    pub fn write(&mut self, mut unstored: impl FnMut(usize, String)) {
        let mut shared = Shared::new();
        for (exporter, batches) in &mut self.exporters {
            let gzip_records = exporter.sends_client_bodies() == Some(CompressionConfig::Gzip);
            for signal in Signal::ALL {
                let of_signal: Vec<&Part> =
                    batches.iter().filter(|(_, batch)| batch.signal() == signal).collect();
                let sizes = of_signal.iter().map(|(_, batch)| Size {
                    items: batch.items(),
                    bytes: batch.payload().len(),
                    alone: gzip_records && batch.compressed_as(CompressionConfig::Gzip).is_some(),
                });
                for run in runs(sizes, exporter.record_limits()) {
                    let parts = &of_signal[run];
                    let record = match parts {
                        [(_, batch)] => batch.clone(),
                        _ => merged(&mut shared, signal, parts),
                    };
                    if let Err(reason) = exporter.send_blocking(record) {
                        parts.iter().for_each(|(request, _)| unstored(*request, reason.clone()));
                    }
                }
            }
            batches.clear();
        }
    }
}

/// The one batch holding `parts`, made now or earlier in this group for another exporter.
fn merged(shared: &mut Shared, signal: Signal, parts: &[&Part]) -> Arc<Batch> {
    let key: Vec<*const Batch> = parts.iter().map(|(_, batch)| Arc::as_ptr(batch)).collect();
    if let Some((_, batch)) = shared.iter().find(|(made_of, _)| *made_of == key) {
        return batch.clone();
    }
    let batches: Vec<&Batch> = parts.iter().map(|(_, batch)| &**batch).collect();
    let batch = Arc::new(Batch::concatenated(signal, &batches));
    shared.push((key, batch.clone()));
    batch
}

/// What [`runs`] needs of a batch.
#[derive(Debug, Clone, Copy)]
struct Size {
    items: u64,
    bytes: usize,
    /// Written as a record of its own whatever the limits.
    alone: bool,
}

/// Splits batches of `sizes`, in order, into consecutive runs, each written as one record: as
/// long as `limits` allow (a batch larger than them on its own is a run of one), never across a
/// batch that goes alone. Without limits every batch is a run.
fn runs(sizes: impl Iterator<Item = Size>, limits: Option<&BatchConfig>) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    let (mut items, mut bytes) = (0, 0);
    // Whether the last run may take the next batch, room permitting.
    let mut open = false;
    for (at, size) in sizes.enumerate() {
        let joins = open
            && !size.alone
            && limits.is_some_and(|limits| limits.holds(items + size.items, bytes + size.bytes));
        if let (true, Some(run)) = (joins, runs.last_mut()) {
            run.end = at + 1;
            items += size.items;
            bytes += size.bytes;
        } else {
            runs.push(at..at + 1);
            (items, bytes) = (size.items, size.bytes);
            open = !size.alone && limits.is_some();
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(items: u64, bytes: usize) -> Size {
        Size { items, bytes, alone: false }
    }

    fn limits() -> BatchConfig {
        BatchConfig {
            max_items: 250,
            max_bytes: crate::config::units::ByteSize(10_000),
            ..BatchConfig::default()
        }
    }

    #[test]
    fn batches_run_together_up_to_the_exporters_request_sizes() {
        let sizes = [sized(100, 1_000), sized(100, 1_000), sized(100, 1_000), sized(50, 500)];
        assert_eq!(runs(sizes.into_iter(), Some(&limits())), [0..2, 2..4]);
        let bytes = [sized(1, 6_000), sized(1, 4_000), sized(1, 1)];
        assert_eq!(runs(bytes.into_iter(), Some(&limits())), [0..2, 2..3]);
    }

    #[test]
    fn a_batch_over_the_limits_is_a_record_of_its_own() {
        let sizes = [sized(10, 10), sized(300, 10), sized(10, 10), sized(10, 10)];
        assert_eq!(runs(sizes.into_iter(), Some(&limits())), [0..1, 1..2, 2..4]);
    }

    #[test]
    fn a_batch_that_goes_alone_splits_the_runs_around_it() {
        let alone = Size { alone: true, ..sized(1, 1) };
        let sizes = [sized(1, 1), sized(1, 1), alone, alone, sized(1, 1), sized(1, 1)];
        assert_eq!(runs(sizes.into_iter(), Some(&limits())), [0..2, 2..3, 3..4, 4..6]);
    }

    #[test]
    fn without_limits_every_batch_is_a_record() {
        let sizes = [sized(1, 1), sized(1, 1), sized(1, 1)];
        assert_eq!(runs(sizes.into_iter(), None), [0..1, 1..2, 2..3]);
        assert!(runs(std::iter::empty(), Some(&limits())).is_empty());
    }
}
