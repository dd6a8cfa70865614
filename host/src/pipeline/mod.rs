//! Pipelines: a bounded queue from the receivers, the processor chain (WebAssembly plugins), and
//! the fan-out to exporters by route.
//!
//! Receivers only ever `try_reserve` a pipeline's queue, so a full pipeline is answered with
//! "retry later" instead of growing memory. The pipeline worker `send`s into each exporter's own
//! bounded queue and waits when one is full: a stalled exporter holds its pipeline back (which
//! the receivers then report as backpressure) but never drops or reorders another exporter's
//! batches, which are already queued and keep flowing.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::ComponentId;
use crate::exporters::ExporterInput;
use crate::metrics::Metrics;
use crate::otlp::Batch;
use crate::plugins::chain::Chain;

/// The receiving end a receiver holds for one pipeline.
#[derive(Debug, Clone)]
pub struct PipelineInput {
    name: ComponentId,
    tx: mpsc::Sender<Arc<Batch>>,
    depth: Gauge,
    pending: Gauge,
}

/// A reserved slot in a pipeline's queue.
#[derive(Debug)]
pub struct Reserved<'a> {
    permit: mpsc::Permit<'a, Arc<Batch>>,
    depth: &'a Gauge,
    pending: &'a Gauge,
}

impl Reserved<'_> {
    /// Puts `batch` in the reserved slot.
    pub fn send(self, batch: Arc<Batch>) {
        self.depth.inc();
        self.pending.inc_by(items_gauge(&batch));
        self.permit.send(batch);
    }
}

impl PipelineInput {
    /// The pipeline's name.
    pub fn name(&self) -> &ComponentId {
        &self.name
    }

    /// Queues `batch`, waiting while the queue is full (for sources that sample rather than
    /// answer clients). False if the pipeline has stopped.
    pub async fn send(&self, batch: Arc<Batch>) -> bool {
        let Ok(permit) = self.tx.reserve().await else { return false };
        Reserved { permit, depth: &self.depth, pending: &self.pending }.send(batch);
        true
    }

    /// Reserves a slot without waiting; `None` when the queue is full or the pipeline stopped.
    pub fn try_reserve(&self) -> Option<Reserved<'_>> {
        self.tx.try_reserve().ok().map(|permit| Reserved {
            permit,
            depth: &self.depth,
            pending: &self.pending,
        })
    }
}

/// A pipeline's bounded queue: the input receivers hold, and the end the worker drains.
pub fn queue(
    name: ComponentId,
    size: usize,
    metrics: &Metrics,
) -> (PipelineInput, mpsc::Receiver<Arc<Batch>>) {
    let (tx, rx) = mpsc::channel::<Arc<Batch>>(size);
    let depth = metrics.queue("pipeline", name.as_str(), size);
    let pending = metrics.pending("pipeline", name.as_str());
    (PipelineInput { name, tx, depth, pending }, rx)
}

/// A batch's items as a gauge amount.
pub(crate) fn items_gauge(batch: &Batch) -> i64 {
    i64::try_from(batch.items()).unwrap_or(i64::MAX)
}

/// Where a pipeline's batches go: its default exporters, and those of each named route.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    /// The pipeline's `exporters`.
    pub default: Vec<ExporterInput>,
    /// Route name → the route's exporters.
    pub routes: HashMap<Arc<str>, Vec<ExporterInput>>,
}

impl Destinations {
    fn for_route(&self, route: Option<&Arc<str>>) -> &[ExporterInput] {
        route.and_then(|r| self.routes.get(r)).unwrap_or(&self.default)
    }
}

/// Starts a pipeline: batches from its queue pass `chain`, then go to `destinations`. It runs
/// on a thread of its own (plugins run synchronously under their deadlines) until every
/// [`PipelineInput`] clone is dropped and its queue is drained, then drops its exporter inputs
/// so they drain in turn.
pub fn spawn(
    name: ComponentId,
    queue_size: usize,
    mut chain: Chain,
    destinations: Destinations,
    metrics: &Metrics,
) -> (PipelineInput, JoinHandle<()>) {
    let (input, mut rx) = queue(name.clone(), queue_size, metrics);
    let (depth, pending) = (input.depth.clone(), input.pending.clone());
    if chain.is_empty() {
        // Nothing to run: fan out from a task, without a thread hand-off.
        let task = tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                depth.dec();
                for exporter in &destinations.default {
                    exporter.send(batch.clone()).await;
                }
                pending.dec_by(items_gauge(&batch));
            }
            tracing::debug!(pipeline = %name, "Pipeline drained");
        });
        return (input, task);
    }
    let task = tokio::task::spawn_blocking(move || {
        while let Some(batch) = rx.blocking_recv() {
            depth.dec();
            let items = items_gauge(&batch);
            for part in chain.run(batch) {
                for exporter in destinations.for_route(part.route.as_ref()) {
                    exporter.send_blocking(part.batch.clone());
                }
            }
            pending.dec_by(items);
        }
        tracing::debug!(pipeline = %name, "Pipeline drained");
    });
    (input, task)
}
