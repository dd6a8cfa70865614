//! Pipelines: a bounded queue from the receivers, the stage that runs the processor chain, and
//! the fan-out to exporters.
//!
//! Receivers only ever `try_reserve` a pipeline's queue, so a full pipeline is answered with
//! "retry later" instead of growing memory. The pipeline worker `send`s into each exporter's own
//! bounded queue and waits when one is full: a stalled exporter holds its pipeline back (which
//! the receivers then report as backpressure) but never drops or reorders another exporter's
//! batches, which are already queued and keep flowing.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::ComponentId;
use crate::exporters::ExporterInput;
use crate::metrics::Metrics;
use crate::otlp::Batch;

/// The receiving end a receiver holds for one pipeline.
#[derive(Debug, Clone)]
pub struct PipelineInput {
    name: ComponentId,
    tx: mpsc::Sender<Arc<Batch>>,
    depth: Gauge,
}

/// A reserved slot in a pipeline's queue.
#[derive(Debug)]
pub struct Reserved<'a> {
    permit: mpsc::Permit<'a, Arc<Batch>>,
    depth: &'a Gauge,
}

impl Reserved<'_> {
    /// Puts `batch` in the reserved slot.
    pub fn send(self, batch: Arc<Batch>) {
        self.depth.inc();
        self.permit.send(batch);
    }
}

impl PipelineInput {
    /// The pipeline's name.
    pub fn name(&self) -> &ComponentId {
        &self.name
    }

    /// Reserves a slot without waiting; `None` when the queue is full or the pipeline stopped.
    pub fn try_reserve(&self) -> Option<Reserved<'_>> {
        self.tx.try_reserve().ok().map(|permit| Reserved { permit, depth: &self.depth })
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
    (PipelineInput { name, tx, depth }, rx)
}

/// Starts a pipeline feeding `exporters`. It runs until every [`PipelineInput`] clone is dropped
/// and its queue is drained, then drops its exporter inputs so they drain in turn.
pub fn spawn(
    name: ComponentId,
    queue_size: usize,
    exporters: Vec<ExporterInput>,
    metrics: &Metrics,
) -> (PipelineInput, JoinHandle<()>) {
    let (input, mut rx) = queue(name.clone(), queue_size, metrics);
    let depth = input.depth.clone();
    let task = tokio::spawn(async move {
        while let Some(batch) = rx.recv().await {
            depth.dec();
            // The processor chain runs here, once per batch, before the fan-out.
            for exporter in &exporters {
                exporter.send(batch.clone()).await;
            }
        }
        tracing::debug!(pipeline = %name, "Pipeline drained");
    });
    (input, task)
}
