//! Builds the running host from a config, rebuilds what a new config changes, and takes it all
//! down in order.
//!
//! Start-up goes from the far end inwards — admin, exporters, pipelines, receivers — so nothing
//! accepts data before the stage it feeds exists. Shutdown goes the other way: receivers stop
//! accepting and finish their in-flight requests, then each stage drains its queue into the next
//! as the stage before it lets go of its sending side. Everything acknowledged to a client is
//! therefore exported before the process exits, unless the grace period runs out first.
//!
//! A reload builds the new topology beside the old one, reusing every component whose settings
//! are unchanged — a receiver keeps its sockets, an exporter its queue, connections and retries,
//! a pipeline its queue and plugin instances — and then swaps each receiver's routes atomically.
//! Batches already accepted finish on the pipelines they entered; the replaced pipelines and
//! exporters drain and stop on their own. A reload that fails leaves the old topology serving.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState, ReloadRequest};
use crate::config::{
    ComponentId, Config, ExporterConfig, ExporterKind, Loaded, PipelineConfig, ReceiverConfig, Signal,
};
use crate::exporters::ExporterInput;
use crate::metrics::{Metrics, PerSignal};
use crate::pipeline::PipelineInput;
use crate::plugins::chain::{Chain, ProcessorKey, SharedProcessor};
use crate::receivers::ingest::Routes;
use crate::{exporters, pipeline, receivers};

struct BuiltExporter {
    config: ExporterConfig,
    /// SHA-256 of an exporter plugin's file, so a rebuilt `.wasm` counts as a change.
    plugin_hash: Option<String>,
    input: ExporterInput,
    task: JoinHandle<()>,
}

struct BuiltPipeline {
    config: PipelineConfig,
    /// SHA-256 of each plugin file, so a rebuilt `.wasm` at the same path counts as a change.
    plugin_hashes: Vec<String>,
    input: PipelineInput,
    task: JoinHandle<()>,
}

struct BuiltReceiver {
    config: ReceiverConfig,
    routes: Routes,
    listeners: Vec<receivers::Listening>,
    /// A sampling receiver's task (the GPU receiver has no listener).
    sampler: Option<JoinHandle<()>>,
    stop: CancellationToken,
}

impl BuiltReceiver {
    /// Every task that ends once `stop` is cancelled.
    fn tasks(self) -> impl Iterator<Item = JoinHandle<()>> {
        self.listeners.into_iter().map(|l| l.task).chain(self.sampler)
    }
}

/// The components currently serving.
#[derive(Default)]
struct Topology {
    exporters: BTreeMap<ComponentId, BuiltExporter>,
    pipelines: BTreeMap<ComponentId, BuiltPipeline>,
    receivers: BTreeMap<ComponentId, BuiltReceiver>,
    /// Replaced components finishing their work.
    draining: Vec<JoinHandle<()>>,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Components built anew, as `kind name`.
    pub rebuilt: Vec<String>,
    /// Components kept as they were.
    pub kept: Vec<String>,
    /// Components removed.
    pub removed: Vec<String>,
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |items: &[String]| if items.is_empty() { "none".to_string() } else { items.join(", ") };
        write!(
            f,
            "rebuilt: {}; kept: {}; removed: {}",
            list(&self.rebuilt),
            list(&self.kept),
            list(&self.removed)
        )
    }
}

/// A host that is serving.
pub struct Running {
    config: Config,
    /// SHA-256 of the serving config file's text.
    config_sha256: String,
    config_path: Option<PathBuf>,
    /// Files a refused reload's config named beyond the serving config's: watched too, so
    /// fixing (or building) one of them triggers the next try.
    refused_files: Vec<PathBuf>,
    metrics: Arc<Metrics>,
    admin: Arc<AdminState>,
    admin_address: SocketAddr,
    admin_stop: CancellationToken,
    admin_task: JoinHandle<()>,
    topology: Topology,
    /// Plugin instances by pipeline, name, file and settings, for reloads to reuse.
    processors: HashMap<ProcessorKey, SharedProcessor>,
}

fn plugin_hashes(config: &Config, pipeline: &PipelineConfig) -> Vec<String> {
    pipeline
        .processors
        .iter()
        .map(|p| crate::plugins::loader::file_sha256(&config.resolve(p.plugin.get_ref())))
        .collect()
}

fn exporters_of(pipeline: &PipelineConfig) -> impl Iterator<Item = &str> {
    let routes = pipeline.routes.values().flat_map(|list| list.get_ref());
    pipeline.exporters.get_ref().iter().chain(routes).map(|name| name.get_ref().as_str())
}

impl Running {
    /// The admin listener's bound address.
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
    }

    /// Each receiver listener's label and bound address.
    pub fn receiver_addresses(&self) -> Vec<(String, SocketAddr)> {
        self.topology
            .receivers
            .values()
            .flat_map(|r| &r.listeners)
            .map(|l| (l.label.clone(), l.address))
            .collect()
    }

    /// Builds what `config` describes, reusing what `self.topology` already has unchanged.
    /// On error, everything built for the attempt is dropped and the old topology is untouched
    /// (except receivers whose settings changed on the same address, which had to let go of it).
    async fn apply(&mut self, config: &Config, reloading: bool) -> anyhow::Result<ReloadSummary> {
        let mut summary = ReloadSummary::default();
        let old = &mut self.topology;

        // Exporters first: pipelines hold their inputs.
        let mut exporters: BTreeMap<ComponentId, BuiltExporter> = BTreeMap::new();
        for pipeline in config.pipelines.values() {
            for name in exporters_of(pipeline) {
                let id = ComponentId::new(name).map_err(anyhow::Error::msg)?;
                if exporters.contains_key(&id) {
                    continue;
                }
                let wanted = &config.exporters[&id];
                let plugin_hash = match &wanted.kind {
                    ExporterKind::Plugin(plugin) => {
                        Some(crate::plugins::loader::file_sha256(&config.resolve(plugin.plugin.get_ref())))
                    }
                    _ => None,
                };
                let built = match old.exporters.get(&id) {
                    Some(existing) if &existing.config == wanted && existing.plugin_hash == plugin_hash => {
                        summary.kept.push(format!("exporter {id}"));
                        BuiltExporter {
                            config: wanted.clone(),
                            plugin_hash,
                            input: existing.input.clone(),
                            task: tokio::spawn(async {}),
                        }
                    }
                    _ => {
                        let (input, task) =
                            exporters::spawn(&id, wanted, config, reloading, &self.metrics).await?;
                        summary.rebuilt.push(format!("exporter {id}"));
                        BuiltExporter { config: wanted.clone(), plugin_hash, input, task }
                    }
                };
                exporters.insert(id, built);
            }
        }

        let mut pipelines: BTreeMap<ComponentId, BuiltPipeline> = BTreeMap::new();
        let mut processors: HashMap<ProcessorKey, SharedProcessor> = HashMap::new();
        for (id, wanted) in &config.pipelines {
            let hashes = plugin_hashes(config, wanted);
            let exporters_kept =
                exporters_of(wanted).all(|name| summary.kept.contains(&format!("exporter {name}")));
            let reuse = old
                .pipelines
                .get(id)
                .filter(|p| p.config == *wanted && p.plugin_hashes == hashes && exporters_kept);
            let built = match reuse {
                Some(existing) => {
                    summary.kept.push(format!("pipeline {id}"));
                    let prefix = format!("{id}\u{0}");
                    let kept = self.processors.iter().filter(|(key, _)| key.belongs_to(&prefix));
                    processors.extend(kept.map(|(key, processor)| (key.clone(), processor.clone())));
                    BuiltPipeline {
                        config: wanted.clone(),
                        plugin_hashes: hashes,
                        input: existing.input.clone(),
                        task: tokio::spawn(async {}),
                    }
                }
                None => {
                    let inputs = |list: &[serde_spanned::Spanned<String>]| -> Vec<ExporterInput> {
                        list.iter().map(|name| exporters[name.get_ref().as_str()].input.clone()).collect()
                    };
                    let destinations = pipeline::Destinations {
                        default: inputs(wanted.exporters.get_ref()),
                        routes: wanted
                            .routes
                            .iter()
                            .map(|(route, list)| (Arc::from(route.as_str()), inputs(list.get_ref())))
                            .collect(),
                    };
                    let (chain, metrics) = (config.clone(), self.metrics.clone());
                    let pipeline_id = id.clone();
                    let (previous, file_hashes) = (self.processors.clone(), hashes.clone());
                    // Loading plugins compiles them (or reads the cache): keep it off the runtime.
                    let chain = tokio::task::spawn_blocking(move || {
                        let cache = crate::plugins::loader::default_cache_dir();
                        Chain::build(&pipeline_id, &chain, &metrics, cache, &previous, &file_hashes)
                    })
                    .await?;
                    processors.extend(chain.shared_processors());
                    if reloading && !chain.load_failures().is_empty() {
                        anyhow::bail!("pipeline `{id}`: {}", chain.load_failures().join("; "));
                    }
                    let (input, task) = pipeline::spawn(
                        id.clone(),
                        *wanted.queue_size.get_ref(),
                        chain,
                        destinations,
                        &self.metrics,
                    );
                    summary.rebuilt.push(format!("pipeline {id}"));
                    BuiltPipeline { config: wanted.clone(), plugin_hashes: hashes, input, task }
                }
            };
            pipelines.insert(id.clone(), built);
        }

        // Routes per receiver, from the new pipelines.
        let mut routes: BTreeMap<ComponentId, PerSignal<Vec<PipelineInput>>> = BTreeMap::new();
        for (id, pipeline) in &config.pipelines {
            let signals: Vec<Signal> = pipeline.signals.iter().map(|s| *s.get_ref()).collect();
            for receiver in pipeline.receivers.get_ref() {
                let receiver = ComponentId::new(receiver.get_ref()).map_err(anyhow::Error::msg)?;
                let per_signal = routes.entry(receiver).or_default();
                for signal in &signals {
                    per_signal.0[signal.index()].push(pipelines[id].input.clone());
                }
            }
        }

        // Receivers: bind what is new or changed; keep the rest.
        let mut receivers_built: BTreeMap<ComponentId, BuiltReceiver> = BTreeMap::new();
        let mut swaps: Vec<(Routes, PerSignal<Vec<PipelineInput>>)> = Vec::new();
        for (id, per_signal) in routes {
            let wanted = &config.receivers[&id];
            if let Some(existing) = old.receivers.get(&id)
                && existing.config == *wanted
            {
                summary.kept.push(format!("receiver {id}"));
                swaps.push((existing.routes.clone(), per_signal));
                continue;
            }
            if let Some(changed) = old.receivers.remove(&id) {
                // Same name, new settings: let go of its addresses before binding again.
                changed.stop.cancel();
                for task in changed.tasks() {
                    let _ = task.await;
                }
            }
            let route_cell: Routes = Arc::new(ArcSwap::from_pointee(per_signal));
            let stop = CancellationToken::new();
            let (listeners, sampler) = match wanted {
                ReceiverConfig::Otlp(otlp) => {
                    (receivers::start(&id, otlp, &route_cell, &self.metrics, &stop).await?, None)
                }
                ReceiverConfig::Gpu(gpu) => {
                    let task = receivers::gpu::start(&id, gpu, config, &route_cell, &self.metrics, &stop)
                        .map_err(|e| anyhow::anyhow!("receiver `{id}`: {e}"))?;
                    (Vec::new(), Some(task))
                }
            };
            for listener in &listeners {
                tracing::info!(component = %listener.label, address = %listener.address, "Listening");
            }
            summary.rebuilt.push(format!("receiver {id}"));
            let built =
                BuiltReceiver { config: wanted.clone(), routes: route_cell, listeners, sampler, stop };
            receivers_built.insert(id, built);
        }

        // Commit: from here on nothing fails.
        for (cell, per_signal) in swaps {
            cell.store(Arc::new(per_signal));
        }
        for (id, existing) in std::mem::take(&mut old.receivers) {
            // Changed receivers were taken out above; what is left is kept or removed.
            if summary.kept.contains(&format!("receiver {id}")) {
                receivers_built.insert(id, existing);
            } else {
                summary.removed.push(format!("receiver {id}"));
                existing.stop.cancel();
                old.draining.extend(existing.tasks());
            }
        }
        for (id, existing) in std::mem::take(&mut old.pipelines) {
            match pipelines.get_mut(&id) {
                // Kept: carry its task over (the new entry holds a placeholder).
                Some(new) if summary.kept.contains(&format!("pipeline {id}")) => new.task = existing.task,
                _ => {
                    if !config.pipelines.contains_key(&id) {
                        summary.removed.push(format!("pipeline {id}"));
                    }
                    // Its queue closes once in-flight requests let go; then it drains and ends.
                    old.draining.push(existing.task);
                }
            }
        }
        for (id, existing) in std::mem::take(&mut old.exporters) {
            match exporters.get_mut(&id) {
                Some(new) if summary.kept.contains(&format!("exporter {id}")) => new.task = existing.task,
                _ => {
                    if !exporters.contains_key(&id) {
                        summary.removed.push(format!("exporter {id}"));
                    }
                    old.draining.push(existing.task);
                }
            }
        }
        old.exporters = exporters;
        old.pipelines = pipelines;
        self.processors = processors;
        old.receivers = receivers_built;
        old.draining.retain(|task| !task.is_finished());
        self.config = config.clone();
        Ok(summary)
    }

    /// Every file whose change should trigger a reload, besides the config itself.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = self.config.plugin_files();
        files.extend(self.refused_files.iter().cloned());
        files.sort();
        files.dedup();
        files
    }

    /// Reloads from the config file: validate, build beside, swap. Refuses changes that can't
    /// be applied live.
    pub async fn reload(&mut self) -> Result<ReloadSummary, String> {
        let Some(path) = self.config_path.clone() else {
            return Err("this host was not started from a file".into());
        };
        let outcome = self.reload_from(&path).await;
        let result = if outcome.is_ok() { "success" } else { "failure" };
        self.metrics.reload(result);
        match &outcome {
            Ok(summary) => {
                self.refused_files.clear();
                tracing::info!(config = %path.display(), sha256 = %self.config_sha256, "Reloaded: {summary}")
            }
            Err(error) => {
                // Watch what the refused file names too: fixing a plugin it names is a change.
                self.refused_files = crate::config::load_file(&path, None)
                    .map(|loaded| loaded.config.plugin_files())
                    .unwrap_or_default();
                tracing::error!(config = %path.display(), "Reload failed; the previous configuration keeps serving:\n{error}")
            }
        }
        *self.admin.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(admin::ReloadOutcome {
            result: outcome.as_ref().map(ToString::to_string).map_err(Clone::clone),
            serving_sha256: self.config_sha256.clone(),
        });
        outcome
    }

    async fn reload_from(&mut self, path: &Path) -> Result<ReloadSummary, String> {
        let preflight = crate::plugins::runner::Preflight;
        let loaded = crate::config::load_file(path, Some(&preflight)).map_err(|e| e.to_string())?;
        let new = loaded.config;
        if new.service.admin_address != self.config.service.admin_address {
            return Err(format!(
                "`service.admin_address` changed from {} to {}: the admin listener can't move while serving; restart to apply",
                self.config.service.admin_address.get_ref(),
                new.service.admin_address.get_ref()
            ));
        }
        if new.service.log_level != self.config.service.log_level {
            return Err(format!(
                "`service.log_level` changed from {} to {}: the log level is set at start (SLUICE_LOG overrides it); restart to apply",
                self.config.service.log_level.as_str(),
                new.service.log_level.as_str()
            ));
        }
        for warning in &loaded.warnings {
            tracing::warn!(config = %path.display(), "{warning}");
        }
        let summary = self.apply(&new, true).await.map_err(|e| format!("{e:#}"))?;
        self.config_sha256 = loaded.sha256;
        Ok(summary)
    }

    /// Stops accepting, drains every queue into the exporters, flushes them, and stops the
    /// admin listener. Fails if the grace period runs out first (queued data is then lost).
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.admin.ready.store(false, Ordering::Release);
        let grace = self.config.service.shutdown_grace.0;
        let topology = std::mem::take(&mut self.topology);
        let drain = async move {
            let mut tasks = Vec::new();
            for receiver in topology.receivers.into_values() {
                receiver.stop.cancel();
                tasks.extend(receiver.tasks());
            }
            for task in tasks {
                let _ = task.await;
            }
            // Receivers are gone; dropping our inputs lets each pipeline, then exporter, finish.
            let pipelines: Vec<_> = topology.pipelines.into_values().map(|p| p.task).collect();
            let exporters: Vec<_> = topology.exporters.into_values().map(|e| e.task).collect();
            for task in topology.draining.into_iter().chain(pipelines).chain(exporters) {
                let _ = task.await;
            }
        };
        let drained = tokio::time::timeout(grace, drain).await;
        self.admin_stop.cancel();
        let _ = (&mut self.admin_task).await;
        drained.map_err(|_| {
            // Everything taken on and not settled: queued, in a plugin, in a request, or waiting
            // to retry. An item on its way from a pipeline to an exporter counts in both.
            let queued = self.metrics.queue_depth_total();
            let (in_pipelines, in_exporters) = self.metrics.pending_items_total();
            tracing::error!(
                queued_batches = queued,
                pipeline_items = in_pipelines,
                exporter_items = in_exporters,
                ?grace,
                "Shutdown grace period ran out; data not yet delivered is lost"
            );
            anyhow::anyhow!(
                "shutdown grace period of {grace:?} ran out with {in_exporters} items not yet delivered by \
                 exporters (queued or being retried) and {in_pipelines} items still in pipelines"
            )
        })
    }
}

/// Starts everything `loaded` describes and marks the host ready. `config_path` is where
/// reloads read from.
pub async fn start(
    loaded: &Loaded,
    config_path: Option<&Path>,
) -> anyhow::Result<(Running, mpsc::Receiver<ReloadRequest>)> {
    let config = &loaded.config;
    let metrics = Arc::new(Metrics::new());
    let (reload_tx, reload_rx) = mpsc::channel(8);
    let admin = Arc::new(AdminState {
        metrics: metrics.clone(),
        ready: false.into(),
        reload: reload_tx,
        serving_sha256: loaded.sha256.clone(),
        last_reload: Default::default(),
    });
    let admin_stop = CancellationToken::new();
    let admin_listener = receivers::serve(
        "the admin listener".into(),
        config.service.admin_address.get_ref().0,
        admin::router(admin.clone()),
        &admin_stop,
    )
    .await?;
    let mut running = Running {
        config: config.clone(),
        config_sha256: loaded.sha256.clone(),
        config_path: config_path.map(Path::to_path_buf),
        refused_files: Vec::new(),
        metrics,
        admin: admin.clone(),
        admin_address: admin_listener.address,
        admin_stop,
        admin_task: admin_listener.task,
        topology: Topology::default(),
        processors: HashMap::new(),
    };
    if let Err(error) = running.apply(config, false).await {
        running.admin_stop.cancel();
        return Err(error);
    }
    tracing::info!(address = %running.admin_address, "Admin listener serving /healthz, /readyz, /metrics, /reload");
    admin.ready.store(true, Ordering::Release);
    tracing::info!(
        receivers = running.topology.receivers.len(),
        pipelines = running.topology.pipelines.len(),
        exporters = running.topology.exporters.len(),
        "Sluice is ready"
    );
    Ok((running, reload_rx))
}

/// Runs the host until `stop` resolves, reloading on SIGHUP, `POST /reload` and changes to the
/// config file or the plugins it names; then shuts down gracefully.
pub async fn run(loaded: &Loaded, config_path: &Path, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let (mut running, mut reloads) = start(loaded, Some(config_path)).await.context("cannot start")?;
    let mut watcher = crate::reload::Watcher::new(config_path, running.watched_files());
    let mut hangups = crate::reload::hangups();
    tokio::pin!(stop);
    loop {
        let reply: Option<oneshot::Sender<Result<String, String>>> = tokio::select! {
            () = &mut stop => break,
            request = reloads.recv() => match request {
                Some(request) => Some(request.reply),
                None => continue,
            },
            () = hangups.recv() => {
                tracing::info!("Received SIGHUP; reloading");
                None
            }
            () = watcher.changed() => {
                tracing::info!(config = %config_path.display(), "Configuration or plugin files changed; reloading");
                None
            }
        };
        let before = watcher.look();
        let outcome = running.reload().await;
        watcher.rewatch(running.watched_files(), before);
        if let Some(reply) = reply {
            let _ = reply.send(outcome.map(|summary| summary.to_string()));
        }
    }
    tracing::info!("Shutting down: no longer accepting, draining queues");
    running.shutdown().await?;
    tracing::info!("Shutdown complete");
    Ok(())
}
