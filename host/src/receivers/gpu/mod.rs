//! `type = "gpu"`: samples NVIDIA GPUs and sends the samples down the receiver's pipelines as
//! OTLP metrics, so plugins can filter, tag and route them and every exporter can deliver them.
//!
//! The backend (NVML, or a script) runs on a thread of its own: driver calls block, sometimes
//! for seconds, and must never stall the async runtime. Each tick asks that thread for a
//! sample; if the previous one is still running the tick is skipped and counted
//! (`sluice_gpu_samples_skipped_total`), so a hung driver call delays only the next sample.
//! A host without the driver logs one WARN and reports `sluice_gpu_devices 0`; the receiver
//! keeps trying each interval in case the driver appears. A GPU that falls off the bus is
//! logged and counted (`sluice_gpu_device_errors_total{kind="lost"}`), and the others go on.
//!
//! # Layout
//! - [`sample`]: what a sample holds and the [`sample::Backend`] trait.
//! - [`nvml`]: the real backend. [`scripted`]: a scripted one for tests and demos.
//! - [`naming`]: samples → OTLP metrics, dcgm-exporter's names or OpenTelemetry's.

pub mod config;
pub mod naming;
pub mod nvml;
pub mod sample;
pub mod scripted;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, Decoded};
use crate::config::{ComponentId, Config, GpuReceiverConfig, GpuSource, Signal};
use crate::log_throttle::LogThrottle;
use crate::metrics::{GpuMetrics, Metrics, ReceiverLabels};
use naming::Translator;
use sample::{Backend, BackendError, Snapshot};

use super::ingest::Feeds;
use super::registry::{ReceiverType, Start, Started};
use crate::config::Problem;

type Sampled = (Result<Snapshot, BackendError>, Duration);

/// The machine's host name: the kernel's, else `$HOSTNAME`, else `unknown`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Starts the thread that owns `backend`; it samples once per request until `requests` closes.
fn spawn_sampler(
    id: &ComponentId,
    mut backend: Box<dyn Backend>,
    processes: bool,
) -> Result<(std::sync::mpsc::SyncSender<()>, mpsc::Receiver<Sampled>), String> {
    let (request_tx, request_rx) = std::sync::mpsc::sync_channel::<()>(1);
    let (result_tx, result_rx) = mpsc::channel::<Sampled>(1);
    std::thread::Builder::new()
        .name(format!("sluice-gpu-{id}"))
        .spawn(move || {
            while request_rx.recv().is_ok() {
                let started = Instant::now();
                let result = backend.sample(processes);
                if result_tx.blocking_send((result, started.elapsed())).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| format!("cannot start the sampling thread: {e}"))?;
    Ok((request_tx, result_rx))
}

/// What the receiver remembers between samples, to log changes once rather than every tick.
struct Receiver {
    id: ComponentId,
    interval: Duration,
    feeds: Feeds,
    metrics: GpuMetrics,
    accepted: prometheus_client::metrics::counter::Counter,
    translator: Translator,
    unavailable_logged: bool,
    failed: BTreeSet<(u32, &'static str)>,
    library_errors: LogThrottle,
    skipped_log: LogThrottle,
}

impl Receiver {
    async fn handle(&mut self, result: Result<Snapshot, BackendError>, took: Duration) {
        self.metrics.sample_duration.observe(took.as_secs_f64());
        let snapshot = match result {
            Ok(snapshot) => snapshot,
            Err(BackendError::Unavailable(reason)) => {
                self.metrics.devices.set(0);
                if !self.unavailable_logged {
                    self.unavailable_logged = true;
                    tracing::warn!(
                        receiver = %self.id, %reason,
                        "No NVIDIA driver found: this host reports no GPUs (sluice_gpu_devices 0); everything else runs, and the receiver looks again every interval"
                    );
                }
                return;
            }
            Err(error @ BackendError::Failed(_)) => {
                self.metrics.devices.set(0);
                self.metrics.error("library");
                if let Some(suppressed) = self.library_errors.check() {
                    tracing::error!(receiver = %self.id, %error, similar_errors_not_logged = suppressed, "GPU sample failed");
                }
                return;
            }
        };
        if std::mem::take(&mut self.unavailable_logged) {
            tracing::info!(receiver = %self.id, "NVIDIA driver found; sampling GPUs");
        }
        let gpus = snapshot.devices.iter().filter(|d| d.mig.is_none()).count();
        self.metrics.devices.set(gpus as i64);
        self.note_failures(&snapshot);
        let Some((request, points)) = self.translator.translate(&snapshot) else { return };
        let batch = Arc::new(Batch::from_decoded(Decoded::Metrics(request), points));
        let feeds = self.feeds.load_full();
        for pipeline in feeds.get(Signal::Metrics) {
            if !pipeline.send(batch.clone()).await {
                tracing::warn!(receiver = %self.id, pipeline = %pipeline.name(), "Pipeline stopped; GPU sample not delivered to it");
            }
        }
        self.accepted.inc_by(points);
    }

    /// Counts every failing device each sample; logs a device when it starts or stops failing.
    fn note_failures(&mut self, snapshot: &Snapshot) {
        let mut now_failing = BTreeSet::new();
        for failure in &snapshot.failures {
            let kind = failure.kind.as_str();
            self.metrics.error(kind);
            now_failing.insert((failure.index, kind));
            if !self.failed.contains(&(failure.index, kind)) {
                let what = match failure.kind {
                    sample::FailureKind::Lost => "GPU fell off the bus; it needs a reset or a reboot",
                    sample::FailureKind::Error => "GPU cannot be read",
                };
                tracing::error!(receiver = %self.id, gpu = failure.index, uuid = %failure.uuid, reason = %failure.message, "{what}");
            }
        }
        for (index, kind) in self.failed.difference(&now_failing) {
            tracing::info!(receiver = %self.id, gpu = index, previously = kind, "GPU answers again");
        }
        self.failed = now_failing;
    }

    fn skip(&self) {
        self.metrics.skipped.inc();
        if let Some(suppressed) = self.skipped_log.check() {
            tracing::warn!(
                receiver = %self.id, interval = ?self.interval, similar_skips_not_logged = suppressed,
                "GPU sample still running after a whole interval (a slow or hung driver call); skipping this tick"
            );
        }
    }
}

/// Builds the backend and starts sampling into `feeds` until `shutdown`.
pub fn start(
    id: &ComponentId,
    gpu: &GpuReceiverConfig,
    config: &Config,
    feeds: &Feeds,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<JoinHandle<()>, String> {
    let (backend, source): (Box<dyn Backend>, &str) = match gpu.kind.get_ref() {
        GpuSource::Nvml => {
            let library = gpu.library.as_ref().map(|l| config.resolve(l.get_ref()));
            (Box::new(nvml::NvmlBackend::new(library)), "nvml")
        }
        GpuSource::Scripted => {
            let script = gpu.script.as_ref().ok_or("`kind = \"scripted\"` needs `script`")?;
            (Box::new(scripted::Scripted::open(&config.resolve(script.get_ref()))?), "scripted")
        }
    };
    let (requests, mut results) = spawn_sampler(id, backend, gpu.processes)?;
    let labels = ReceiverLabels {
        receiver: id.to_string(),
        transport: source.into(),
        signal: Signal::Metrics.as_str().into(),
    };
    let interval = gpu.interval.get_ref().0;
    let mut receiver = Receiver {
        id: id.clone(),
        interval,
        feeds: feeds.clone(),
        metrics: metrics.gpu(id.as_str()),
        accepted: metrics.receiver_accepted_items.get_or_create(&labels).clone(),
        translator: Translator::new(
            gpu.naming,
            gpu.hostname.clone().filter(|h| !h.is_empty()).unwrap_or_else(host_name),
        ),
        unavailable_logged: false,
        failed: BTreeSet::new(),
        library_errors: LogThrottle::default(),
        skipped_log: LogThrottle::default(),
    };
    tracing::info!(receiver = %id, source, ?interval, naming = ?gpu.naming, "Sampling GPUs");
    let stop = shutdown.clone();
    Ok(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut in_flight = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {
                    if in_flight {
                        receiver.skip();
                    } else if requests.try_send(()).is_ok() {
                        in_flight = true;
                    }
                }
                Some((result, took)) = results.recv() => {
                    in_flight = false;
                    receiver.handle(result, took).await;
                }
            }
        }
        // Dropping `requests` ends the sampling thread after its current sample, however long
        // the driver holds it.
        tracing::debug!(receiver = %receiver.id, "GPU receiver stopped");
    }))
}

impl ReceiverType for GpuReceiverConfig {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Metrics]
    }

    fn check(&self, what: &str, base_dir: &Path) -> Vec<Problem> {
        let mut problems = Vec::new();
        let interval = self.interval.get_ref().0;
        if interval < Duration::from_millis(100) || interval > Duration::from_secs(3600) {
            problems.push((
                Some(self.interval.span()),
                format!("{what}: `interval` must be between 100ms and 1h"),
            ));
        }
        match (self.kind.get_ref(), &self.script) {
            (GpuSource::Scripted, None) => problems.push((
                Some(self.kind.span()),
                format!("{what}: `kind = \"scripted\"` needs `script = \"FILE\"`, the samples to replay"),
            )),
            (GpuSource::Scripted, Some(script)) => {
                // `join` keeps an absolute path as it is.
                let resolved = base_dir.join(script.get_ref());
                if !resolved.is_file() {
                    problems.push((
                        Some(script.span()),
                        format!("{what}: script {} does not exist", resolved.display()),
                    ));
                }
            }
            (GpuSource::Nvml, Some(script)) => problems
                .push((Some(script.span()), format!("{what}: `script` is only for `kind = \"scripted\"`"))),
            (GpuSource::Nvml, None) => {}
        }
        if let (GpuSource::Scripted, Some(library)) = (self.kind.get_ref(), &self.library) {
            problems.push((Some(library.span()), format!("{what}: `library` is only for `kind = \"nvml\"`")));
        }
        problems
    }

    async fn start(&self, start: Start<'_>) -> anyhow::Result<Started> {
        let sampler = self::start(start.id, self, start.config, start.feeds, start.metrics, start.stop)
            .map_err(|e| anyhow::anyhow!("receiver `{}`: {e}", start.id))?;
        Ok(Started { listeners: Vec::new(), sampler: Some(sampler) })
    }
}
