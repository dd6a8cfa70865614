//! Constructs what a [`Diff`] says to build, beside the serving topology. Nothing built here
//! serves until [`Topology::commit`](super::running) swaps it in; an error drops it all and
//! leaves the serving topology as it was (except a receiver rebuilt on the same address, which
//! had to let go of its sockets first).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::diff::{Change, Diff, InstanceKey, Snapshot};
use crate::config::{ComponentId, Signal};
use crate::exporters::ExporterInput;
use crate::memory::MemoryGuard;
use crate::metrics::Metrics;
use crate::pipeline::{self, PipelineInput};
use crate::plugins::chain::{Chain, SharedPlugin};
use crate::receivers::ingest::{FeedTable, Feeds};
use crate::tap::Taps;
use crate::{exporters, receivers};

/// A running exporter: the queue pipelines feed, and the task draining it.
pub(super) struct BuiltExporter {
    pub input: ExporterInput,
    pub task: JoinHandle<()>,
}

/// A running pipeline: the queue receivers feed, and the task draining it.
pub(super) struct BuiltPipeline {
    pub input: PipelineInput,
    pub task: JoinHandle<()>,
}

/// A running receiver: the pipelines it feeds (swapped on reload), its listeners or sampler, and
/// the token that stops them.
pub(super) struct BuiltReceiver {
    pub feeds: Feeds,
    pub listeners: Vec<receivers::Listening>,
    /// A sampling receiver's task (the GPU receiver has no listener).
    pub sampler: Option<JoinHandle<()>>,
    pub stop: CancellationToken,
}

impl BuiltReceiver {
    /// Every task that ends once `stop` is cancelled.
    pub fn tasks(self) -> impl Iterator<Item = JoinHandle<()>> {
        self.listeners.into_iter().map(|l| l.task).chain(self.sampler)
    }
}

/// What is serving, by name.
#[derive(Default)]
pub(super) struct Components {
    pub exporters: BTreeMap<ComponentId, BuiltExporter>,
    pub pipelines: BTreeMap<ComponentId, BuiltPipeline>,
    pub receivers: BTreeMap<ComponentId, BuiltReceiver>,
    /// Plugin instances by key, for the next reload to hand over.
    pub instances: HashMap<InstanceKey, SharedPlugin>,
}

/// What a diff's Build entries came to, not yet serving, and what every receiver is to feed.
#[derive(Default)]
pub(super) struct Built {
    pub components: Components,
    pub feeds: BTreeMap<ComponentId, FeedTable>,
}

/// Builds every component `diff` marks [`Change::Build`], wiring it to what `serving` keeps.
/// A receiver rebuilt under the same name is stopped first (it may hold the same address).
/// During a reload (`reloading`), a plugin that cannot be loaded fails the build.
pub(super) async fn build(
    diff: &Diff,
    new: Snapshot<'_>,
    serving: &mut Components,
    (metrics, memory, taps): (&Arc<Metrics>, &Arc<MemoryGuard>, &Arc<Taps>),
    reloading: bool,
) -> anyhow::Result<Built> {
    let config = new.config;
    let mut built = Built::default();

    // Exporters first: pipelines hold their inputs.
    for (id, _) in diff.exporters.iter().filter(|(_, c)| **c == Change::Build) {
        let (input, task) = exporters::spawn(id, &config.exporters[id], config, reloading, metrics).await?;
        built.components.exporters.insert(id.clone(), BuiltExporter { input, task });
    }
    let exporter_input = |name: &str| -> ExporterInput {
        let built = built.components.exporters.get(name).or_else(|| serving.exporters.get(name));
        built.expect("the diff builds or keeps every exporter a pipeline uses").input.clone()
    };

    for (id, _) in diff.pipelines.iter().filter(|(_, c)| **c == Change::Build) {
        let wanted = &config.pipelines[id];
        let inputs = |list: &[serde_spanned::Spanned<String>]| -> Vec<ExporterInput> {
            list.iter().map(|name| exporter_input(name.get_ref())).collect()
        };
        let destinations = pipeline::Destinations {
            default: inputs(wanted.exporters.get_ref()),
            routes: wanted
                .routes
                .iter()
                .map(|(route, list)| (Arc::from(route.as_str()), inputs(list.get_ref())))
                .collect(),
        };
        let reuse: HashMap<InstanceKey, SharedPlugin> = serving
            .instances
            .iter()
            .filter(|(key, _)| diff.instances.get(*key) == Some(&Change::Keep))
            .map(|(key, instance)| (key.clone(), instance.clone()))
            .collect();
        let (pipeline_id, owned, hashes, metrics_) =
            (id.clone(), config.clone(), new.hashes.clone(), metrics.clone());
        // Loading plugins compiles them (or reads the cache): keep it off the runtime.
        let chain = tokio::task::spawn_blocking(move || {
            let snapshot = Snapshot { config: &owned, hashes: &hashes };
            Chain::build(
                &pipeline_id,
                snapshot,
                &metrics_,
                crate::plugins::loader::default_cache_dir(),
                &reuse,
            )
        })
        .await
        .context("building a plugin chain")?;
        if reloading && !chain.load_failures().is_empty() {
            anyhow::bail!("pipeline `{id}`: {}", chain.load_failures().join("; "));
        }
        built.components.instances.extend(chain.instances());
        let (input, task) =
            pipeline::spawn(id.clone(), *wanted.queue_size.get_ref(), chain, destinations, (metrics, taps));
        built.components.pipelines.insert(id.clone(), BuiltPipeline { input, task });
    }

    // What every receiver feeds, from the new pipelines (kept or built).
    for (id, pipeline) in &config.pipelines {
        let input = built.components.pipelines.get(id).or_else(|| serving.pipelines.get(id));
        let input = &input.expect("the diff builds or keeps every pipeline").input;
        let signals: Vec<Signal> = pipeline.signals.iter().map(|s| *s.get_ref()).collect();
        for receiver in pipeline.receivers.get_ref() {
            let receiver = ComponentId::new(receiver.get_ref()).map_err(anyhow::Error::msg)?;
            let table = built.feeds.entry(receiver).or_default();
            for signal in &signals {
                table.0[signal.index()].push(input.clone());
            }
        }
    }

    for (id, _) in diff.receivers.iter().filter(|(_, c)| **c == Change::Build) {
        if let Some(changed) = serving.receivers.remove(id) {
            // Same name, new settings: let go of its addresses before binding again.
            changed.stop.cancel();
            for task in changed.tasks() {
                let _ = task.await;
            }
        }
        let feeds: Feeds = Arc::new(ArcSwap::from_pointee(built.feeds.get(id).cloned().unwrap_or_default()));
        let stop = CancellationToken::new();
        let start = receivers::registry::Start { id, config, feeds: &feeds, metrics, memory, stop: &stop };
        let receivers::registry::Started { listeners, sampler } = config.receivers[id].start(start).await?;
        for listener in &listeners {
            tracing::info!(component = %listener.label, address = %listener.address, "Listening");
        }
        built.components.receivers.insert(id.clone(), BuiltReceiver { feeds, listeners, sampler, stop });
    }
    Ok(built)
}
