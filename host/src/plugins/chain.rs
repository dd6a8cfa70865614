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
use crate::tap::{Origin, Point, Sample, Trail, Watchers};
use crate::topology::diff::{InstanceKey, Snapshot};

/// A batch on its way out of the chain, with the route a router chose (`None`: default).
#[derive(Debug, Clone)]
pub struct Routed {
    /// The route name.
    pub route: Option<Arc<str>>,
    /// The batch.
    pub batch: Arc<Batch>,
    /// Which received item each of its items is, while the pipeline is tapped.
    pub origin: Option<Origin>,
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
        self.run_with(Routed { route: None, batch, origin: None }, None)
    }

    /// Runs `batch` as [`Chain::run`] does, following each item while `watchers` look on: what
    /// is left carries its items' origins, and the returned trail says what each plugin did to
    /// each received item. Those watching after a plugin are offered what it let through and
    /// what it dropped.
    pub fn run_watched(&mut self, batch: Arc<Batch>, watchers: &Watchers) -> (Vec<Routed>, Trail) {
        let origin = crate::tap::received(&batch);
        let mut trail = Trail::new(origin.len());
        let parts =
            self.run_with(Routed { route: None, batch, origin: Some(origin) }, Some((watchers, &mut trail)));
        (parts, trail)
    }

    /// Runs `first` (a received batch, with its origin while watched) through every processor.
    fn run_with(&mut self, first: Routed, mut watch: Option<(&Watchers, &mut Trail)>) -> Vec<Routed> {
        let mut parts = vec![first];
        for stage in &mut self.stages {
            let mut next = Vec::with_capacity(parts.len());
            let point = match &watch {
                Some((watchers, _)) if watchers.want_any_plugin() => {
                    Some(Point::After(stage.name.to_string())).filter(|point| watchers.want(point))
                }
                _ => None,
            };
            let mut seen = Vec::new();
            for part in parts {
                let start = next.len();
                let input = point.is_some().then(|| part.clone());
                stage.process(&self.pipeline, part, &mut next, watch.as_mut().map(|(_, trail)| &mut **trail));
                if let Some(input) = input {
                    seen.extend(next[start..].iter().map(|part| (part.clone(), None)));
                    if let Some(dropped) = dropped_here(&input, &next[start..]) {
                        seen.push((input, Some(dropped)));
                    }
                }
            }
            if let (Some(point), Some((watchers, trail))) = (&point, &watch) {
                let trail = Arc::new((**trail).clone());
                for (part, only) in seen {
                    watchers.offer(point, part.batch.signal(), |pipeline, point| Sample {
                        only,
                        ..part.sample(pipeline, point, trail.clone())
                    });
                }
            }
            parts = next;
            if parts.is_empty() {
                break;
            }
        }
        parts
    }
}

/// The indexes of the items of `input` that none of `out` carries on (dropped here); `None`
/// when every item went on.
fn dropped_here(input: &Routed, out: &[Routed]) -> Option<Vec<u32>> {
    let origin = input.origin.as_ref()?;
    let went_on: std::collections::HashSet<u32> =
        out.iter().flat_map(|part| part.origin.iter().flat_map(|o| o.iter().copied())).collect();
    let only: Vec<u32> =
        (0..origin.len() as u32).filter(|&n| !went_on.contains(&origin[n as usize])).collect();
    (!only.is_empty()).then_some(only)
}

impl Routed {
    /// A tap's sample of this part, its items' fates in `trail`.
    pub fn sample(&self, pipeline: Arc<str>, point: Arc<str>, trail: Arc<Trail>) -> Sample {
        Sample {
            pipeline,
            point,
            signal: self.batch.signal(),
            payload: self.batch.payload().clone(),
            route: self.route.clone(),
            origin: self.origin.clone().unwrap_or_else(|| crate::tap::received(&self.batch)),
            only: None,
            trail,
        }
    }
}

impl Stage {
    /// Runs the plugin on `part` and pushes what comes of it to `out`; with a `trail`, records
    /// what it did to each item and gives each part out its items' origins.
    fn process(
        &mut self,
        pipeline: &ComponentId,
        part: Routed,
        out: &mut Vec<Routed>,
        trail: Option<&mut Trail>,
    ) {
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
        let answer = match step {
            Step::Skipped => unreachable!("handled above"),
            Step::Answered(answer) => answer,
            Step::Faulted(fault) => {
                self.fault(pipeline, fault.kind, &fault.message, part, out, trail);
                return;
            }
        };
        let results = match apply::answer(batch, &answer, &self.limits) {
            Ok(results) => results,
            Err(invalid) => {
                self.fault(pipeline, "invalid_answer", &invalid.0, part, out, trail);
                return;
            }
        };
        let origins = match (trail, &part.origin) {
            (Some(trail), Some(origin)) => trail.follow(&self.name, batch, origin, &answer),
            _ => Vec::new(),
        };
        let mut items_out = 0;
        for (n, (route, applied)) in results.into_iter().enumerate() {
            let route = route.map(Arc::from).or_else(|| part.route.clone());
            let batch = match applied {
                Applied::Unchanged => part.batch.clone(),
                Applied::Changed(batch) => Arc::new(batch),
            };
            items_out += batch.items();
            if batch.items() > 0 {
                out.push(Routed { route, batch, origin: origins.get(n).cloned() });
            }
        }
        self.metrics.items_out.inc_by(items_out);
        self.metrics.items_dropped.inc_by(batch.items().saturating_sub(items_out));
    }

    fn fault(
        &mut self,
        pipeline: &ComponentId,
        kind: &'static str,
        message: &str,
        part: Routed,
        out: &mut Vec<Routed>,
        trail: Option<&mut Trail>,
    ) {
        self.metrics.fault(kind);
        let policy = self.on_error;
        let items = part.batch.items();
        if let (Some(trail), Some(origin)) = (trail, &part.origin) {
            trail.fault(&self.name, origin, kind, policy == OnError::Pass);
        }
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
    fn a_watched_run_follows_every_item_and_shows_what_a_plugin_let_through_and_dropped() {
        use futures::FutureExt as _;

        use crate::tap::{Action, Point, Taps};
        let (config, hashes) = config(
            r#"
            [[pipelines.all.processors]]
            plugin = "{dist}/drop-spans.wasm"
            config = { span_names = ["b"] }
            [[pipelines.all.processors]]
            plugin = "{dist}/set-attributes.wasm"
            config = { resource = [{ key = "system", value = "graphistry" }] }
            [[pipelines.all.processors]]
            plugin = "{dist}/route-by-attribute.wasm"
            config = { attribute = "tenant", routes = { t1 = "one" } }
            [pipelines.all.routes]
            one = ["out"]
            "#,
        );
        let mut chain = build(&config, &hashes, &Metrics::new(), &HashMap::new());
        let taps = Arc::new(Taps::default());
        taps.set_points(crate::tap::points(&config));
        let wanted = crate::tap::Request {
            pipeline: Some("all".into()),
            point: Point::After("drop-spans".into()),
            ..crate::tap::Request::parse("").expect("the defaults")
        };
        let mut after_drop = taps.watch(&wanted).expect("watch");
        let watchers = taps.on("all").expect("watched");
        let (parts, trail) = chain.run_watched(spans(&["a@t1", "b", "c"]), &watchers);

        let actions = |item: u32| -> Vec<(String, Action)> {
            trail.steps(item).iter().map(|step| (step.plugin.to_string(), step.action.clone())).collect()
        };
        let tagged = ("set-attributes".to_string(), Action::Set { key: "system".into(), resource: true });
        assert_eq!(actions(1), [("drop-spans".to_string(), Action::Dropped)]);
        assert_eq!(
            actions(0),
            [tagged.clone(), ("route-by-attribute".to_string(), Action::Routed(Arc::from("one")))]
        );
        assert_eq!(actions(2), [tagged]);
        let mut origins: Vec<(Option<String>, Vec<u32>)> = parts
            .iter()
            .map(|p| {
                (p.route.as_deref().map(str::to_string), p.origin.as_deref().expect("followed").to_vec())
            })
            .collect();
        origins.sort();
        assert_eq!(origins, [(None, vec![2]), (Some("one".to_string()), vec![0])]);

        // After drop-spans: what it let through, then what it dropped (shown alone).
        let kept = after_drop.next().now_or_never().flatten().expect("what it let through");
        assert_eq!((&*kept.origin, kept.only.as_deref()), (&[0, 2][..], None));
        let dropped = after_drop.next().now_or_never().flatten().expect("what it dropped");
        assert_eq!((&*dropped.origin, dropped.only.as_deref()), (&[0, 1, 2][..], Some(&[1][..])));
        assert!(after_drop.next().now_or_never().is_none(), "nothing else: nobody watches later stages");

        let unwatched = chain.run(spans(&["a"]));
        assert!(unwatched.iter().all(|part| part.origin.is_none()), "nothing followed when nobody taps");
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
