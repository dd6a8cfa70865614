//! Pipelines: a bounded queue from the receivers, the processor chain (WebAssembly plugins), and
//! the fan-out to exporters by route.
//!
//! Receivers only ever `try_reserve` a pipeline's queue, so a full pipeline is answered with
//! "retry later" instead of growing memory. The pipeline worker `send`s into each exporter's own
//! bounded queue and waits when one is full: a stalled exporter holds its pipeline back (which
//! the receivers then report as backpressure) but never drops or reorders another exporter's
//! batches, which are already queued and keep flowing.
//!
//! A pipeline that routes to disk-queued exporters takes a group of batches from its queue, runs
//! them all, then writes what each such exporter was routed as a few records up to that
//! exporter's request sizes (the `records` module) and syncs once; it keeps each batch's [`Pledge`]
//! only once every write holding part of it is done: the receiver answers its client then (see
//! [`crate::disk_queue`]).

mod admitted;
mod records;

pub use admitted::{Admitted, Pledge, Receipt};

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::config::{ComponentId, CompressionConfig};
use crate::exporters::ExporterInput;
use crate::metrics::Metrics;
use crate::plugins::chain::{Chain, Routed};
use crate::queue::{self, Reserved};
use crate::tap::{Point, Taps};

/// The receiving end a receiver holds for one pipeline.
#[derive(Debug, Clone)]
pub struct PipelineInput {
    name: ComponentId,
    queue: queue::Sender<Admitted>,
    durable: bool,
    /// The compressions whose client bodies some exporter of the pipeline sends on as they came.
    sends_client_bodies: Vec<CompressionConfig>,
}

impl PipelineInput {
    /// The pipeline's name.
    pub fn name(&self) -> &ComponentId {
        &self.name
    }

    /// Whether one of its exporters sends a client's body compressed `encoding`'s way on as it
    /// came: only then is it worth keeping beside the payload.
    pub fn sends_client_bodies(&self, encoding: CompressionConfig) -> bool {
        self.sends_client_bodies.contains(&encoding)
    }

    /// The input, its pipeline's exporters sending client bodies compressed `encodings`' ways on
    /// as they came.
    pub fn sending_client_bodies(self, encodings: Vec<CompressionConfig>) -> Self {
        Self { sends_client_bodies: encodings, ..self }
    }

    /// Whether it writes to a disk queue: a receiver then waits for its [`Pledge`] before
    /// answering.
    pub fn durable(&self) -> bool {
        self.durable
    }

    /// Queues `batch`, waiting while the queue is full (for sources that sample rather than
    /// answer clients). False if the pipeline has stopped.
    pub async fn send(&self, batch: Arc<crate::batch::Batch>) -> bool {
        self.queue.send(Admitted { batch, pledge: None }).await.is_ok()
    }

    /// Whether its queue has no room now (a hint; [`PipelineInput::try_reserve`] decides).
    pub fn is_full(&self) -> bool {
        self.queue.is_full()
    }

    /// Reserves a slot without waiting; `None` when the queue is full or the pipeline stopped.
    pub fn try_reserve(&self) -> Option<Reserved<'_, Admitted>> {
        self.queue.try_reserve()
    }
}

/// A pipeline's bounded queue: the input receivers hold, and the end the worker drains.
/// `durable`: whether it writes to a disk queue.
pub fn queue(
    name: ComponentId,
    size: usize,
    durable: bool,
    metrics: &Metrics,
) -> (PipelineInput, queue::Receiver<Admitted>) {
    let (tx, rx) = queue::bounded(metrics, "pipeline", name.as_str(), size);
    (PipelineInput { name, queue: tx, durable, sends_client_bodies: Vec::new() }, rx)
}

/// Where a pipeline's batches go: its default exporters, and those of each named route.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    /// The pipeline's `exporters`.
    pub default: Vec<ExporterInput>,
    /// Route name → the route's exporters.
    pub routes: HashMap<Arc<str>, Vec<ExporterInput>>,
}

/// The most batches a pipeline with disk-queued exporters takes from its queue before one
/// `fdatasync`: enough that a loaded pipeline syncs a few hundred times a second, not once per
/// request; few enough that the first client in a group doesn't wait long for the others.
pub const GROUP_COMMIT: usize = 32;

impl Destinations {
    /// Its disk-queued exporters, each once.
    fn durable(&self) -> Vec<ExporterInput> {
        let mut durable: Vec<ExporterInput> = Vec::new();
        for exporter in self.default.iter().chain(self.routes.values().flatten()) {
            if exporter.durable() && !durable.iter().any(|seen| seen.name() == exporter.name()) {
                durable.push(exporter.clone());
            }
        }
        durable
    }

    /// The compressions whose client bodies some of its exporters send on as they came.
    fn client_bodies(&self) -> Vec<CompressionConfig> {
        let mut encodings = Vec::new();
        for exporter in self.default.iter().chain(self.routes.values().flatten()) {
            if let Some(encoding) = exporter.sends_client_bodies()
                && !encodings.contains(&encoding)
            {
                encodings.push(encoding);
            }
        }
        encodings
    }

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
    (metrics, taps): (&Metrics, &Arc<Taps>),
) -> (PipelineInput, JoinHandle<()>) {
    let taps = taps.clone();
    let durable = destinations.durable();
    let (input, mut rx) = queue(name.clone(), queue_size, !durable.is_empty(), metrics);
    let input = input.sending_client_bodies(destinations.client_bodies());
    let unstored = |admitted: &Admitted, result: Result<(), String>| {
        if let (Err(reason), Some(pledge)) = (result, &admitted.pledge) {
            pledge.break_with(reason);
        }
    };
    if chain.is_empty() && durable.is_empty() {
        // Nothing to run and nothing to write: fan out from a task, without a thread hand-off.
        let task = tokio::spawn(async move {
            while let Some(admitted) = rx.recv().await {
                if taps.watching() {
                    run_chain(&name, &mut chain, admitted.batch.clone(), &taps, &destinations);
                }
                for exporter in &destinations.default {
                    exporter.send(admitted.batch.clone()).await;
                }
                rx.settle(&admitted);
            }
            tracing::debug!(pipeline = %name, "Pipeline drained");
        });
        return (input, task);
    }
    let group_size = if durable.is_empty() { 1 } else { GROUP_COMMIT };
    let task = tokio::task::spawn_blocking(move || {
        let mut group = Vec::with_capacity(group_size);
        let mut records = records::GroupRecords::new(&durable);
        while let Some(first) = rx.blocking_recv() {
            group.push(first);
            while group.len() < group_size {
                let Ok(next) = rx.try_recv() else { break };
                group.push(next);
            }
            for (request, admitted) in group.iter().enumerate() {
                for part in run_chain(&name, &mut chain, admitted.batch.clone(), &taps, &destinations) {
                    for exporter in destinations.for_route(part.route.as_ref()) {
                        if exporter.durable() {
                            records.add(exporter, request, part.batch.clone());
                        } else {
                            unstored(admitted, exporter.send_blocking(part.batch.clone()));
                        }
                    }
                }
            }
            records.write(|request, reason| unstored(&group[request], Err(reason)));
            for exporter in &durable {
                if let Err(reason) = exporter.sync() {
                    group.iter().for_each(|admitted| unstored(admitted, Err(reason.clone())));
                }
            }
            for admitted in group.drain(..) {
                rx.settle(&admitted);
                // Dropping the pledge keeps it (unless a write broke it): the client hears now.
            }
        }
        tracing::debug!(pipeline = %name, "Pipeline drained");
    });
    (input, task)
}

/// Runs `batch` through `chain`. While someone taps the pipeline, its items are followed through
/// the chain and shown to those watching where it was received, after a plugin, or handed to
/// an exporter; otherwise this costs one atomic load.
fn run_chain(
    name: &ComponentId,
    chain: &mut Chain,
    batch: Arc<crate::batch::Batch>,
    taps: &Taps,
    destinations: &Destinations,
) -> Vec<Routed> {
    let Some(watchers) = taps.on(name.as_str()) else { return chain.run(batch) };
    let signal = batch.signal();
    let (parts, trail) = chain.run_watched(batch.clone(), &watchers);
    let trail = Arc::new(trail);
    let received = Routed { route: None, batch, origin: None };
    watchers
        .offer(&Point::Receiver, signal, |pipeline, point| received.sample(pipeline, point, trail.clone()));
    for part in &parts {
        for exporter in destinations.for_route(part.route.as_ref()) {
            let point = Point::Exporter(exporter.name().to_string());
            watchers.offer(&point, signal, |pipeline, point| part.sample(pipeline, point, trail.clone()));
        }
    }
    parts
}
