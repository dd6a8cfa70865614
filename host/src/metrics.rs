//! The host's own metrics, served on the admin listener's `/metrics`.
//!
//! Metric names live here and nowhere else. Hot paths never look a label set up per item: each
//! component resolves its counters once when it is built and keeps the handles.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::config::Signal;

/// Labels of receiver counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverLabels {
    /// Receiver name.
    pub receiver: String,
    /// `grpc` or `http`.
    pub transport: String,
    /// `traces`, `metrics` or `logs`.
    pub signal: String,
}

/// Labels of refusal counters: why a request or its items were not accepted.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Receiver name.
    pub receiver: String,
    /// `grpc` or `http`.
    pub transport: String,
    /// `traces`, `metrics` or `logs`; `unknown` when the request named none.
    pub signal: String,
    /// `malformed`, `invalid_item`, `too_large`, `unsupported`, `busy`.
    pub reason: String,
}

/// Labels of exporter counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExporterLabels {
    /// Exporter name.
    pub exporter: String,
    /// `traces`, `metrics` or `logs`.
    pub signal: String,
}

/// Labels of queue gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// `pipeline` or `exporter`: which stage the queue feeds.
    pub stage: String,
    /// The component's name.
    pub name: String,
}

/// Labels of GPU receiver metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuLabels {
    /// Receiver name.
    pub receiver: String,
}

/// Labels of GPU device error counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuErrorLabels {
    /// Receiver name.
    pub receiver: String,
    /// `lost` (fell off the bus), `error` (a device query failed), `library` (NVML failed).
    pub kind: String,
}

/// A GPU receiver's own metrics.
#[derive(Debug, Clone)]
pub struct GpuMetrics {
    /// GPUs in the last sample (0 without a driver).
    pub devices: Gauge,
    /// How long each sample took.
    pub sample_duration: Histogram,
    /// Ticks skipped because the previous sample was still running.
    pub skipped: Counter,
    errors: Family<GpuErrorLabels, Counter>,
    receiver: String,
}

impl GpuMetrics {
    /// Counts a device error of `kind`.
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&GpuErrorLabels { receiver: self.receiver.clone(), kind: kind.into() })
            .inc();
    }
}

/// Labels of plugin metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    /// The pipeline the plugin runs in.
    pub pipeline: String,
    /// The processor's name.
    pub plugin: String,
}

/// Labels of plugin fault counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginFaultLabels {
    /// The pipeline the plugin runs in.
    pub pipeline: String,
    /// The processor's name.
    pub plugin: String,
    /// `trap`, `deadline`, `memory`, `error`, `init`, `invalid_answer`, `unavailable`,
    /// `invalid_module`, `wrong_world`, `sha256_mismatch`, `unreadable`.
    pub kind: String,
}

/// Every plugin fault kind. Each plugin's fault counters start at 0 for all of them, so a
/// first fault shows as an increase (Prometheus can't see the first increment of a series that
/// appears at 1) and dashboards have a series to show before anything went wrong.
pub const PLUGIN_FAULT_KINDS: &[&str] = &[
    "trap",
    "deadline",
    "memory",
    "error",
    "init",
    "invalid_answer",
    "unavailable",
    "invalid_module",
    "wrong_world",
    "sha256_mismatch",
    "unreadable",
];

/// Counter and histogram handles for one plugin in one pipeline.
#[derive(Debug, Clone)]
pub struct PluginMetrics {
    /// Calls made (batches the plugin was asked about).
    pub calls: Counter,
    /// Items in the batches it was given.
    pub items_in: Counter,
    /// Items in what it passed on.
    pub items_out: Counter,
    /// Items it dropped, or that were dropped by `on_error = "drop"`.
    pub items_dropped: Counter,
    /// Call duration.
    pub duration: Histogram,
    labels: PluginLabels,
    faults: Family<PluginFaultLabels, Counter>,
}

impl PluginMetrics {
    /// Counts a fault of `kind`.
    pub fn fault(&self, kind: &str) {
        let labels = PluginFaultLabels {
            pipeline: self.labels.pipeline.clone(),
            plugin: self.labels.plugin.clone(),
            kind: kind.into(),
        };
        self.faults.get_or_create(&labels).inc();
    }
}

/// One exporter's delivery counters for one signal.
#[derive(Debug, Clone)]
pub struct DeliveryCounters {
    /// Delivered.
    pub sent: Counter,
    /// Given up on (lost).
    pub failed: Counter,
    /// Being retried.
    pub retried: Counter,
    /// Dropped on a full queue.
    pub dropped: Counter,
    /// Rejected by the destination.
    pub rejected: Counter,
    /// The exporter's items not yet settled (shared by every signal; see [`Metrics::pending`]).
    pub pending: Gauge,
}

/// Labels of metrics kept per exporter: disk queues, load balancing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExporterNameLabels {
    /// The exporter the queue belongs to.
    pub exporter: String,
}

/// Labels of a Kafka receiver's per-partition gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KafkaPartitionLabels {
    /// The receiver.
    pub receiver: String,
    /// The topic.
    pub topic: String,
    /// The partition's number.
    pub partition: String,
}

/// Labels of a load-balancing exporter's per-backend counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// The load-balancing exporter.
    pub exporter: String,
    /// The backend's URL.
    pub backend: String,
    /// `traces`, `metrics` or `logs`.
    pub signal: String,
}

/// A load-balancing exporter's own metrics (its backends' deliveries count as its own under
/// the `sluice_exporter_*` families).
#[derive(Debug, Clone)]
pub struct BalancerMetrics {
    /// Backends in the current answer.
    pub backends: Gauge,
    /// Lookups that failed (the last answer stays in use).
    pub resolve_failures: Counter,
    /// Items a departed backend could not take, handed back and routed again, per signal.
    pub rerouted: PerSignal<Counter>,
    routed: Family<BackendLabels, Counter>,
    exporter: String,
}

impl BalancerMetrics {
    /// Drops `backend`'s routed-items series once it is gone for good.
    pub fn forget(&self, backend: &str) {
        for signal in Signal::ALL {
            let labels = BackendLabels {
                exporter: self.exporter.clone(),
                backend: backend.into(),
                signal: signal.as_str().into(),
            };
            self.routed.remove(&labels);
        }
    }

    /// The counter of items routed to `backend` for `signal`.
    pub fn routed(&self, backend: &str, signal: Signal) -> Counter {
        let labels = BackendLabels {
            exporter: self.exporter.clone(),
            backend: backend.into(),
            signal: signal.as_str().into(),
        };
        self.routed.get_or_create(&labels).clone()
    }
}

/// One disk queue's metrics.
#[derive(Debug, Clone)]
pub struct DiskQueueMetrics {
    /// Bytes of its segment files.
    pub bytes: Gauge,
    /// Its `max_size`.
    pub capacity: Gauge,
    /// Items written and not yet settled.
    pub items: Gauge,
    /// Seconds since the oldest unsettled item was written (0 when empty).
    pub oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Records written: several batches share one when a pipeline group merges them.
    pub records: Counter,
    /// Items delivered again after a restart.
    pub replayed: Counter,
    /// Records lost to damage (a torn write, a bad sector).
    pub corrupt: Counter,
    /// Bytes read back from its files: a replay after a restart, or records the exporter fell
    /// so far behind on that their copies in memory were let go.
    pub read_back: Counter,
    /// Items dropped because it was full (`on_full = "drop"`), per signal: the exporter's own
    /// dropped counters.
    pub dropped: PerSignal<Counter>,
}

/// Labels of the reload counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `failure`.
    pub result: String,
}

/// Labels of the build info gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// Every metric family the host exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Items (spans, data points, log records) accepted per receiver, transport and signal.
    pub receiver_accepted_items: Family<ReceiverLabels, Counter>,
    /// Items refused, by reason (items inside a refused request that could be counted).
    pub receiver_refused_items: Family<RefusalLabels, Counter>,
    /// Requests refused, by reason.
    pub receiver_refused_requests: Family<RefusalLabels, Counter>,
    /// Items an exporter delivered.
    pub exporter_sent_items: Family<ExporterLabels, Counter>,
    /// Items an exporter failed to deliver (lost).
    pub exporter_failed_items: Family<ExporterLabels, Counter>,
    /// Items an exporter will try again to deliver (counted per attempt).
    pub exporter_retried_items: Family<ExporterLabels, Counter>,
    /// Items an exporter dropped because its queue was full (`on_full = "drop"`).
    pub exporter_dropped_items: Family<ExporterLabels, Counter>,
    /// Items a destination accepted the request for but rejected (`partial_success`).
    pub exporter_rejected_items: Family<ExporterLabels, Counter>,
    /// Batches waiting in a queue.
    pub queue_depth: Family<QueueLabels, Gauge>,
    /// Batches a queue can hold.
    pub queue_capacity: Family<QueueLabels, Gauge>,
    /// Items a stage has taken on and not yet settled (see [`Metrics::pending`]).
    pub pending_items: Family<QueueLabels, Gauge>,
    /// Calls per plugin.
    pub plugin_calls: Family<PluginLabels, Counter>,
    /// Items into plugins.
    pub plugin_items_in: Family<PluginLabels, Counter>,
    /// Items out of plugins.
    pub plugin_items_out: Family<PluginLabels, Counter>,
    /// Items dropped by plugins.
    pub plugin_items_dropped: Family<PluginLabels, Counter>,
    /// Plugin faults by kind.
    pub plugin_faults: Family<PluginFaultLabels, Counter>,
    /// Plugin call durations.
    pub plugin_call_duration: Family<PluginLabels, Histogram, fn() -> Histogram>,
    /// Reloads by result.
    pub reloads: Family<ReloadLabels, Counter>,
    /// GPUs per GPU receiver.
    pub gpu_devices: Family<GpuLabels, Gauge>,
    /// GPU sample durations.
    pub gpu_sample_duration: Family<GpuLabels, Histogram, fn() -> Histogram>,
    /// GPU sampling ticks skipped.
    pub gpu_samples_skipped: Family<GpuLabels, Counter>,
    /// GPU device errors by kind.
    pub gpu_device_errors: Family<GpuErrorLabels, Counter>,
    /// `service.memory_limit` in bytes (0: none).
    pub memory_limit_bytes: Gauge,
    /// The process's resident set size at the last sample.
    pub memory_resident_bytes: Gauge,
    /// 1 while the receivers refuse new data because memory is above its soft limit.
    pub memory_refusing: Gauge,
    /// Disk queue bytes on disk.
    pub disk_queue_bytes: Family<ExporterNameLabels, Gauge>,
    /// Disk queue `max_size`.
    pub disk_queue_capacity_bytes: Family<ExporterNameLabels, Gauge>,
    /// Items in disk queues.
    pub disk_queue_items: Family<ExporterNameLabels, Gauge>,
    /// Age of each disk queue's oldest item.
    pub disk_queue_oldest_age: Family<ExporterNameLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Records disk queues wrote.
    pub disk_queue_records: Family<ExporterNameLabels, Counter>,
    /// Items replayed from disk queues after a restart.
    pub disk_queue_replayed_items: Family<ExporterNameLabels, Counter>,
    /// Disk queue records lost to damage.
    pub disk_queue_corrupt_records: Family<ExporterNameLabels, Counter>,
    /// Bytes disk queues read back from their files.
    pub disk_queue_read_back_bytes: Family<ExporterNameLabels, Counter>,
    /// Backends each load-balancing exporter has.
    pub loadbalancer_backends: Family<ExporterNameLabels, Gauge>,
    /// Failed lookups of each load-balancing exporter's resolver.
    pub loadbalancer_resolve_failures: Family<ExporterNameLabels, Counter>,
    /// Items routed to each backend.
    pub loadbalancer_routed_items: Family<BackendLabels, Counter>,
    /// Items handed back by departed backends and routed again.
    pub loadbalancer_rerouted_items: Family<ExporterLabels, Counter>,
    /// Records each Kafka receiver's group has yet to read, per partition it consumes.
    pub kafka_consumer_lag: Family<KafkaPartitionLabels, Gauge>,
    /// Taps (`GET /tap`, `sluice tap`) open now.
    pub tap_watchers: Gauge,
    /// Tap samples refused because their watcher was behind.
    pub tap_missed_samples: Counter,
    /// Every queue's depth gauge, to total at shutdown.
    queues: Mutex<Vec<Gauge>>,
    /// The label sets of [`Metrics::pending`] gauges handed out, to total at shutdown.
    pending_labels: Mutex<std::collections::BTreeSet<(String, String)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            receiver_accepted_items: Family::default(),
            receiver_refused_items: Family::default(),
            receiver_refused_requests: Family::default(),
            exporter_sent_items: Family::default(),
            exporter_failed_items: Family::default(),
            exporter_retried_items: Family::default(),
            exporter_dropped_items: Family::default(),
            exporter_rejected_items: Family::default(),
            queue_depth: Family::default(),
            queue_capacity: Family::default(),
            pending_items: Family::default(),
            queues: Mutex::default(),
            pending_labels: Mutex::default(),
            reloads: Family::default(),
            plugin_calls: Family::default(),
            plugin_items_in: Family::default(),
            plugin_items_out: Family::default(),
            plugin_items_dropped: Family::default(),
            plugin_faults: Family::default(),
            plugin_call_duration: Family::new_with_constructor(|| {
                // 10 µs to ~1.3 s: a call on a small batch up to a deadline overrun.
                Histogram::new(exponential_buckets(0.000_01, 2.0, 18))
            }),
            gpu_devices: Family::default(),
            gpu_sample_duration: Family::new_with_constructor(|| {
                // 100 µs to ~3.3 s: a quick NVML pass up to a driver call that hangs.
                Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
            }),
            gpu_samples_skipped: Family::default(),
            gpu_device_errors: Family::default(),
            memory_limit_bytes: Gauge::default(),
            memory_resident_bytes: Gauge::default(),
            memory_refusing: Gauge::default(),
            disk_queue_bytes: Family::default(),
            disk_queue_capacity_bytes: Family::default(),
            disk_queue_items: Family::default(),
            disk_queue_oldest_age: Family::default(),
            disk_queue_records: Family::default(),
            disk_queue_replayed_items: Family::default(),
            disk_queue_corrupt_records: Family::default(),
            disk_queue_read_back_bytes: Family::default(),
            loadbalancer_backends: Family::default(),
            loadbalancer_resolve_failures: Family::default(),
            loadbalancer_routed_items: Family::default(),
            loadbalancer_rerouted_items: Family::default(),
            kafka_consumer_lag: Family::default(),
            tap_watchers: Gauge::default(),
            tap_missed_samples: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "sluice_kafka_consumer_lag",
            "Records a Kafka receiver's group has yet to read, per partition it consumes",
            metrics.kafka_consumer_lag.clone(),
        );
        registry.register("sluice_tap_watchers", "Taps open now", metrics.tap_watchers.clone());
        registry.register(
            "sluice_tap_missed_samples",
            "Tap samples refused because their watcher read slower than the pipeline ran",
            metrics.tap_missed_samples.clone(),
        );
        registry.register(
            "sluice_receiver_accepted_items",
            "Spans, metric data points and log records accepted",
            metrics.receiver_accepted_items.clone(),
        );
        registry.register(
            "sluice_receiver_refused_items",
            "Items refused, by reason",
            metrics.receiver_refused_items.clone(),
        );
        registry.register(
            "sluice_receiver_refused_requests",
            "Requests refused, by reason",
            metrics.receiver_refused_requests.clone(),
        );
        registry.register(
            "sluice_exporter_sent_items",
            "Items an exporter delivered",
            metrics.exporter_sent_items.clone(),
        );
        registry.register(
            "sluice_exporter_failed_items",
            "Items an exporter failed to deliver",
            metrics.exporter_failed_items.clone(),
        );
        registry.register(
            "sluice_exporter_retried_items",
            "Items an exporter is retrying, per attempt",
            metrics.exporter_retried_items.clone(),
        );
        registry.register(
            "sluice_exporter_dropped_items",
            "Items dropped because an exporter's queue was full (on_full = drop)",
            metrics.exporter_dropped_items.clone(),
        );
        registry.register(
            "sluice_exporter_rejected_items",
            "Items a destination rejected through partial_success",
            metrics.exporter_rejected_items.clone(),
        );
        registry.register("sluice_queue_depth", "Batches waiting in a queue", metrics.queue_depth.clone());
        registry.register(
            "sluice_queue_capacity",
            "Batches a queue can hold",
            metrics.queue_capacity.clone(),
        );
        registry.register(
            "sluice_pending_items",
            "Items a stage has taken on whose outcome is not settled yet: queued, being processed, sent or waiting to retry",
            metrics.pending_items.clone(),
        );
        registry.register("sluice_plugin_calls", "Plugin calls", metrics.plugin_calls.clone());
        registry.register(
            "sluice_plugin_items_in",
            "Items given to a plugin",
            metrics.plugin_items_in.clone(),
        );
        registry.register(
            "sluice_plugin_items_out",
            "Items a plugin passed on",
            metrics.plugin_items_out.clone(),
        );
        registry.register(
            "sluice_plugin_items_dropped",
            "Items a plugin dropped, or dropped by its on_error policy",
            metrics.plugin_items_dropped.clone(),
        );
        registry.register("sluice_plugin_faults", "Plugin faults by kind", metrics.plugin_faults.clone());
        registry.register_with_unit(
            "sluice_plugin_call_duration",
            "Duration of one plugin call",
            prometheus_client::registry::Unit::Seconds,
            metrics.plugin_call_duration.clone(),
        );
        registry.register("sluice_reload", "Configuration reloads by result", metrics.reloads.clone());
        registry.register("sluice_gpu_devices", "GPUs in the last sample", metrics.gpu_devices.clone());
        registry.register_with_unit(
            "sluice_gpu_sample_duration",
            "Duration of one pass over every GPU",
            prometheus_client::registry::Unit::Seconds,
            metrics.gpu_sample_duration.clone(),
        );
        registry.register(
            "sluice_gpu_samples_skipped",
            "Sampling ticks skipped because the previous sample was still running (a slow or hung driver call)",
            metrics.gpu_samples_skipped.clone(),
        );
        registry.register(
            "sluice_gpu_device_errors",
            "GPU errors by kind: lost (fell off the bus), error, library",
            metrics.gpu_device_errors.clone(),
        );
        registry.register_with_unit(
            "sluice_memory_limit",
            "service.memory_limit (0: none)",
            prometheus_client::registry::Unit::Bytes,
            metrics.memory_limit_bytes.clone(),
        );
        registry.register_with_unit(
            "sluice_memory_resident",
            "The process's resident set size, sampled every 50 ms",
            prometheus_client::registry::Unit::Bytes,
            metrics.memory_resident_bytes.clone(),
        );
        registry.register(
            "sluice_memory_refusing",
            "1 while receivers refuse new data (retryable) because memory is above 80% of its limit",
            metrics.memory_refusing.clone(),
        );
        registry.register_with_unit(
            "sluice_disk_queue",
            "Bytes of a disk queue's segment files",
            prometheus_client::registry::Unit::Bytes,
            metrics.disk_queue_bytes.clone(),
        );
        registry.register_with_unit(
            "sluice_disk_queue_capacity",
            "A disk queue's max_size",
            prometheus_client::registry::Unit::Bytes,
            metrics.disk_queue_capacity_bytes.clone(),
        );
        registry.register(
            "sluice_disk_queue_items",
            "Items written to a disk queue and not yet settled (delivered, rejected or given up on)",
            metrics.disk_queue_items.clone(),
        );
        registry.register_with_unit(
            "sluice_disk_queue_oldest_age",
            "Time since the oldest unsettled item in a disk queue was written (0 when empty)",
            prometheus_client::registry::Unit::Seconds,
            metrics.disk_queue_oldest_age.clone(),
        );
        registry.register(
            "sluice_disk_queue_records",
            "Records a disk queue wrote: one per pipeline group, signal and request-sized run of batches",
            metrics.disk_queue_records.clone(),
        );
        registry.register(
            "sluice_disk_queue_replayed_items",
            "Items a disk queue delivered again after a restart (the at-least-once window)",
            metrics.disk_queue_replayed_items.clone(),
        );
        registry.register(
            "sluice_disk_queue_corrupt_records",
            "Disk queue records lost to damage: a torn write, a bad sector",
            metrics.disk_queue_corrupt_records.clone(),
        );
        registry.register(
            "sluice_disk_queue_read_back_bytes",
            "Bytes a disk queue read back from its files: a replay, or a backlog past its copies in memory",
            metrics.disk_queue_read_back_bytes.clone(),
        );
        registry.register(
            "sluice_loadbalancer_backends",
            "Backends a load-balancing exporter routes to: its resolver's current answer",
            metrics.loadbalancer_backends.clone(),
        );
        registry.register(
            "sluice_loadbalancer_resolve_failures",
            "Failed lookups of a load-balancing exporter's resolver (the previous answer stays in use)",
            metrics.loadbalancer_resolve_failures.clone(),
        );
        registry.register(
            "sluice_loadbalancer_routed_items",
            "Items a load-balancing exporter routed to each backend",
            metrics.loadbalancer_routed_items.clone(),
        );
        registry.register(
            "sluice_loadbalancer_rerouted_items",
            "Items a backend that left the resolver's answer could not deliver, routed again to their key's new owner",
            metrics.loadbalancer_rerouted_items.clone(),
        );
        let build = Family::<BuildLabels, Gauge<i64, std::sync::atomic::AtomicI64>>::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").into() }).set(1);
        registry.register("sluice_build_info", "Build information; the value is always 1", build);
        for result in ["success", "failure"] {
            let _ = metrics.reloads.get_or_create(&ReloadLabels { result: result.into() });
        }
        Self { registry, ..metrics }
    }

    /// The metrics of GPU receiver `receiver`; its device gauge starts at 0.
    pub fn gpu(&self, receiver: &str) -> GpuMetrics {
        let labels = GpuLabels { receiver: receiver.into() };
        for kind in ["lost", "error", "library"] {
            let errors = GpuErrorLabels { receiver: receiver.into(), kind: kind.into() };
            let _ = self.gpu_device_errors.get_or_create(&errors);
        }
        GpuMetrics {
            devices: self.gpu_devices.get_or_create(&labels).clone(),
            sample_duration: self.gpu_sample_duration.get_or_create(&labels).clone(),
            skipped: self.gpu_samples_skipped.get_or_create(&labels).clone(),
            errors: self.gpu_device_errors.clone(),
            receiver: receiver.into(),
        }
    }

    /// Counts a reload with `result` `success` or `failure`.
    pub fn reload(&self, result: &str) {
        self.reloads.get_or_create(&ReloadLabels { result: result.into() }).inc();
    }

    /// Batches waiting in every queue together.
    pub fn queue_depth_total(&self) -> i64 {
        self.queues.lock().map(|queues| queues.iter().map(Gauge::get).sum()).unwrap_or(0)
    }

    /// Items taken on by a stage (`pipeline` or `exporter`) and not settled yet. A pipeline
    /// settles a batch once its chain has handed the result to the exporters; an exporter once
    /// the items are sent, rejected or given up on. Whatever is pending when the shutdown grace
    /// period runs out is lost, and this is how it is counted.
    pub fn pending(&self, stage: &str, name: &str) -> Gauge {
        if let Ok(mut seen) = self.pending_labels.lock() {
            seen.insert((stage.to_string(), name.to_string()));
        }
        let labels = QueueLabels { stage: stage.into(), name: name.into() };
        self.pending_items.get_or_create(&labels).clone()
    }

    /// Drops the queue and pending series of `stage` `name`, a component that is gone for good
    /// (a departed backend of a load-balancing exporter), so that addresses that come and go
    /// don't pile up in `/metrics`. Its queue must be empty and its items settled.
    pub fn forget_queue(&self, stage: &str, name: &str) {
        let labels = QueueLabels { stage: stage.into(), name: name.into() };
        self.queue_depth.remove(&labels);
        self.queue_capacity.remove(&labels);
        self.pending_items.remove(&labels);
        if let Ok(mut seen) = self.pending_labels.lock() {
            seen.remove(&(stage.to_string(), name.to_string()));
        }
    }

    /// Items pending in every stage, by stage: (pipelines, exporters).
    pub fn pending_items_total(&self) -> (i64, i64) {
        let seen = self.pending_labels.lock().map(|seen| seen.clone()).unwrap_or_default();
        let mut totals = (0, 0);
        for (stage, name) in seen {
            let pending = self.pending_items.get_or_create(&QueueLabels { stage: stage.clone(), name }).get();
            match stage.as_str() {
                "pipeline" => totals.0 += pending,
                _ => totals.1 += pending,
            }
        }
        totals
    }

    /// The registry, for encoding.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A bounded queue's depth gauge, with its capacity recorded beside it.
    pub fn queue(&self, stage: &str, name: &str, capacity: usize) -> Gauge {
        let labels = QueueLabels { stage: stage.into(), name: name.into() };
        self.queue_capacity.get_or_create(&labels).set(i64::try_from(capacity).unwrap_or(i64::MAX));
        let depth = self.queue_depth.get_or_create(&labels).clone();
        if let Ok(mut queues) = self.queues.lock() {
            queues.push(depth.clone());
        }
        depth
    }

    /// The handles for plugin `plugin` in pipeline `pipeline`.
    pub fn plugin(&self, pipeline: &str, plugin: &str) -> PluginMetrics {
        let labels = PluginLabels { pipeline: pipeline.into(), plugin: plugin.into() };
        for kind in PLUGIN_FAULT_KINDS {
            let fault =
                PluginFaultLabels { pipeline: pipeline.into(), plugin: plugin.into(), kind: (*kind).into() };
            let _ = self.plugin_faults.get_or_create(&fault);
        }
        PluginMetrics {
            calls: self.plugin_calls.get_or_create(&labels).clone(),
            items_in: self.plugin_items_in.get_or_create(&labels).clone(),
            items_out: self.plugin_items_out.get_or_create(&labels).clone(),
            items_dropped: self.plugin_items_dropped.get_or_create(&labels).clone(),
            duration: self.plugin_call_duration.get_or_create(&labels).clone(),
            faults: self.plugin_faults.clone(),
            labels,
        }
    }

    /// An exporter's counters for one signal: sent, failed, retried, dropped, rejected.
    pub fn delivery(&self, exporter: &str, signal: Signal) -> DeliveryCounters {
        let labels = ExporterLabels { exporter: exporter.into(), signal: signal.as_str().into() };
        DeliveryCounters {
            sent: self.exporter_sent_items.get_or_create(&labels).clone(),
            failed: self.exporter_failed_items.get_or_create(&labels).clone(),
            retried: self.exporter_retried_items.get_or_create(&labels).clone(),
            dropped: self.exporter_dropped_items.get_or_create(&labels).clone(),
            rejected: self.exporter_rejected_items.get_or_create(&labels).clone(),
            pending: self.pending("exporter", exporter),
        }
    }

    /// The metrics of load-balancing exporter `exporter`.
    pub fn balancer(&self, exporter: &str) -> BalancerMetrics {
        let labels = ExporterNameLabels { exporter: exporter.into() };
        BalancerMetrics {
            backends: self.loadbalancer_backends.get_or_create(&labels).clone(),
            resolve_failures: self.loadbalancer_resolve_failures.get_or_create(&labels).clone(),
            rerouted: PerSignal::new(|signal| {
                let labels = ExporterLabels { exporter: exporter.into(), signal: signal.as_str().into() };
                self.loadbalancer_rerouted_items.get_or_create(&labels).clone()
            }),
            routed: self.loadbalancer_routed_items.clone(),
            exporter: exporter.into(),
        }
    }

    /// The metrics of exporter `exporter`'s disk queue.
    pub fn disk_queue(&self, exporter: &str) -> DiskQueueMetrics {
        let labels = ExporterNameLabels { exporter: exporter.into() };
        DiskQueueMetrics {
            bytes: self.disk_queue_bytes.get_or_create(&labels).clone(),
            capacity: self.disk_queue_capacity_bytes.get_or_create(&labels).clone(),
            items: self.disk_queue_items.get_or_create(&labels).clone(),
            oldest_age: self.disk_queue_oldest_age.get_or_create(&labels).clone(),
            records: self.disk_queue_records.get_or_create(&labels).clone(),
            replayed: self.disk_queue_replayed_items.get_or_create(&labels).clone(),
            corrupt: self.disk_queue_corrupt_records.get_or_create(&labels).clone(),
            read_back: self.disk_queue_read_back_bytes.get_or_create(&labels).clone(),
            dropped: PerSignal::new(|signal| self.delivery(exporter, signal).dropped),
        }
    }

    /// An exporter's sent and failed counters for one signal.
    pub fn exporter(&self, exporter: &str, signal: Signal) -> (Counter, Counter) {
        let labels = ExporterLabels { exporter: exporter.into(), signal: signal.as_str().into() };
        (
            self.exporter_sent_items.get_or_create(&labels).clone(),
            self.exporter_failed_items.get_or_create(&labels).clone(),
        )
    }
}

/// Per-signal counter handles, indexed by [`Signal`].
#[derive(Debug, Clone, Default)]
pub struct PerSignal<T>(pub [T; 3]);

impl<T> PerSignal<T> {
    /// Builds one value per signal.
    pub fn new(mut make: impl FnMut(Signal) -> T) -> Self {
        Self(Signal::ALL.map(&mut make))
    }

    /// The value for `signal`.
    pub fn get(&self, signal: Signal) -> &T {
        &self.0[signal.index()]
    }
}
