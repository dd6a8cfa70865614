//! A pipeline's processor chain: every batch passes each plugin in order, once per batch.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use std::time::Instant;

use super::apply::{self, AnswerLimits, Applied};
use super::runner::{Plugin, Spec, Step};
use crate::batch::Batch;
use crate::config::{ComponentId, OnError};
use crate::log_throttle::LogThrottle;
use crate::metrics::{Metrics, PluginMetrics};
use crate::topology::diff::{InstanceKey, Snapshot};

/// A batch on its way out of the chain, with the route a router chose (`None`: default).
#[derive(Debug, Clone)]
pub struct Routed {
    /// The route name.
    pub route: Option<Arc<str>>,
    /// The batch.
    pub batch: Arc<Batch>,
}

/// A processor a reload can hand from an old chain to a new one, with its live instance.
pub type SharedPlugin = Arc<Mutex<Plugin>>;

struct Stage {
    processor: SharedPlugin,
    name: Arc<str>,
    on_error: OnError,
    /// What its answers may do to a batch.
    limits: AnswerLimits,
    metrics: PluginMetrics,
    faults_log: LogThrottle,
}

/// The processors of one pipeline.
pub struct Chain {
    pipeline: ComponentId,
    stages: Vec<Stage>,
    load_failures: Vec<String>,
    instances: Vec<(InstanceKey, SharedPlugin)>,
}

impl Chain {
    /// Loads every processor of pipeline `id` in `snapshot`, reusing from `reuse` any whose key
    /// (file content and every setting) is unchanged: it keeps its live instance. Never fails: a
    /// plugin that cannot load is faulted and its batches follow its `on_error` until a retry
    /// succeeds; [`Chain::load_failures`] says which, for a reload to refuse.
    pub fn build(
        id: &ComponentId,
        snapshot: Snapshot<'_>,
        metrics: &Metrics,
        cache_dir: Option<PathBuf>,
        reuse: &HashMap<InstanceKey, SharedPlugin>,
    ) -> Self {
        let mut instances = Vec::new();
        let mut load_failures = Vec::new();
        let uses = snapshot.config.plugin_uses();
        let stages = uses
            .iter()
            .filter_map(|plugin| Some((plugin, InstanceKey::of(plugin, snapshot)?)))
            .filter(|(_, key)| &key.pipeline == id)
            .map(|(plugin, key)| {
                let spec = Spec::for_use(plugin, snapshot.config, cache_dir.clone());
                let name = spec.name.clone();
                let metrics = metrics.plugin(id.as_str(), &name);
                let processor = match reuse.get(&key) {
                    Some(existing) => existing.clone(),
                    None => {
                        let (processor, load_fault) = Plugin::new(spec);
                        if let Some(fault) = &load_fault {
                            metrics.fault(fault.kind);
                            load_failures
                                .push(format!("plugin `{name}` cannot be loaded: {}", fault.message));
                        }
                        Arc::new(Mutex::new(processor))
                    }
                };
                instances.push((key, processor.clone()));
                Stage {
                    metrics,
                    processor,
                    name,
                    on_error: plugin.on_error,
                    limits: AnswerLimits::of(&plugin.reference.limits),
                    faults_log: LogThrottle::default(),
                }
            })
            .collect();
        Self { pipeline: id.clone(), stages, load_failures, instances }
    }

    /// The plugin instances, by key, for the next reload to reuse.
    pub fn instances(&self) -> impl Iterator<Item = (InstanceKey, SharedPlugin)> + '_ {
        self.instances.iter().map(|(key, processor)| (key.clone(), processor.clone()))
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
            Step::Answered(answer) => apply::answer(batch, &answer, &self.limits),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{names, plugin, resource_attribute, spans};
    use crate::topology::diff::FileHashes;

    /// A config whose pipeline `all` runs `processors` (TOML, `{dist}` standing for the built
    /// plugins' folder), and its plugin files' hashes.
    fn config(processors: &str) -> (crate::config::Config, FileHashes) {
        let dist = plugin("drop-spans").parent().expect("dist").display().to_string();
        let text = format!(
            "[receivers.otlp]\ntype = \"otlp\"\n[exporters.out]\ntype = \"discard\"\n\
             [pipelines.all]\nreceivers = [\"otlp\"]\nexporters = [\"out\"]\n{}",
            processors.replace("{dist}", &dist)
        );
        let config = crate::config::parse(std::path::Path::new("chain.toml"), &text, &|_| None)
            .unwrap_or_else(|e| panic!("{e}"))
            .config;
        let hashes = FileHashes::read(&config);
        (config, hashes)
    }

    fn build(
        config: &crate::config::Config,
        hashes: &FileHashes,
        metrics: &Metrics,
        reuse: &HashMap<InstanceKey, SharedPlugin>,
    ) -> Chain {
        let id = ComponentId::new("all").expect("valid");
        let cache = crate::plugins::testing::spec("drop-spans", "{}", OnError::Pass).cache_dir;
        Chain::build(&id, Snapshot { config, hashes }, metrics, cache, reuse)
    }

    fn routed(parts: Vec<Routed>) -> Vec<(Option<String>, Vec<String>)> {
        let mut parts: Vec<_> =
            parts.into_iter().map(|p| (p.route.map(|r| r.to_string()), names(&p.batch))).collect();
        parts.sort();
        parts
    }

    #[test]
    fn each_processor_runs_in_order_and_is_counted() {
        let (config, hashes) = config(
            r#"
            [[pipelines.all.processors]]
            plugin = "{dist}/drop-spans.wasm"
            config = { span_names = ["b"] }
            [[pipelines.all.processors]]
            plugin = "{dist}/set-attributes.wasm"
            config = { resource = [{ key = "system", value = "graphistry" }] }
            "#,
        );
        let metrics = Metrics::new();
        let mut chain = build(&config, &hashes, &metrics, &HashMap::new());
        assert!(chain.load_failures().is_empty(), "{:?}", chain.load_failures());
        let parts = chain.run(spans(&["a", "b", "c"]));
        assert_eq!(parts.len(), 1);
        assert_eq!(names(&parts[0].batch), ["a", "c"]);
        assert_eq!(resource_attribute(&parts[0].batch, "system").as_deref(), Some("graphistry"));
        let dropper = metrics.plugin("all", "drop-spans");
        assert_eq!((dropper.items_in.get(), dropper.items_out.get(), dropper.items_dropped.get()), (3, 2, 1));
        assert_eq!(
            metrics.plugin("all", "set-attributes").items_in.get(),
            2,
            "the second sees what the first kept"
        );
    }

    #[test]
    fn a_fault_follows_the_plugins_on_error() {
        for (on_error, expected) in [("pass", vec![(None, vec!["trap".to_string()])]), ("drop", vec![])] {
            let (config, hashes) = config(&format!(
                "[[pipelines.all.processors]]\nplugin = \"{{dist}}/fixture-trap.wasm\"\non_error = \"{on_error}\"\n"
            ));
            let metrics = Metrics::new();
            let mut chain = build(&config, &hashes, &metrics, &HashMap::new());
            assert_eq!(routed(chain.run(spans(&["trap"]))), expected, "on_error = {on_error}");
            let counters = metrics.plugin("all", "fixture-trap");
            assert_eq!(counters.items_dropped.get(), u64::from(on_error == "drop"));
            assert_eq!(counters.items_out.get(), u64::from(on_error == "pass"));
        }
    }

    #[test]
    fn a_router_splits_the_batch_and_later_stages_keep_each_route() {
        let (config, hashes) = config(
            r#"
            [[pipelines.all.processors]]
            plugin = "{dist}/route-by-attribute.wasm"
            config = { attribute = "tenant", routes = { t1 = "one" } }
            [[pipelines.all.processors]]
            plugin = "{dist}/drop-spans.wasm"
            config = { span_names = ["drop-*"] }
            [pipelines.all.routes]
            one = ["out"]
            "#,
        );
        let mut chain = build(&config, &hashes, &Metrics::new(), &HashMap::new());
        let parts = chain.run(spans(&["a@t1", "b", "drop-me@t1", "c@t2"]));
        assert_eq!(
            routed(parts),
            [(None, vec!["b".to_string(), "c".into()]), (Some("one".to_string()), vec!["a".to_string()])]
        );
    }

    #[test]
    fn an_unchanged_instance_is_handed_over_and_a_changed_one_is_not() {
        let processors = |rule: &str| {
            format!(
                "[[pipelines.all.processors]]\nplugin = \"{{dist}}/drop-spans.wasm\"\nconfig = {{ span_names = [\"x\"] }}\n\
                 [[pipelines.all.processors]]\nplugin = \"{{dist}}/set-attributes.wasm\"\n\
                 config = {{ resource = [{{ key = \"rule\", value = \"{rule}\" }}] }}\n"
            )
        };
        let metrics = Metrics::new();
        let (first_config, hashes) = config(&processors("one"));
        let first = build(&first_config, &hashes, &metrics, &HashMap::new());
        let reuse: HashMap<InstanceKey, SharedPlugin> = first.instances().collect();
        let (second_config, hashes) = config(&processors("two"));
        let second = build(&second_config, &hashes, &metrics, &reuse);
        let same: Vec<bool> = first
            .stages
            .iter()
            .zip(&second.stages)
            .map(|(a, b)| Arc::ptr_eq(&a.processor, &b.processor))
            .collect();
        assert_eq!(same, [true, false]);
    }
}
