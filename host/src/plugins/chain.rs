//! A pipeline's processor chain: every batch passes each plugin in order, once per batch.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use std::time::Instant;

use super::apply::{self, Applied};
use super::runner::{Answer, Processor, Spec, Step};
use crate::config::{ComponentId, Config, OnError, PluginPlace};
use crate::log_throttle::LogThrottle;
use crate::metrics::{Metrics, PluginMetrics};
use crate::otlp::Batch;

/// A batch on its way out of the chain, with the route a router chose (`None`: default).
#[derive(Debug, Clone)]
pub struct Routed {
    /// The route name.
    pub route: Option<Arc<str>>,
    /// The batch.
    pub batch: Arc<Batch>,
}

/// A processor a reload can hand from an old chain to a new one, with its live instance.
pub type SharedProcessor = Arc<Mutex<Processor>>;

/// What makes two processors the same: pipeline, name, file content and every setting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcessorKey(String);

impl ProcessorKey {
    /// Whether the key is for a processor of the pipeline whose `{id}\0` prefix is given.
    pub fn belongs_to(&self, pipeline_prefix: &str) -> bool {
        self.0.starts_with(pipeline_prefix)
    }

    fn new(pipeline: &ComponentId, name: &str, spec: &Spec, sha256: &str) -> Self {
        Self(format!(
            "{pipeline}\u{0}{name}\u{0}{}\u{0}{sha256}\u{0}{}\u{0}{}\u{0}{:?}\u{0}{:?}\u{0}{:?}\u{0}{:?}",
            spec.path.display(),
            spec.config_json,
            spec.max_memory,
            spec.timeout,
            spec.on_error,
            spec.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            spec.pin,
        ))
    }
}

struct Stage {
    processor: SharedProcessor,
    name: Arc<str>,
    on_error: OnError,
    metrics: PluginMetrics,
    faults_log: LogThrottle,
}

/// The processors of one pipeline.
pub struct Chain {
    pipeline: ComponentId,
    stages: Vec<Stage>,
    load_failures: Vec<String>,
    shared: Vec<(ProcessorKey, SharedProcessor)>,
}

impl Chain {
    /// Loads every processor of `pipeline`, reusing from `previous` any whose file and settings
    /// are unchanged (it keeps its instance). `hashes` holds each plugin file's SHA-256, in
    /// processor order, as [`loader::file_sha256`](super::loader::file_sha256) gives it. Never fails: a plugin that cannot load is faulted
    /// and its batches follow its `on_error` until a retry succeeds.
    pub fn build(
        id: &ComponentId,
        config: &Config,
        metrics: &Metrics,
        cache_dir: Option<PathBuf>,
        previous: &HashMap<ProcessorKey, SharedProcessor>,
        hashes: &[String],
    ) -> Self {
        let mut shared = Vec::new();
        let mut load_failures = Vec::new();
        let uses = config.plugin_uses();
        let in_pipeline = uses
            .iter()
            .filter(|u| matches!(&u.place, PluginPlace::Processor { pipeline, .. } if pipeline == id));
        let stages = in_pipeline
            .zip(hashes)
            .map(|(p, sha256)| {
                let spec = Spec::for_use(p, config, cache_dir.clone());
                let name = spec.name.clone();
                let key = ProcessorKey::new(id, &name, &spec, sha256);
                let metrics = metrics.plugin(id.as_str(), &name);
                let processor = match previous.get(&key) {
                    Some(existing) => existing.clone(),
                    None => {
                        let (processor, load_fault) = Processor::new(spec);
                        if let Some(fault) = &load_fault {
                            metrics.fault(fault.kind);
                            load_failures
                                .push(format!("plugin `{name}` cannot be loaded: {}", fault.message));
                        }
                        Arc::new(Mutex::new(processor))
                    }
                };
                shared.push((key, processor.clone()));
                Stage { metrics, processor, name, on_error: p.on_error, faults_log: LogThrottle::default() }
            })
            .collect();
        Self { pipeline: id.clone(), stages, load_failures, shared }
    }

    /// The processors, for the next reload to reuse.
    pub fn shared_processors(&self) -> Vec<(ProcessorKey, SharedProcessor)> {
        self.shared.clone()
    }

    /// Why plugins failed to load, one line each. At start-up such a plugin is faulted and its
    /// batches follow `on_error`; a reload refuses the new chain and keeps the old one.
    pub fn load_failures(&self) -> &[String] {
        &self.load_failures
    }

    /// Whether the chain has no processors.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Runs `batch` through every processor; returns what is left, by route.
    pub fn run(&mut self, batch: Arc<Batch>) -> Vec<Routed> {
        let mut parts = vec![Routed { route: None, batch }];
        for stage in &mut self.stages {
            let mut next = Vec::with_capacity(parts.len());
            for part in parts {
                stage.process(&self.pipeline, part, &mut next);
            }
            parts = next;
            if parts.is_empty() {
                break;
            }
        }
        parts
    }
}

impl Stage {
    fn process(&mut self, pipeline: &ComponentId, part: Routed, out: &mut Vec<Routed>) {
        let batch = &part.batch;
        let started = Instant::now();
        // Uncontended except during a reload, while the old chain finishes its last batches.
        let step = self
            .processor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .run(batch.signal(), batch.payload());
        if matches!(step, Step::Skipped) {
            out.push(part);
            return;
        }
        self.metrics.calls.inc();
        self.metrics.duration.observe(started.elapsed().as_secs_f64());
        self.metrics.items_in.inc_by(batch.items());
        let applied = match step {
            Step::Skipped => unreachable!("handled above"),
            Step::Answered(Answer::Drop(dropped)) => {
                apply::drop_items(batch, dropped).map(|a| vec![(None, a)])
            }
            Step::Answered(Answer::Edit(edits)) => apply::edit(batch, &edits).map(|a| vec![(None, a)]),
            Step::Answered(Answer::Route(routing)) => apply::route(batch, &routing),
            // Loading refuses exporter plugins in a chain, so this answer can't arrive here.
            Step::Answered(Answer::Requests(_)) => {
                Err(apply::InvalidAnswer("an exporter plugin answered in a processor chain".into()))
            }
            Step::Faulted(fault) => {
                self.fault(pipeline, fault.kind, &fault.message, part, out);
                return;
            }
        };
        match applied {
            Ok(results) => {
                let mut items_out = 0;
                for (route, applied) in results {
                    let route = route.map(Arc::from).or_else(|| part.route.clone());
                    let batch = match applied {
                        Applied::Unchanged => part.batch.clone(),
                        Applied::Changed(batch) => Arc::new(batch),
                    };
                    items_out += batch.items();
                    if batch.items() > 0 {
                        out.push(Routed { route, batch });
                    }
                }
                self.metrics.items_out.inc_by(items_out);
                self.metrics.items_dropped.inc_by(batch.items().saturating_sub(items_out));
            }
            Err(invalid) => self.fault(pipeline, "invalid_answer", &invalid.0, part, out),
        }
    }

    fn fault(
        &mut self,
        pipeline: &ComponentId,
        kind: &'static str,
        message: &str,
        part: Routed,
        out: &mut Vec<Routed>,
    ) {
        self.metrics.fault(kind);
        let policy = self.on_error;
        let items = part.batch.items();
        match policy {
            OnError::Pass => {
                self.metrics.items_out.inc_by(items);
                out.push(part);
            }
            OnError::Drop => {
                self.metrics.items_dropped.inc_by(items);
            }
        }
        if let Some(suppressed) = self.faults_log.check() {
            let plugin = &self.name;
            let action = match policy {
                OnError::Pass => "passed on unchanged",
                OnError::Drop => "dropped",
            };
            tracing::error!(
                %pipeline, %plugin, kind, on_error = policy.as_str(), items, similar_faults_not_logged = suppressed,
                "Plugin fault; batch {action}: {message}"
            );
        }
    }
}
