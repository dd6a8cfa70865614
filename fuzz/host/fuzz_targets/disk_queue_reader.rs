//! The disk queue's reader never panics and agrees with itself: any bytes left as a segment
//! file open without error, and the feeder hands out exactly the records the recovery scan
//! finds — in order, with their payloads — stepping over damage and a torn tail alike, then
//! closes the exporter's queue once let go of.

#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_spanned::Spanned;
use sluice::config::units::ByteSize;
use sluice::config::{ComponentId, DiskQueueConfig, OnFull, SyncPolicy};
use sluice::disk_queue::{self, record};
use sluice::metrics::Metrics;
use sluice::queue;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime")
});

fuzz_target!(|data: &[u8]| {
    let Some((&first, segment)) = data.split_first() else { return };
    let first_seq = u64::from(first);
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join(format!("{first_seq:020}.seg")), segment).expect("writes");
    let expected = record::scan(segment, first_seq).records;

    RUNTIME.block_on(async {
        let metrics = Metrics::new();
        let (tx, mut rx) = queue::bounded(&metrics, "exporter", "fuzz", expected.len() + 1);
        let config = DiskQueueConfig {
            directory: Spanned::new(0..0, dir.path().to_path_buf()),
            max_size: Spanned::new(0..0, ByteSize::mib(1024)),
            on_full: OnFull::Backpressure,
            sync: SyncPolicy::Always,
        };
        let id = ComponentId::new("fuzz").expect("a name");
        let runtime = tokio::runtime::Handle::current();
        let attachment = disk_queue::attach(&id, &config, metrics.disk_queue("fuzz"), tx, runtime)
            .expect("any segment opens");
        let mut handed = Vec::new();
        for found in &expected {
            let batch = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("every record the scan finds is handed out")
                .expect("the queue stays open");
            let payload = &segment[found.offset + record::HEADER_LEN..found.offset + found.len];
            assert_eq!(batch.items(), found.meta.items);
            assert_eq!(batch.signal(), found.meta.signal);
            assert_eq!(&batch.payload()[..], payload);
            handed.push(batch);
        }
        drop(handed);
        drop(attachment);
        // Let go of, the queue hands out nothing more and closes the exporter's queue (and its
        // reader thread stops).
        let rest = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert!(matches!(rest, Ok(None)), "nothing beyond what the scan finds, then closed");
    });
});
