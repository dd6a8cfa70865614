//! Exporters: where batches leave the host. Each exporter owns a bounded queue and a task or thread
//! that drains it, so a slow destination only ever slows itself.
//!
//! Exporters that do blocking work (file and terminal I/O, JSON rendering) run on a
//! long-lived thread of their own rather than hopping between runtime workers: that keeps the
//! runtime free for receivers, and every allocation a batch's decode makes is freed on the thread
//! that made it (per-thread allocator caches otherwise held ~70 MiB under sustained file load).
//!
//! # Layout
//! - [`debug`]: a summary line or a full dump per batch on stdout.
//! - [`file`](mod@file): OTLP JSON Lines files, rotated by size.
//! - [`http`]: what the network exporters share: the client, delivery with retries, verdicts.
//! - [`discard`]: counts and drops.
//! - [`kafka`]: records of a topic per signal, split by partition key without decoding.
//! - [`loadbalancing`]: OTLP to a tier of backends, each item to the one that owns its key.
//! - [`otlp`]: OTLP/gRPC and OTLP/HTTP to any destination, with TLS, credentials and retries.
//! - [`plugin`]: a WebAssembly exporter plugin renders requests; the host sends them.
//! - [`prometheus`]: a Prometheus scrape endpoint.
//! - [`registry`]: how exporter types are known — the [`ExporterType`](registry::ExporterType)
//!   trait and the list below that names them.
//! - [`remote_write`]: Prometheus remote write.

pub mod debug;
pub mod discard;
pub mod file;
pub mod http;
pub mod kafka;
pub mod loadbalancing;
pub mod otlp;
pub mod plugin;
pub mod prometheus;
pub mod registry;
pub mod remote_write;

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use tokio::task::JoinHandle;

use crate::batch::{Batch, DecodeError};
use crate::config::{
    BatchConfig, ComponentId, CompressionConfig, Config, ExporterConfig, OnFull, QueueConfig,
};
use crate::disk_queue;
use crate::log_throttle::LogThrottle;
use crate::metrics::{Metrics, PerSignal};
use crate::queue::{self, NotQueued};

/// Why an exporter could not deliver a batch.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The batch's bytes are not a valid request.
    #[error("cannot decode the batch: {0}")]
    Decode(#[from] DecodeError),
    /// Writing failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A destination for batches. One thread drives each exporter, so methods take `&mut self` and
/// may block.
pub trait Exporter: Send + 'static {
    /// Whether `export` blocks (I/O, heavy CPU). Exporters that never block run as a plain task
    /// instead of a thread, saving a thread hand-off per batch.
    const BLOCKING: bool = true;

    /// Delivers one batch.
    fn export(&mut self, batch: &Batch) -> Result<(), ExportError>;

    /// Delivers `batches`, which were waiting in the queue together, in order, pushing each
    /// one's outcome onto `outcomes` in the same order. One at a time unless an exporter gains
    /// from taking them at once (the file exporter writes them with one system call). Only
    /// [`BLOCKING`](Self::BLOCKING) exporters are handed more than one.
    fn export_all(&mut self, batches: &[Arc<Batch>], outcomes: &mut Vec<Result<(), ExportError>>) {
        outcomes.extend(batches.iter().map(|batch| self.export(batch)));
    }

    /// Makes everything delivered so far durable; called once the queue has drained at shutdown.
    fn flush(&mut self) -> Result<(), ExportError>;
}

/// The sending side of an exporter's queue, held by the pipelines that feed it.
#[derive(Debug, Clone)]
pub struct ExporterInput {
    name: ComponentId,
    entry: Entry,
    /// The compression whose client bodies it sends on as they came (through a disk queue,
    /// gzip only: the queue stores such bodies as its records).
    sends_client_bodies: Option<CompressionConfig>,
}

/// Where a pipeline puts an exporter's batches.
#[derive(Debug, Clone)]
enum Entry {
    /// Its memory queue; with `on_full = "drop"`, what a full queue drops is counted per
    /// signal.
    Memory { queue: queue::Sender, overflow: Option<(PerSignal<Counter>, Arc<LogThrottle>)> },
    /// Its disk queue, which feeds its memory queue, and the sizes it merges requests up to
    /// (`None`: it sends each batch on its own).
    Disk(Arc<disk_queue::Attachment>, Option<BatchConfig>),
}

impl ExporterInput {
    /// The exporter's name.
    pub fn name(&self) -> &ComponentId {
        &self.name
    }

    /// The compression whose client bodies it sends on as they came, if any.
    pub fn sends_client_bodies(&self) -> Option<CompressionConfig> {
        self.sends_client_bodies
    }

    /// Whether batches for it are written to disk (and the client waits for that).
    pub fn durable(&self) -> bool {
        matches!(self.entry, Entry::Disk(..))
    }

    /// The sizes a pipeline group's batches for its disk queue may be merged up to in one record:
    /// those it merges requests up to anyway. `None` for a memory queue, or an exporter that
    /// sends each batch on its own.
    pub fn record_limits(&self) -> Option<&BatchConfig> {
        match &self.entry {
            Entry::Memory { .. } => None,
            Entry::Disk(_, limits) => limits.as_ref(),
        }
    }

    /// With a drop-on-full policy: queues `batch` if there is room, else drops it (counted,
    /// logged once per interval); either way returns `None`. Otherwise gives the batch back to
    /// send.
    fn try_without_waiting(&self, queue: &queue::Sender, batch: Arc<Batch>) -> Option<Arc<Batch>> {
        let Entry::Memory { overflow: Some((dropped, log)), .. } = &self.entry else { return Some(batch) };
        if let Err(NotQueued::Full(batch) | NotQueued::Closed(batch)) = queue.try_send(batch) {
            dropped.get(batch.signal()).inc_by(batch.items());
            if let Some(suppressed) = log.check() {
                tracing::warn!(
                    exporter = %self.name, items = batch.items(), similar_drops_not_logged = suppressed,
                    "Exporter queue full; batch dropped (on_full = \"drop\")"
                );
            }
        }
        None
    }

    /// Queues `batch` on a memory-queued exporter, waiting while the queue is full (or dropping
    /// it, with `on_full = "drop"`). Only pipelines without disk-queued exporters fan out this
    /// way; the others write through [`ExporterInput::send_blocking`] and sync per group.
    pub async fn send(&self, batch: Arc<Batch>) {
        let Entry::Memory { queue, .. } = &self.entry else {
            unreachable!("a pipeline with a disk-queued exporter fans out through send_blocking")
        };
        let Some(batch) = self.try_without_waiting(queue, batch) else { return };
        if queue.send(batch).await.is_err() {
            // The exporter only stops after every input is dropped, so this means it panicked.
            tracing::error!(exporter = %self.name, "Exporter is gone; batch lost");
        }
    }

    /// [`ExporterInput::send`], blocking the calling thread (for pipelines that run plugins or
    /// write to disk on a thread of their own). A disk queue's write is on the device only after
    /// [`ExporterInput::sync`].
    pub fn send_blocking(&self, batch: Arc<Batch>) -> Result<(), String> {
        let queue = match &self.entry {
            Entry::Memory { queue, .. } => queue,
            Entry::Disk(attachment, _) => return attachment.append(&batch).map(drop),
        };
        let Some(batch) = self.try_without_waiting(queue, batch) else { return Ok(()) };
        if queue.blocking_send(batch).is_err() {
            // The exporter only stops after every input is dropped, so this means it panicked.
            tracing::error!(exporter = %self.name, "Exporter thread is gone; batch lost");
        }
        Ok(())
    }
}

impl ExporterInput {
    /// Puts what [`ExporterInput::send_blocking`] wrote to a disk queue on the device; nothing
    /// to do for a memory queue.
    pub fn sync(&self) -> Result<(), String> {
        match &self.entry {
            Entry::Memory { .. } => Ok(()),
            Entry::Disk(attachment, _) => attachment.sync(),
        }
    }
}

/// Why an exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("exporter `{name}`: {source}")]
pub struct BuildError {
    name: ComponentId,
    source: ExportError,
}

registry::exporter_types! {
    /// `type = "debug"`: a line per batch, or a full dump, on stdout.
    Debug = "debug" => debug::config::DebugExporterConfig,
    /// `type = "file"`: OTLP JSON Lines files, one per signal, rotated by size.
    File = "file" => file::config::FileExporterConfig,
    /// `type = "discard"`: counts and drops.
    Discard = "discard" => discard::config::DiscardExporterConfig,
    /// `type = "otlp"`: OTLP over gRPC or HTTP to any OTLP destination.
    Otlp = "otlp" => otlp::config::OtlpExporterConfig,
    /// `type = "loadbalancing"`: OTLP to a tier of backends, each item to the owner of its key.
    LoadBalancing = "loadbalancing" => loadbalancing::config::LoadBalancingExporterConfig,
    /// `type = "prometheus"`: a Prometheus scrape endpoint.
    Prometheus = "prometheus" => prometheus::config::PrometheusExporterConfig,
    /// `type = "prometheus_remote_write"`: Prometheus remote write 1.0.
    RemoteWrite = "prometheus_remote_write" => remote_write::config::RemoteWriteExporterConfig,
    /// `type = "plugin"`: a WebAssembly exporter plugin renders requests; the host sends them.
    Plugin = "plugin" => plugin::config::PluginExporterConfig,
    /// `type = "kafka"`: records of a topic per signal, the OTLP request as the value.
    Kafka = "kafka" => kafka::config::KafkaExporterConfig,
}

/// Builds the exporter `name` of `whole` (the config it belongs to, for paths relative to it)
/// and starts the task that drains its queue. During a reload (`reloading`), an exporter plugin
/// that cannot be loaded is an error rather than a logged fault.
pub async fn spawn(
    name: &ComponentId,
    config: &ExporterConfig,
    whole: &Config,
    reloading: bool,
    metrics: &Arc<Metrics>,
) -> Result<(ExporterInput, JoinHandle<()>), BuildError> {
    let (tx, queue) = queue::bounded(metrics, "exporter", name.as_str(), config.queue_size);
    let overflow = config.shared.client.as_ref().filter(|client| client.on_full == OnFull::Drop).map(|_| {
        let dropped = PerSignal::new(|signal| metrics.delivery(name.as_str(), signal).dropped);
        (dropped, Arc::new(LogThrottle::default()))
    });
    let start = registry::Start { name, config: whole, reloading, metrics, queue, shared: &config.shared };
    let task = config.kind.start(start).await?;
    // Attached only once the exporter runs: what the disk queue hands its memory queue is
    // settled when dropped, so nothing may be handed to a queue nobody drains.
    // A disk queue stores gzip bodies for an exporter that sends gzip, and then keeps clients'.
    let sends_client_bodies = config.kind.sends_client_bodies().filter(|encoding| match config.queue {
        QueueConfig::Memory => true,
        QueueConfig::Disk(_) => *encoding == CompressionConfig::Gzip,
    });
    let entry = match &config.queue {
        QueueConfig::Memory => Entry::Memory { queue: tx, overflow },
        QueueConfig::Disk(disk) => {
            let (id, disk, handles) = (name.clone(), disk.clone(), metrics.disk_queue(name.as_str()));
            let gzip = sends_client_bodies.is_some();
            let runtime = tokio::runtime::Handle::current();
            let attached = tokio::task::spawn_blocking(move || {
                disk_queue::attach(&id, (&disk, gzip), handles, tx, runtime)
            })
            .await;
            let attachment =
                attached.map_err(|e| e.to_string()).and_then(|a| a).map_err(|message| BuildError {
                    name: name.clone(),
                    source: ExportError::Io {
                        context: "cannot open its disk queue".into(),
                        source: std::io::Error::other(message),
                    },
                })?;
            Entry::Disk(Arc::new(attachment), config.kind.merges_up_to().cloned())
        }
    };
    Ok((ExporterInput { name: name.clone(), entry, sends_client_bodies }, task))
}

impl BuildError {
    /// A network exporter whose client (TLS, credentials, plugin) can't be set up.
    pub fn client(name: &ComponentId, message: String) -> Self {
        let source = ExportError::Io {
            context: "cannot set up the client".into(),
            source: std::io::Error::other(message),
        };
        Self { name: name.clone(), source }
    }
}

/// Counts each batch an exporter is done with as sent or failed, logging failures (throttled).
pub(crate) struct Outcomes {
    name: ComponentId,
    counters: PerSignal<(Counter, Counter)>,
    failures: LogThrottle,
}

impl Outcomes {
    /// The sent and failed counters of exporter `name`.
    pub(crate) fn new(name: &ComponentId, metrics: &Metrics) -> Self {
        let counters = PerSignal::new(|signal| metrics.exporter(name.as_str(), signal));
        Self { name: name.clone(), counters, failures: LogThrottle::default() }
    }

    /// The exporter's name.
    pub(crate) fn name(&self) -> &ComponentId {
        &self.name
    }

    /// Counts `batch` by `outcome`.
    pub(crate) fn count(&mut self, batch: &Batch, outcome: Result<(), ExportError>) {
        let (sent, failed) = self.counters.get(batch.signal());
        match outcome {
            Ok(()) => {
                sent.inc_by(batch.items());
            }
            Err(error) => {
                failed.inc_by(batch.items());
                if let Some(suppressed) = self.failures.check() {
                    tracing::error!(
                        exporter = %self.name, signal = %batch.signal(), items = batch.items(), %error,
                        similar_failures_not_logged = suppressed,
                        "Export failed; batch dropped (sluice_exporter_failed_items_total counts every one)"
                    );
                }
            }
        }
    }
}

/// At most this many batches already waiting are handed to a blocking exporter at once...
const JOINED_BATCHES: usize = 64;
/// ...and no more once their payloads add up to this.
const JOINED_BYTES: usize = 1 << 20;

struct Runner {
    rx: queue::Receiver,
    outcomes: Outcomes,
}

impl Runner {
    fn spawn<E: Exporter>(mut self, mut exporter: E) -> JoinHandle<()> {
        if E::BLOCKING {
            return tokio::task::spawn_blocking(move || {
                let (mut waiting, mut outcomes) = (Vec::new(), Vec::new());
                while let Some(batch) = self.rx.blocking_recv() {
                    self.take_waiting(batch, &mut waiting);
                    exporter.export_all(&waiting, &mut outcomes);
                    debug_assert_eq!(outcomes.len(), waiting.len(), "one outcome per batch");
                    for (batch, outcome) in waiting.drain(..).zip(outcomes.drain(..)) {
                        self.settle(&batch, outcome);
                    }
                }
                self.finish(&mut exporter);
            });
        }
        tokio::spawn(async move {
            while let Some(batch) = self.rx.recv().await {
                let outcome = exporter.export(&batch);
                self.settle(&batch, outcome);
            }
            self.finish(&mut exporter);
        })
    }

    /// `first` and whatever else is already queued, into `waiting`: nothing waits for company.
    fn take_waiting(&mut self, first: Arc<Batch>, waiting: &mut Vec<Arc<Batch>>) {
        let mut bytes = first.payload().len();
        waiting.push(first);
        while waiting.len() < JOINED_BATCHES && bytes < JOINED_BYTES {
            let Ok(batch) = self.rx.try_recv() else { break };
            bytes += batch.payload().len();
            waiting.push(batch);
        }
    }

    /// Counts `batch` by `outcome` and settles it in its queue.
    fn settle(&mut self, batch: &Arc<Batch>, outcome: Result<(), ExportError>) {
        self.outcomes.count(batch, outcome);
        self.rx.settle(batch);
    }

    fn finish(&mut self, exporter: &mut impl Exporter) {
        let name = self.outcomes.name();
        if let Err(error) = exporter.flush() {
            tracing::error!(exporter = %name, %error, "Flush at shutdown failed");
        }
        tracing::debug!(exporter = %name, "Exporter drained");
    }
}
