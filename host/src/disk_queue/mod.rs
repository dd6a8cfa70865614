//! The disk queue: `queue = { type = "disk", directory = "…", max_size = "1GiB" }` on an
//! exporter keeps what it has not delivered yet in files, so a host killed with SIGKILL, by the
//! kernel's OOM killer or with its node loses nothing it acknowledged.
//!
//! # Where the write happens
//! At each disk-queued exporter, during its pipeline's fan-out: the pipeline appends every batch
//! it routes to such an exporter and syncs it to the device, and the receiver answers the client
//! only after every pipeline the request entered has done so for every disk-queued exporter it
//! routes to (the client waits for its plugins and an `fdatasync`). The pipeline takes every
//! batch waiting in its queue (up to [`crate::pipeline::GROUP_COMMIT`]) before it syncs, so
//! under load one `fdatasync` covers many requests (group commit).
//! This is the end-to-end acknowledgement of Vector's disk buffers rather than the OTel
//! Collector's persistent queue, which is written when a batch reaches the exporter — after the
//! client's answer whenever an asynchronous processor sits between. Writing after the plugins
//! means a restart replays exactly what each destination was owed, with the rules already
//! applied, and nothing a filter dropped takes disk space. `sync = "periodic"` answers once the
//! kernel has the write (which a killed process doesn't lose) and syncs once a second.
//!
//! # What a record holds
//! What one pipeline group routed to the exporter, of one signal, merged up to the exporter's
//! own request sizes (`batch.max_items`, `batch.max_bytes`) where it merges requests at all: a
//! record is one write, one checksum and (for gzip) one compression for several requests. Each
//! is the batch as its exporter will send it: for one that sends gzip protobuf, a gzip body — the
//! client's own while it still holds exactly the batch, else the batch compressed at append with
//! its map for joining known ([`crate::gzip::compress_joinable`]) — so the write and the sync move
//! a few times fewer bytes and the exporter compresses nothing again. Other exporters' records hold
//! the encoded request ([`record::Form`]).
//!
//! # Reading back
//! A feeder thread per queue reads records in order and hands each to the exporter's own bounded
//! memory queue as a batch carrying a [`Claim`]. It is woken once per pipeline group, after the
//! group's sync, and reads what the group appended. The exporter holds the batch until its outcome
//! is known (delivered, rejected, or given up on after its retries), and dropping it settles the
//! record. What this run appended it takes from copies kept in memory (`recent`, sharing the
//! batches' buffers, within a budget) rather than reading back the bytes it just wrote. The
//! cursor file remembers the first unsettled record; whole segments before it are deleted. After a restart every record from the cursor on is delivered again: duplicates come
//! only from records the exporter held (in its queue or in flight) when the host died — at most
//! its `queue_size` records plus its requests in flight — and every replayed item is counted.
//!
//! # Layout
//! - `record`: one record's bytes, checksums, and finding good records after damage.
//! - `log`: segment files — append and sync, recover after a crash, delete what is settled.
//! - `acks`: which records are settled, and the cursor file.
//! - `recent`: copies of records appended and not yet read, so the feeder needn't read them.
//! - `feeder`: reads records back and hands them to the exporter.

mod acks;
mod feeder;
mod log;
mod recent;
pub mod record;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};

use crate::batch::Batch;
use crate::config::{ComponentId, DiskQueueConfig, OnFull, SyncPolicy};
use crate::log_throttle::LogThrottle;
use crate::metrics::DiskQueueMetrics;
use crate::queue;
use record::{Form, HEADER_LEN, Meta};

/// Set when the host stops before its exporters finished (the shutdown grace ran out): from
/// then on nothing settles, so what was cut off is delivered after the next start.
static FROZEN: AtomicBool = AtomicBool::new(false);

/// Every disk queue this process has open, by directory: a queue outlives a reload that
/// rebuilds its exporter, and two exporters never open one directory twice.
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<DiskQueue>>>> = LazyLock::new(Mutex::default);

/// Stops every disk queue from recording settlements; called when the shutdown grace period
/// runs out, before the tasks still delivering are dropped.
pub fn freeze() {
    FROZEN.store(true, Ordering::SeqCst);
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Segment size for a queue of `max_size` bytes: an eighth of it, so space comes back in
/// steps of an eighth, within 64 KiB..64 MiB.
fn segment_limit(max_size: u64) -> u64 {
    (max_size / 8).clamp(64 << 10, 64 << 20)
}

/// What became of a batch handed to [`DiskQueue::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Written and synced.
    Stored,
    /// The queue was full and `on_full = "drop"`: counted, not written.
    Dropped,
}

/// The settings a reload may change without reopening.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_size: u64,
    on_full: OnFull,
    sync: SyncPolicy,
    /// The exporter sends gzip protobuf: records hold what it sends ([`record::Form::Gzip`]).
    gzip: bool,
}

/// How often `sync = "periodic"` forces writes to the device.
const PERIODIC_SYNC: Duration = Duration::from_secs(1);

/// Who holds the queue, and whether the feeder runs.
#[derive(Debug, Default)]
struct Feeding {
    attachments: usize,
    next_id: u64,
    running: bool,
    /// Nobody holds the queue any more: the feeder hands out what is left to the last
    /// consumer (a shutdown drains as a memory queue does, within the grace period) and stops.
    closing: bool,
}

/// One directory's queue.
#[derive(Debug)]
pub struct DiskQueue {
    name: ComponentId,
    directory: PathBuf,
    limits: Mutex<Limits>,
    log: Mutex<log::Log>,
    /// Signalled when settled segments are deleted (room for a waiting append).
    space: Condvar,
    /// Signalled when a record is appended (something for the feeder).
    grown: Notify,
    acks: Mutex<acks::Acks>,
    /// Copies of what this run appended and the feeder has not read yet.
    recent: Mutex<recent::Recent>,
    /// The cursor, readable without the lock.
    cursor: AtomicU64,
    /// Records below this seq were written by an earlier run: handing them out is a replay.
    replay_before: u64,
    /// Where the feeder is; held by the running feeder for its whole life.
    position: Mutex<feeder::Position>,
    consumer: watch::Sender<Option<(u64, queue::Sender)>>,
    feeding: Mutex<Feeding>,
    metrics: DiskQueueMetrics,
    errors: LogThrottle,
    /// Held while open: another process can't use the directory meanwhile.
    _lock: File,
}

/// An exporter's hold on its queue: appends go through it, and while one exists the feeder
/// hands records to the newest holder's memory queue.
#[derive(Debug)]
pub struct Attachment {
    queue: Arc<DiskQueue>,
    id: u64,
}

/// A record handed to an exporter inside its batch; dropping the batch settles the record.
#[derive(Debug)]
pub struct Claim {
    queue: Arc<DiskQueue>,
    seq: u64,
    items: u64,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // A panic unwinding through an exporter, or a shutdown cut short, did not deliver it.
        if std::thread::panicking() || FROZEN.load(Ordering::SeqCst) {
            return;
        }
        self.queue.settle(self.seq, self.items);
    }
}

/// Opens (or finds open) the queue `config` names for exporter `name`, and attaches `consumer`
/// (the exporter's memory queue) to it. `gzip`: the exporter sends gzip protobuf, so records
/// are stored gzipped, as it sends them. Reads the whole directory when it opens: call it off
/// the runtime's workers.
pub fn attach(
    name: &ComponentId,
    (config, gzip): (&DiskQueueConfig, bool),
    metrics: DiskQueueMetrics,
    consumer: queue::Sender,
    runtime: tokio::runtime::Handle,
) -> Result<Attachment, String> {
    let directory = config.directory.get_ref();
    std::fs::create_dir_all(directory).map_err(|e| format!("cannot create {}: {e}", directory.display()))?;
    let key = directory.canonicalize().map_err(|e| format!("cannot resolve {}: {e}", directory.display()))?;
    let max_size = config.max_size.get_ref().0;
    let limits = Limits { max_size, on_full: config.on_full, sync: config.sync, gzip };
    let mut open = lock(&OPEN);
    open.retain(|_, queue| queue.strong_count() > 0);
    let queue = match open.get(&key).and_then(Weak::upgrade) {
        Some(queue) => {
            *lock(&queue.limits) = limits;
            queue.metrics.capacity.set(i64::try_from(limits.max_size).unwrap_or(i64::MAX));
            queue
        }
        None => {
            let queue = Arc::new(DiskQueue::open(name, &key, limits, metrics)?);
            open.insert(key, Arc::downgrade(&queue));
            queue
        }
    };
    drop(open);
    Ok(queue.attach(consumer, runtime))
}

impl DiskQueue {
    fn open(
        name: &ComponentId,
        directory: &Path,
        limits: Limits,
        metrics: DiskQueueMetrics,
    ) -> Result<Self, String> {
        let at = |what: &str, e: std::io::Error| format!("{what} {}: {e}", directory.display());
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(directory.join("lock"))
            .map_err(|e| at("cannot open the lock file in", e))?;
        lock_file.try_lock().map_err(|_| {
            format!(
                "{} is in use by another process (each disk queue needs a directory of its own)",
                directory.display()
            )
        })?;
        let cursor_path = directory.join("acked");
        let stored = acks::read(&cursor_path).map_err(|e| at("cannot read the cursor in", e))?;
        let cursor = match stored {
            acks::Stored::Cursor(cursor) => cursor,
            acks::Stored::Missing => 0,
            acks::Stored::Damaged => {
                tracing::warn!(
                    exporter = %name, directory = %directory.display(),
                    "The disk queue's cursor file is damaged; delivering everything in the queue again"
                );
                0
            }
        };
        let (log, recovered) = log::Log::open(directory, cursor, segment_limit(limits.max_size))
            .map_err(|e| at("cannot read", e))?;
        // Never start before the oldest record there is: the seqs in between are long settled.
        let cursor = cursor.max(log.segments().front().map_or(cursor, |s| s.first_seq)).min(log.next_seq());
        let acks = acks::Acks::new(&cursor_path, cursor).map_err(|e| at("cannot write the cursor in", e))?;
        metrics.capacity.set(i64::try_from(limits.max_size).unwrap_or(i64::MAX));
        metrics.bytes.set(i64::try_from(log.total_bytes()).unwrap_or(i64::MAX));
        metrics.items.set(i64::try_from(recovered.items).unwrap_or(i64::MAX));
        if recovered.torn_bytes > 0 {
            metrics.corrupt.inc();
            tracing::warn!(
                exporter = %name, directory = %directory.display(), bytes = recovered.torn_bytes,
                "The disk queue ended in a torn write (the host stopped mid-write); cut it off"
            );
        }
        if recovered.records > 0 {
            tracing::info!(
                exporter = %name, directory = %directory.display(), items = recovered.items,
                records = recovered.records, bytes = log.total_bytes(),
                "The disk queue holds undelivered items from an earlier run; delivering them"
            );
        }
        let first_segment =
            log.segments().iter().rev().find(|s| s.first_seq <= cursor).map_or(cursor, |s| s.first_seq);
        let replay_before = log.next_seq();
        Ok(Self {
            name: name.clone(),
            directory: directory.to_path_buf(),
            limits: Mutex::new(limits),
            log: Mutex::new(log),
            space: Condvar::new(),
            grown: Notify::new(),
            acks: Mutex::new(acks),
            recent: Mutex::default(),
            cursor: AtomicU64::new(cursor),
            replay_before,
            position: Mutex::new(feeder::Position::new(cursor, first_segment)),
            consumer: watch::Sender::new(None),
            feeding: Mutex::default(),
            metrics,
            errors: LogThrottle::default(),
            _lock: lock_file,
        })
    }
}

impl DiskQueue {
    fn attach(self: &Arc<Self>, consumer: queue::Sender, runtime: tokio::runtime::Handle) -> Attachment {
        let mut feeding = lock(&self.feeding);
        feeding.next_id += 1;
        let id = feeding.next_id;
        self.consumer.send_replace(Some((id, consumer)));
        feeding.attachments += 1;
        feeding.closing = false;
        if !feeding.running {
            feeding.running = true;
            let queue = self.clone();
            let spawned = std::thread::Builder::new()
                .name("sluice-disk-queue".into())
                .spawn(move || feeder::run(&queue, &runtime));
            if let Err(error) = spawned {
                feeding.running = false;
                tracing::error!(exporter = %self.name, %error, "Cannot start the disk queue's reader");
            }
        }
        Attachment { queue: self.clone(), id }
    }

    fn detach(&self, id: u64) {
        let mut feeding = lock(&self.feeding);
        feeding.attachments -= 1;
        if feeding.attachments == 0 {
            feeding.closing = true;
            self.grown.notify_waiters();
            return;
        }
        // A newer holder remains: an older one letting go changes nothing, and a newer one
        // letting go leaves the queue to wait for the next.
        self.consumer.send_if_modified(|current| {
            let ours = current.as_ref().is_some_and(|(holder, _)| *holder == id);
            if ours {
                *current = None;
            }
            ours
        });
    }

    /// When the last holder has let go (a new one attaching clears it): the number of the last
    /// attachment then, which tells [`DiskQueue::stop_if_closing`] whether anyone came since.
    fn closing(&self) -> Option<u64> {
        let feeding = lock(&self.feeding);
        feeding.closing.then_some(feeding.next_id)
    }

    /// Called by the feeder when it has handed out everything written after it saw the queue
    /// closing at attachment `seen`: if still nobody holds it and nobody attached in between
    /// (who may have appended and let go since the feeder looked), lets go of the last consumer
    /// (its exporter then finishes) and says stop.
    fn stop_if_closing(&self, seen: u64) -> bool {
        let mut feeding = lock(&self.feeding);
        let stop = feeding.closing && feeding.next_id == seen;
        if stop {
            feeding.running = false;
            self.consumer.send_replace(None);
        }
        stop
    }

    /// Writes `batch`; it is on the device, and handed to the exporter, after the next
    /// [`Attachment::sync`]. When the queue is full, waits for room (`on_full = "backpressure"`)
    /// or drops it, counted (`"drop"`). Blocks: call it from a thread that may.
    pub fn append(&self, batch: &Batch) -> Result<Appended, String> {
        let payload = batch.payload();
        // What the exporter sends ([`Batch::gzip`]: made once for every queue that stores it).
        let gzip = lock(&self.limits).gzip.then(|| batch.gzip().cloned()).flatten();
        let stored = gzip.as_ref().map_or(&payload[..], |gzip| gzip.body());
        let length = (HEADER_LEN + stored.len()) as u64;
        let mut log = lock(&self.log);
        loop {
            let Limits { max_size, on_full, .. } = *lock(&self.limits);
            if length > max_size {
                return Err(format!(
                    "a batch of {length} bytes can never fit a disk queue of max_size {max_size}"
                ));
            }
            if log.total_bytes() + length <= max_size {
                break;
            }
            let cursor = self.cursor.load(Ordering::SeqCst);
            if cursor >= log.next_seq() && log.segments().back().is_some_and(|s| s.bytes > 0) {
                // Everything is settled but the segment being written still counts: start
                // another so this one can go.
                log.roll()
                    .and_then(|()| log.release_before(cursor))
                    .map_err(|e| self.io_error("rolling", &e))?;
                continue;
            }
            if on_full == OnFull::Drop {
                self.metrics.dropped.get(batch.signal()).inc_by(batch.items());
                return Ok(Appended::Dropped);
            }
            log = self.space.wait_timeout(log, Duration::from_secs(1)).unwrap_or_else(|p| p.into_inner()).0;
        }
        let form = if gzip.is_some() { Form::Gzip } else { Form::Encoded };
        let meta =
            Meta { seq: 0, written_at_ms: now_ms(), items: batch.items(), signal: batch.signal(), form };
        let placed = log.append(meta, stored).map_err(|e| self.io_error("writing", &e))?;
        lock(&self.recent).push(meta, placed, payload.clone(), gzip);
        self.metrics.bytes.set(i64::try_from(log.total_bytes()).unwrap_or(i64::MAX));
        drop(log);
        self.metrics.items.inc_by(i64::try_from(batch.items()).unwrap_or(i64::MAX));
        self.metrics.records.inc();
        Ok(Appended::Stored)
    }

    /// Puts everything appended so far on the device — one `fdatasync` for however many
    /// batches were appended since the last — or, with `sync = "periodic"`, only once a second.
    pub fn sync(&self) -> Result<(), String> {
        let periodic = lock(&self.limits).sync == SyncPolicy::Periodic;
        let mut log = lock(&self.log);
        if periodic && log.last_sync().elapsed() < PERIODIC_SYNC {
            return Ok(());
        }
        log.sync().map_err(|e| self.io_error("syncing", &e))
    }

    fn io_error(&self, doing: &str, error: &std::io::Error) -> String {
        format!("disk queue {}: {doing}: {error}", self.directory.display())
    }

    /// Record `seq` of `items` items is settled: the cursor moves if it can, and segments
    /// wholly before it are deleted.
    fn settle(&self, seq: u64, items: u64) {
        self.metrics.items.dec_by(i64::try_from(items).unwrap_or(i64::MAX));
        let moved = lock(&self.acks).settle(seq);
        let cursor = match moved {
            Ok(Some(cursor)) => cursor,
            Ok(None) => return,
            Err(error) => return self.log_error(&self.io_error("recording what was delivered", &error)),
        };
        self.cursor.store(cursor, Ordering::SeqCst);
        let mut log = lock(&self.log);
        match log.release_before(cursor) {
            Ok(0) => {}
            Ok(_) => {
                self.metrics.bytes.set(i64::try_from(log.total_bytes()).unwrap_or(i64::MAX));
                self.space.notify_all();
            }
            Err(error) => self.log_error(&self.io_error("deleting delivered segments", &error)),
        }
    }

    fn log_error(&self, message: &str) {
        if let Some(suppressed) = self.errors.check() {
            tracing::error!(exporter = %self.name, similar_errors_not_logged = suppressed, "{message}");
        }
    }

    /// Sets the oldest-item gauge: the oldest record the exporter holds, else `waiting` (the
    /// record the feeder holds), else nothing is queued.
    fn update_age(&self, waiting: Option<u64>) {
        let oldest = lock(&self.acks).oldest_in_flight().or(waiting);
        let age = oldest.map_or(0.0, |written| now_ms().saturating_sub(written) as f64 / 1000.0);
        self.metrics.oldest_age.set(age);
    }
}

impl Attachment {
    /// Writes `batch` to the queue (see [`DiskQueue::append`]).
    pub fn append(&self, batch: &Batch) -> Result<Appended, String> {
        self.queue.append(batch)
    }

    /// Puts what was appended on the device (see [`DiskQueue::sync`]) and wakes the reader to
    /// hand it to the exporter, once for the whole group: woken per record, the reader preempted
    /// the pipeline thread in the middle of its group (on one core, `pipelines/forward.toml` went
    /// from 432 K to 503 K spans per CPU-second at 16 connections when it stopped). Records that
    /// could not be synced are handed out all the same: they are in the page cache, and their
    /// clients were told to retry.
    pub fn sync(&self) -> Result<(), String> {
        let synced = self.queue.sync();
        self.queue.grown.notify_waiters();
        synced
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.queue.detach(self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use bytes::Bytes;
    use serde_spanned::Spanned;

    use super::*;
    use crate::batch::Compressed;
    use crate::config::{CompressionConfig, Signal, units::ByteSize};
    use crate::gzip::splice::MemberMap;
    use crate::metrics::Metrics;

    fn config(directory: &Path, on_full: OnFull) -> DiskQueueConfig {
        DiskQueueConfig {
            directory: Spanned::new(0..0, directory.to_path_buf()),
            max_size: Spanned::new(0..0, ByteSize::mib(1)),
            on_full,
            sync: SyncPolicy::Always,
        }
    }

    fn batch(items: u64, size: usize) -> Batch {
        Batch::from_encoded(Signal::Traces, Bytes::from(vec![items as u8; size]), items)
    }

    /// A queue on `directory` feeding a memory queue of 16, with its metrics.
    fn open(
        directory: &Path,
        on_full: OnFull,
        metrics: &Metrics,
        name: &str,
    ) -> (Attachment, queue::Receiver, DiskQueueMetrics) {
        open_for(directory, (on_full, false), metrics, name)
    }

    /// [`open`], for an exporter that sends gzip (`gzip`) or not.
    fn open_for(
        directory: &Path,
        (on_full, gzip): (OnFull, bool),
        metrics: &Metrics,
        name: &str,
    ) -> (Attachment, queue::Receiver, DiskQueueMetrics) {
        let (tx, rx) = queue::bounded(metrics, "exporter", name, 16);
        let handles = metrics.disk_queue(name);
        let id = ComponentId::new(name).expect("id");
        let config = (&config(directory, on_full), gzip);
        let attachment =
            attach(&id, config, handles.clone(), tx, tokio::runtime::Handle::current()).expect("opens");
        (attachment, rx, handles)
    }

    /// What a `kill -9` leaves: the files as they are this moment (the page cache included).
    fn snapshot(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("creates");
        for entry in std::fs::read_dir(from).expect("lists") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copies");
        }
    }

    async fn next(rx: &mut queue::Receiver) -> Arc<Batch> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("in time").expect("open")
    }

    /// While the exporter keeps up, records come from their copies in memory; those let go past
    /// the copies' budget (the exporter fell behind) come from the file, in the same order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_come_in_order_from_their_copies_or_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new();
        let (tx, mut rx) = queue::bounded(&metrics, "exporter", "copies", 16);
        let mut config = config(dir.path(), OnFull::Backpressure);
        config.max_size = Spanned::new(0..0, ByteSize::mib(64));
        let id = ComponentId::new("copies").expect("id");
        let handles = metrics.disk_queue("copies");
        let attachment =
            attach(&id, (&config, false), handles.clone(), tx, tokio::runtime::Handle::current())
                .expect("opens");
        let size = recent::BUDGET / 4;
        // Sixteen fill the memory queue and the feeder holds one: of the rest, more than the
        // budget, the oldest are let go.
        let records = 17 + 12;
        for items in 1..=records {
            attachment.append(&batch(items, size)).expect("stored");
        }
        attachment.sync().expect("syncs");
        for items in 1..=records {
            let batch = next(&mut rx).await;
            assert_eq!(batch.items(), items);
            assert!(batch.payload().iter().all(|&b| b == items as u8), "record {items}'s own bytes");
        }
        // Whole records only were read back: at least the eight let go while the feeder waited
        // (18..=25), and never the last four, whose copies nothing pushed out.
        let (read_back, record) = (handles.read_back.get(), (HEADER_LEN + size) as u64);
        assert_eq!(read_back % record, 0, "{read_back} bytes are whole records of {record}");
        assert!(
            (8..=records - 4).contains(&(read_back / record)),
            "{} records read back",
            read_back / record
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_was_not_settled_is_delivered_after_a_kill() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new();
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        let (attachment, mut rx, _) = open(&first, OnFull::Backpressure, &metrics, "first");
        for items in 1..=5 {
            assert_eq!(attachment.append(&batch(items, 100)).expect("stored"), Appended::Stored);
        }
        let mut handed = Vec::new();
        for _ in 0..5 {
            handed.push(next(&mut rx).await);
        }
        let items: Vec<u64> = handed.iter().map(|b| b.items()).collect();
        assert_eq!(items, [1, 2, 3, 4, 5], "in order");
        // Delivered: the first two and the fourth. The cursor stops at the third.
        let mut handed = handed.into_iter();
        let (one, two, three, four, five) = (
            handed.next().expect("1"),
            handed.next().expect("2"),
            handed.next().expect("3"),
            handed.next().expect("4"),
            handed.next().expect("5"),
        );
        drop((one, two, four));
        snapshot(&first, &second);
        let mut segment = std::fs::OpenOptions::new()
            .append(true)
            .open(log::segment_path(&second, 0))
            .expect("the segment");
        std::io::Write::write_all(&mut segment, b"SLQ1 torn").expect("a write cut short");

        let (restarted, mut rx, handles) = open(&second, OnFull::Backpressure, &metrics, "second");
        assert_eq!(handles.items.get(), 12, "the third, fourth and fifth are queued");
        let replayed: Vec<u64> = [next(&mut rx).await, next(&mut rx).await, next(&mut rx).await]
            .iter()
            .map(|b| b.items())
            .collect();
        assert_eq!(replayed, [3, 4, 5], "from the cursor on; the fourth again (a counted duplicate)");
        assert_eq!(handles.replayed.get(), 12);
        assert_eq!(handles.corrupt.get(), 1, "the torn write is counted");
        assert_eq!(handles.items.get(), 0, "settled once delivered");
        restarted.append(&batch(6, 100)).expect("appends after the cut");
        assert_eq!(next(&mut rx).await.items(), 6, "new records follow the replayed ones");
        drop((three, five, attachment));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn damage_is_stepped_over_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new();
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        let (attachment, _rx, _) = open(&first, OnFull::Backpressure, &metrics, "first");
        for items in 1..=3 {
            attachment.append(&batch(items, 100)).expect("stored");
        }
        snapshot(&first, &second);
        let path = log::segment_path(&second, 0);
        let mut bytes = std::fs::read(&path).expect("reads");
        bytes[HEADER_LEN + 100 + HEADER_LEN + 50] ^= 0xff;
        std::fs::write(&path, bytes).expect("writes");

        let (_restarted, mut rx, handles) = open(&second, OnFull::Backpressure, &metrics, "second");
        let (one, three) = (next(&mut rx).await, next(&mut rx).await);
        assert_eq!((one.items(), three.items()), (1, 3), "the damaged second record is skipped");
        assert_eq!(handles.corrupt.get(), 1);
        drop((one, three));
        let settled = acks::read(&second.join("acked")).expect("reads");
        assert_eq!(settled, acks::Stored::Cursor(3), "the lost record does not hold the cursor back");
    }

    /// After a restart, every record comes back byte for byte, small and large alike.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backlog_reads_back_byte_for_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new();
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        let payload = |n: usize| -> Bytes {
            let len = if n == 7 { 150_000 } else { 30_000 + n * 977 };
            (0..len).map(|i| (i * 31 + n) as u8).collect::<Vec<u8>>().into()
        };
        let (attachment, _rx, _) = open(&first, OnFull::Backpressure, &metrics, "first");
        for n in 0..20 {
            let batch = Batch::from_encoded(Signal::Traces, payload(n), n as u64 + 1);
            attachment.append(&batch).expect("stored");
        }
        snapshot(&first, &second);
        let (_restarted, mut rx, handles) = open(&second, OnFull::Backpressure, &metrics, "second");
        for n in 0..20 {
            let batch = next(&mut rx).await;
            assert_eq!(batch.items(), n as u64 + 1);
            assert!(batch.payload() == &payload(n), "record {n} differs");
        }
        assert_eq!(handles.corrupt.get(), 0);
    }

    /// For an exporter that sends gzip, records hold gzip bodies: a fraction of the bytes on
    /// disk, and each batch comes with the body the exporter sends (a client's own, when it still
    /// holds the batch), from its copy and, after a restart, from the file — whatever the
    /// exporter reading it back sends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gzip_records_come_back_with_their_bodies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new();
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        let payload = |n: usize| -> Bytes {
            (0..20_000 + n * 977).map(|i| b'a' + (i % (n + 7)) as u8).collect::<Vec<u8>>().into()
        };
        let client_body = Bytes::from(crate::gzip::compress(&payload(3)).expect("in memory"));
        let batches: Vec<Batch> = (0..8)
            .map(|n| {
                let batch = Batch::from_encoded(Signal::Logs, payload(n), n as u64 + 1);
                if n != 3 {
                    return batch;
                }
                let body =
                    Compressed::new(CompressionConfig::Gzip, client_body.clone(), MemberMap::deferred());
                batch.with_compressed(body)
            })
            .collect();
        let (attachment, mut rx, _) = open_for(&first, (OnFull::Backpressure, true), &metrics, "first");
        for batch in &batches {
            attachment.append(batch).expect("stored");
        }
        attachment.sync().expect("syncs");
        let check = |n: usize, batch: &Batch| {
            assert_eq!((batch.items(), batch.payload()), (n as u64 + 1, &payload(n)), "record {n}");
            let gzip = batch.compressed_as(CompressionConfig::Gzip).expect("its gzip body");
            let body = gzip.body();
            assert_eq!(crate::gzip::gunzip_limited(body, usize::MAX - 1).expect("gzip"), payload(n));
            assert!(gzip.gzip_member().is_some(), "record {n}'s body joins");
            assert_eq!(n == 3, body == &client_body, "record {n}: the client's body is kept as it came");
        };
        let mut handed = Vec::new();
        for n in 0..8 {
            let batch = next(&mut rx).await;
            check(n, &batch);
            handed.push(batch);
        }
        let on_disk = std::fs::metadata(log::segment_path(&first, 0)).expect("the segment").len();
        let encoded: usize = (0..8).map(|n| payload(n).len()).sum();
        assert!(on_disk * 3 < encoded as u64, "{on_disk} bytes on disk for {encoded} encoded");
        snapshot(&first, &second);
        let (_restarted, mut rx, handles) = open(&second, OnFull::Backpressure, &metrics, "second");
        for n in 0..8 {
            check(n, &*next(&mut rx).await);
        }
        assert_eq!(handles.corrupt.get(), 0);
        assert!(handles.read_back.get() >= on_disk, "read from the file after the restart");
        drop(handed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_drops_or_waits_as_configured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new();
        let big = 200 << 10;
        let (dropping, _rx, handles) = open(&dir.path().join("drop"), OnFull::Drop, &metrics, "drop");
        let outcomes: Vec<Appended> =
            (0..6).map(|_| dropping.append(&batch(2, big)).expect("no error")).collect();
        assert_eq!(outcomes.iter().filter(|o| **o == Appended::Dropped).count(), 1, "five fit in 1 MiB");
        assert_eq!(handles.dropped.get(Signal::Traces).get(), 2);

        let (waiting, mut rx, _) = open(&dir.path().join("wait"), OnFull::Backpressure, &metrics, "wait");
        for _ in 0..5 {
            waiting.append(&batch(2, big)).expect("fits");
        }
        let waiting = Arc::new(waiting);
        let appending = {
            let waiting = waiting.clone();
            std::thread::spawn(move || waiting.append(&batch(2, big)))
        };
        std::thread::sleep(Duration::from_millis(200));
        assert!(!appending.is_finished(), "waits for room");
        drop(next(&mut rx).await);
        drop(next(&mut rx).await);
        assert_eq!(appending.join().expect("joins"), Ok(Appended::Stored), "room once delivered segments go");
    }

    /// At shutdown the pipelines let go first: the exporter still gets everything written, then
    /// its queue closes so it can finish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn letting_go_drains_then_closes_the_exporters_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new();
        let (attachment, mut rx, _) = open(dir.path(), OnFull::Backpressure, &metrics, "drain");
        for items in 1..=3 {
            attachment.append(&batch(items, 10)).expect("stored");
        }
        drop(attachment);
        let mut items = Vec::new();
        while let Some(batch) =
            tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("in time")
        {
            items.push(batch.items());
        }
        assert_eq!(items, [1, 2, 3]);
    }

    /// The feeder saw the queue closing and found nothing to read; before it stops, a holder
    /// attaches, appends and lets go. What the feeder saw must not stop it: that record would
    /// wait on disk until the next start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_holder_that_came_and_went_after_the_feeders_look_keeps_it_feeding() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new();
        let (first, _rx, _) = open(dir.path(), OnFull::Backpressure, &metrics, "came-and-went");
        let queue = first.queue.clone();
        drop(first);
        let seen = queue.closing().expect("nobody holds it");
        let (second, _rx2, _) = open(dir.path(), OnFull::Backpressure, &metrics, "came-and-went");
        second.append(&batch(1, 10)).expect("stored");
        drop(second);
        assert!(queue.closing().is_some(), "closing again");
        assert!(!queue.stop_if_closing(seen), "an attachment came between the look and the stop");
    }

    /// The oldest-item gauge follows the oldest record not settled, whether the exporter holds
    /// it or it waits on disk, and falls to 0 once everything is settled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_oldest_age_is_the_oldest_unsettled_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new();
        let (attachment, mut rx, handles) = open(dir.path(), OnFull::Backpressure, &metrics, "age");
        attachment.append(&batch(1, 10)).expect("stored");
        let held = next(&mut rx).await;
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let age = handles.oldest_age.get();
        assert!((1.0..10.0).contains(&age), "held for 2 s, the gauge says {age}");
        drop(held);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(handles.oldest_age.get(), 0.0, "nothing left unsettled");
        assert_eq!(handles.items.get(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_directory_one_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new();
        let (_first, _rx, _) = open(dir.path(), OnFull::Backpressure, &metrics, "first");
        let (_again, mut rx, _) = open(dir.path(), OnFull::Backpressure, &metrics, "again");
        _first.append(&batch(1, 10)).expect("stored");
        assert_eq!(next(&mut rx).await.items(), 1, "a reload's exporter gets what its queue holds");
    }
}
