//! One plugin in one pipeline: its compiled component, its live instance, and what happens
//! when it faults.
//!
//! An instance lives across calls (its store, memory and `init` state are reused). A trap,
//! deadline overrun or out-of-memory discards it; the next batch gets a fresh instance, and a
//! plugin that keeps failing waits longer and longer (100 ms doubling to 30 s) before the next
//! try, its batches following `on_error` meanwhile. A plugin that cannot even be loaded (not
//! Wasm, wrong world, pin mismatch) is retried from disk on the same schedule.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime::{Store, Trap};

use super::bindings::v1::{exporter, filter, router, transform};
use super::bindings::{types, v2};
use super::loader::{self, Contract, Kind, LoadError};
use super::sandbox::{self, StoreState};
use super::view::{self, BatchView};
use crate::config::{Config, OnError, PluginPlace, PluginUse, Signal};
use crate::log_throttle::LogThrottle;

/// Everything needed to build a processor.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Name in logs and metrics.
    pub name: Arc<str>,
    /// The `.wasm` file.
    pub path: PathBuf,
    /// Expected SHA-256, if pinned.
    pub pin: Option<String>,
    /// The plugin's config as JSON text.
    pub config_json: String,
    /// Memory cap in bytes.
    pub max_memory: usize,
    /// Per-call deadline.
    pub timeout: Duration,
    /// Deadline for creating an instance and running its `init`.
    pub init_timeout: Duration,
    /// What a fault does to the batch.
    pub on_error: OnError,
    /// Environment variables granted to the plugin (name, value).
    pub env: Vec<(String, String)>,
    /// Where compiled components are cached.
    pub cache_dir: Option<PathBuf>,
    /// The worlds this place accepts.
    pub accepts: Accepts,
}

impl Spec {
    /// The spec of a plugin as `config` uses it, loaded from `cache_dir`'s compiled components.
    pub fn for_use(use_: &PluginUse<'_>, config: &Config, cache_dir: Option<PathBuf>) -> Self {
        Spec {
            name: Arc::from(use_.name.as_str()),
            path: config.resolve(use_.reference.plugin.get_ref()),
            pin: use_.reference.sha256.as_ref().map(|s| s.get_ref().clone()),
            config_json: use_.config_json(),
            max_memory: use_.reference.limits.memory.get_ref().as_usize(),
            timeout: use_.reference.limits.timeout.get_ref().0,
            init_timeout: use_.reference.limits.init_timeout.get_ref().0,
            on_error: use_.on_error,
            env: granted_env(&use_.reference.env),
            cache_dir,
            accepts: match use_.place {
                PluginPlace::Processor { .. } => Accepts::Processors,
                PluginPlace::Exporter(_) => Accepts::Exporters,
            },
        }
    }
}

impl Spec {
    /// A plugin run on its own, outside any config (`sluice plugin test`): any world, generous
    /// limits (64 MiB, 5 s a call and to start), no environment, faults passed on.
    pub fn standalone(path: &std::path::Path, config_json: &str) -> Self {
        Spec {
            name: Arc::from(path.file_stem().map_or("plugin".into(), |s| s.to_string_lossy().into_owned())),
            path: path.to_path_buf(),
            pin: None,
            config_json: config_json.to_string(),
            max_memory: 64 << 20,
            timeout: Duration::from_secs(5),
            init_timeout: Duration::from_secs(5),
            on_error: OnError::Pass,
            env: Vec::new(),
            cache_dir: loader::default_cache_dir(),
            accepts: Accepts::Any,
        }
    }
}

/// Loads each plugin of a config and initializes it with its settings, in the sandbox, without
/// keeping it: what `sluice validate`, start-up and every reload run before anything is built,
/// so a plugin that refuses its settings is a config error rather than a fault at the first
/// batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Preflight;

impl crate::config::PluginCheck for Preflight {
    fn check(&self, config: &Config, plugin: &PluginUse<'_>) -> Result<(), String> {
        let spec = Spec::for_use(plugin, config, loader::default_cache_dir());
        let mut instance = Plugin::unloaded(spec);
        instance.load(false).and_then(|()| instance.instantiate()).map(drop).map_err(|fault| fault.message)
    }
}

/// The environment variables a plugin's `env = [...]` grants it, as they are set now (unset
/// ones are left out: the plugin sees them as absent).
pub fn granted_env(names: &[serde_spanned::Spanned<String>]) -> Vec<(String, String)> {
    names
        .iter()
        .filter_map(|name| std::env::var(name.get_ref()).ok().map(|value| (name.get_ref().clone(), value)))
        .collect()
}

/// Which plugin worlds a place in the config accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    /// A pipeline's `processors`: filter, transform, router.
    Processors,
    /// An exporter with `type = "plugin"`: the exporter world.
    Exporters,
    /// Any world (`sluice plugin test`).
    Any,
}

impl Accepts {
    /// Why `kind` doesn't belong here, if it doesn't.
    fn refusal(self, kind: Kind) -> Option<String> {
        match self {
            Accepts::Processors if !kind.is_processor() => Some(
                "it implements the `exporter` world: use it as an exporter (`type = \"plugin\"` under \
                 [exporters]), not in a pipeline's `processors`"
                    .into(),
            ),
            Accepts::Exporters if kind.is_processor() => Some(format!(
                "it implements the `{}` world: use it in a pipeline's `processors`; an exporter \
                 plugin implements the `exporter` world",
                kind.as_str()
            )),
            _ => None,
        }
    }
}

/// A plugin's answer for one batch.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Indexes of the items to drop.
    Drop(Vec<u32>),
    /// Edits to apply.
    Edit(Vec<types::Edit>),
    /// Routes per item.
    Route(types::Routing),
    /// Requests to send (exporter plugins).
    Requests(Vec<types::HttpRequest>),
}

/// Why a call produced no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `trap`, `deadline`, `memory`, `error`, `init`, `unavailable`, or a load failure kind.
    pub kind: &'static str,
    /// What happened, for the log.
    pub message: String,
}

/// What running a plugin on a batch came to.
#[derive(Debug)]
pub enum Step {
    /// The plugin doesn't handle this signal; it was not called.
    Skipped,
    /// It answered.
    Answered(Answer),
    /// It failed; the batch follows `on_error`.
    Faulted(Fault),
}

/// A linked component, per world and contract version.
enum Pre {
    Filter(filter::FilterPre<StoreState>),
    Transform(transform::TransformPre<StoreState>),
    Router(router::RouterPre<StoreState>),
    Exporter(exporter::ExporterPre<StoreState>),
    Filter2(v2::filter::FilterPre<StoreState>),
    Transform2(v2::transform::TransformPre<StoreState>),
    Router2(v2::router::RouterPre<StoreState>),
    Exporter2(v2::exporter::ExporterPre<StoreState>),
}

/// A live instance, per world and contract version.
enum Bound {
    Filter(filter::Filter),
    Transform(transform::Transform),
    Router(router::Router),
    Exporter(exporter::Exporter),
    Filter2(v2::filter::Filter),
    Transform2(v2::transform::Transform),
    Router2(v2::router::Router),
    Exporter2(v2::exporter::Exporter),
}

struct Live {
    store: Store<StoreState>,
    instance: Bound,
    signals: types::Signals,
}

/// One plugin where the config uses it — a pipeline's processor or an exporter plugin: its
/// compiled component, its live instance, and its fault state.
pub struct Plugin {
    spec: Spec,
    pre: Option<Pre>,
    kind: Option<Kind>,
    live: Option<Live>,
    consecutive_faults: u32,
    retry_at: Option<Instant>,
    plugin_log: Arc<LogThrottle>,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

fn linker() -> &'static Linker<StoreState> {
    static LINKER: std::sync::OnceLock<Linker<StoreState>> = std::sync::OnceLock::new();
    LINKER.get_or_init(|| {
        let mut linker = Linker::new(sandbox::engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("WASI links once");
        // Within a contract version every world imports the same interfaces, so the filter
        // world's linking serves all of that version's worlds.
        filter::Filter::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state).expect("0.1.0 links once");
        v2::filter::Filter::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .expect("0.2.0 links once");
        view::host::serve_bytes_without_copy(&mut linker).expect("0.2.0 defines batch.bytes");
        linker
    })
}

impl Plugin {
    /// Loads the plugin. A load failure is logged, returned for counting, and retried later —
    /// never fatal.
    ///
    /// The first instance is made here too, so a plugin that refuses its settings is reported
    /// now (as a fault of kind `init`) rather than at its first batch.
    pub fn new(spec: Spec) -> (Self, Option<Fault>) {
        let mut plugin = Self::unloaded(spec);
        let loaded = plugin.load(true);
        let fault = match loaded.and_then(|()| plugin.instantiate()) {
            Ok(live) => {
                plugin.live = Some(live);
                None
            }
            Err(fault) => Some(fault),
        };
        if let Some(fault) = &fault {
            // Not loaded: wait before reading the file again. Loaded but refused its settings:
            // the first batch tries once more at once (and reports the refusal), then waits.
            if plugin.pre.is_none() {
                plugin.back_off();
            }
            tracing::error!(plugin = %plugin.spec.name, kind = fault.kind, "Plugin not loaded: {}", fault.message);
        }
        (plugin, fault)
    }

    fn unloaded(spec: Spec) -> Self {
        Self {
            spec,
            pre: None,
            kind: None,
            live: None,
            consecutive_faults: 0,
            retry_at: None,
            plugin_log: Arc::new(LogThrottle::new(Duration::from_secs(1))),
        }
    }

    /// The name.
    pub fn name(&self) -> &Arc<str> {
        &self.spec.name
    }

    /// The world, once loaded.
    pub fn kind(&self) -> Option<Kind> {
        self.kind
    }

    /// The live instance's linear memory at its largest so far, in bytes (`None` without one).
    pub fn memory_peak(&self) -> Option<usize> {
        self.live.as_ref().map(|live| live.store.data().limits.peak)
    }

    /// The failure policy.
    pub fn on_error(&self) -> OnError {
        self.spec.on_error
    }

    /// Reads, checks and compiles the component; `announce` logs the outcome.
    fn load(&mut self, announce: bool) -> Result<(), Fault> {
        let engine = sandbox::engine();
        let loaded =
            loader::load(engine, &self.spec.path, self.spec.pin.as_deref(), self.spec.cache_dir.as_deref())
                .map_err(|e: LoadError| Fault { kind: e.kind(), message: e.to_string() })?;
        if let Some(refusal) = self.spec.accepts.refusal(loaded.kind) {
            let message = format!("{} cannot be used here: {refusal}", self.spec.path.display());
            return Err(Fault { kind: "wrong_world", message });
        }
        let link_error = |e: wasmtime::Error| Fault { kind: "wrong_world", message: format!("{e:#}") };
        let instance_pre = linker().instantiate_pre(&loaded.component).map_err(link_error)?;
        let pre = instance_pre;
        self.pre = Some(match (loaded.kind, loaded.contract) {
            (Kind::Filter, Contract::V1) => Pre::Filter(filter::FilterPre::new(pre).map_err(link_error)?),
            (Kind::Transform, Contract::V1) => {
                Pre::Transform(transform::TransformPre::new(pre).map_err(link_error)?)
            }
            (Kind::Router, Contract::V1) => Pre::Router(router::RouterPre::new(pre).map_err(link_error)?),
            (Kind::Exporter, Contract::V1) => {
                Pre::Exporter(exporter::ExporterPre::new(pre).map_err(link_error)?)
            }
            (Kind::Filter, Contract::V2) => {
                Pre::Filter2(v2::filter::FilterPre::new(pre).map_err(link_error)?)
            }
            (Kind::Transform, Contract::V2) => {
                Pre::Transform2(v2::transform::TransformPre::new(pre).map_err(link_error)?)
            }
            (Kind::Router, Contract::V2) => {
                Pre::Router2(v2::router::RouterPre::new(pre).map_err(link_error)?)
            }
            (Kind::Exporter, Contract::V2) => {
                Pre::Exporter2(v2::exporter::ExporterPre::new(pre).map_err(link_error)?)
            }
        });
        self.kind = Some(loaded.kind);
        if !announce {
            return Ok(());
        }
        tracing::info!(
            plugin = %self.spec.name, world = loaded.kind.as_str(), contract = loaded.contract.as_str(),
            sha256 = %loaded.sha256,
            took_ms = loaded.took.as_secs_f64() * 1000.0,
            compiled = if loaded.cached { "from cache" } else { "now" },
            "Plugin loaded"
        );
        Ok(())
    }

    fn back_off(&mut self) {
        self.consecutive_faults += 1;
        let exponent = self.consecutive_faults.saturating_sub(1).min(16);
        let delay = (FIRST_BACKOFF * 2u32.pow(exponent)).min(MAX_BACKOFF);
        self.retry_at = Some(Instant::now() + delay);
    }

    fn new_store(&self) -> Store<StoreState> {
        let state = StoreState::new(
            self.spec.name.clone(),
            self.spec.max_memory,
            &self.spec.env,
            self.plugin_log.clone(),
        );
        let mut store = Store::new(sandbox::engine(), state);
        store.limiter(|state| &mut state.limits);
        store
    }

    /// Creates and initializes an instance.
    fn instantiate(&mut self) -> Result<Live, Fault> {
        if self.pre.is_none() {
            self.load(true)?;
        }
        let mut store = self.new_store();
        let _ticking = sandbox::arm(&mut store, self.spec.init_timeout);
        let config = self.spec.config_json.as_str();
        let init_fault = |store: &Store<StoreState>, e: wasmtime::Error| classify(store, &e, "init");
        // Instantiates with `pre`, calls `init`, and binds the instance as `$bound`.
        macro_rules! start {
            ($pre:expr, $bound:path) => {{
                let i = $pre.instantiate(&mut store).map_err(|e| init_fault(&store, e))?;
                let info = i.call_init(&mut store, config).map_err(|e| init_fault(&store, e))?;
                ($bound(i), info.map(|info| types::Signals::from(info.signals)))
            }};
        }
        let (instance, signals) = match self.pre.as_ref().expect("loaded above") {
            Pre::Filter(pre) => start!(pre, Bound::Filter),
            Pre::Transform(pre) => start!(pre, Bound::Transform),
            Pre::Router(pre) => start!(pre, Bound::Router),
            Pre::Exporter(pre) => start!(pre, Bound::Exporter),
            Pre::Filter2(pre) => start!(pre, Bound::Filter2),
            Pre::Transform2(pre) => start!(pre, Bound::Transform2),
            Pre::Router2(pre) => start!(pre, Bound::Router2),
            Pre::Exporter2(pre) => start!(pre, Bound::Exporter2),
        };
        let signals = signals.map_err(|message| Fault {
            kind: "init",
            message: format!("the plugin refused its config: {message}"),
        })?;
        Ok(Live { store, instance, signals })
    }

    /// Runs the plugin on one encoded batch.
    pub fn run(&mut self, signal: Signal, batch: &Bytes) -> Step {
        if self.live.is_none() {
            if self.retry_at.is_some_and(|at| Instant::now() < at) {
                return Step::Faulted(Fault {
                    kind: "unavailable",
                    message: "waiting to retry after faults".into(),
                });
            }
            match self.instantiate() {
                Ok(live) => self.live = Some(live),
                Err(fault) => {
                    self.back_off();
                    return Step::Faulted(fault);
                }
            }
        }
        let live = self.live.as_mut().expect("instantiated above");
        let wanted = match signal {
            Signal::Traces => types::Signals::TRACES,
            Signal::Metrics => types::Signals::METRICS,
            Signal::Logs => types::Signals::LOGS,
        };
        if !live.signals.contains(wanted) {
            return Step::Skipped;
        }
        let wit_signal = match signal {
            Signal::Traces => types::Signal::Traces,
            Signal::Metrics => types::Signal::Metrics,
            Signal::Logs => types::Signal::Logs,
        };
        let store = &mut live.store;
        let _ticking = sandbox::arm(store, self.spec.timeout);
        let result = match &live.instance {
            Bound::Filter(i) => i.call_filter(&mut *store, wit_signal, batch).map(|r| r.map(Answer::Drop)),
            Bound::Transform(i) => {
                i.call_transform(&mut *store, wit_signal, batch).map(|r| r.map(Answer::Edit))
            }
            Bound::Router(i) => i.call_route(&mut *store, wit_signal, batch).map(|r| r.map(Answer::Route)),
            Bound::Exporter(i) => {
                i.call_render(&mut *store, wit_signal, batch).map(|r| r.map(Answer::Requests))
            }
            Bound::Filter2(i) => {
                with_batch(store, signal, batch, |s, b| i.call_filter(s, b)).map(|r| r.map(Answer::Drop))
            }
            Bound::Transform2(i) => with_batch(store, signal, batch, |s, b| i.call_transform(s, b))
                .map(|r| r.map(|edits| Answer::Edit(edits.into_iter().map(Into::into).collect()))),
            Bound::Router2(i) => with_batch(store, signal, batch, |s, b| i.call_route(s, b))
                .map(|r| r.map(|routing| Answer::Route(routing.into()))),
            Bound::Exporter2(i) => with_batch(store, signal, batch, |s, b| i.call_render(s, b))
                .map(|r| r.map(|requests| Answer::Requests(requests.into_iter().map(Into::into).collect()))),
        };
        match result {
            Ok(Ok(answer)) => {
                self.consecutive_faults = 0;
                self.retry_at = None;
                Step::Answered(answer)
            }
            // The plugin said no, cleanly: its instance is fine and stays.
            Ok(Err(message)) => Step::Faulted(Fault { kind: "error", message }),
            Err(error) => {
                let fault = classify(store, &error, "trap");
                self.live = None;
                self.back_off();
                // The first fault retries at once; only repeated faults wait.
                if self.consecutive_faults == 1 {
                    self.retry_at = None;
                }
                Step::Faulted(fault)
            }
        }
    }
}

/// Calls a 0.2.0 export with `batch` as the `batch` resource, which lives in the store's table
/// for this call only.
fn with_batch<R>(
    store: &mut Store<StoreState>,
    signal: Signal,
    batch: &Bytes,
    call: impl FnOnce(&mut Store<StoreState>, Resource<BatchView>) -> wasmtime::Result<R>,
) -> wasmtime::Result<R> {
    let handle = store.data_mut().table().push(BatchView::new(signal, batch.clone()))?;
    let result = call(&mut *store, Resource::new_borrow(handle.rep()));
    store.data_mut().table().delete(handle)?;
    result
}

/// Names a wasmtime error: deadline, memory cap, or another trap (with the guest's stderr).
fn classify(store: &Store<StoreState>, error: &wasmtime::Error, otherwise: &'static str) -> Fault {
    let state = store.data();
    if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        return Fault {
            kind: "deadline",
            message: "the call ran past its deadline and was interrupted".into(),
        };
    }
    if state.limits.hit {
        return Fault {
            kind: "memory",
            message: "the plugin tried to grow its memory past `limits.memory`".into(),
        };
    }
    let stderr = state.stderr();
    let message = if stderr.is_empty() {
        format!("{error:#}")
    } else {
        format!("{error:#}; the plugin wrote: {stderr}")
    };
    Fault { kind: otherwise, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{spans, spec};

    fn fault(step: Step) -> Fault {
        match step {
            Step::Faulted(fault) => fault,
            other => panic!("expected a fault, got {other:?}"),
        }
    }

    #[test]
    fn a_runaway_plugin_is_interrupted_at_its_deadline() {
        let (mut plugin, load) = Plugin::new(spec("fixture-loop-forever", "{}", OnError::Pass));
        assert!(load.is_none(), "{load:?}");
        assert_eq!(fault(plugin.run(Signal::Traces, spans(&["a"]).payload())).kind, "deadline");
    }

    /// Starting an instance has its own deadline: an `init` that never returns is interrupted
    /// once `init_timeout` has passed, not the shorter `timeout` of a call.
    #[test]
    fn init_runs_under_its_own_deadline() {
        let mut spec = spec("fixture-loop-forever", r#"{"in": "init"}"#, OnError::Pass);
        (spec.timeout, spec.init_timeout) = (Duration::from_millis(10), Duration::from_millis(400));
        let mut plugin = Plugin::unloaded(spec);
        plugin.load(true).expect("loads");
        let started = Instant::now();
        let fault = plugin.instantiate().err().expect("interrupted");
        let took = started.elapsed();
        assert_eq!(fault.kind, "deadline");
        assert!(took >= Duration::from_millis(400), "interrupted after {took:?}, before init_timeout");
    }

    #[test]
    fn a_plugin_that_grows_past_its_memory_cap_is_stopped() {
        let (mut plugin, _) = Plugin::new(spec("fixture-allocate-forever", "{}", OnError::Pass));
        let fault = fault(plugin.run(Signal::Traces, spans(&["a"]).payload()));
        assert_eq!(fault.kind, "memory", "{}", fault.message);
    }

    #[test]
    fn a_trap_discards_the_instance_and_repeated_faults_back_off() {
        let (mut plugin, _) = Plugin::new(spec("fixture-trap", "{}", OnError::Pass));
        let (trap, good) = (spans(&["trap"]), spans(&["fine"]));
        assert_eq!(fault(plugin.run(Signal::Traces, trap.payload())).kind, "trap");
        // The first fault retries at once, with a fresh instance.
        assert!(
            matches!(plugin.run(Signal::Traces, good.payload()), Step::Answered(Answer::Drop(d)) if d.is_empty())
        );
        assert_eq!(fault(plugin.run(Signal::Traces, trap.payload())).kind, "trap");
        assert_eq!(fault(plugin.run(Signal::Traces, trap.payload())).kind, "trap");
        // Two in a row: the next batch waits out the backoff instead of calling it.
        assert_eq!(fault(plugin.run(Signal::Traces, good.payload())).kind, "unavailable");
    }

    #[test]
    fn a_refused_config_is_a_load_fault_with_the_plugins_words() {
        let (_, load) = Plugin::new(spec("drop-spans", r#"{"span_nams": ["x"]}"#, OnError::Pass));
        let load = load.expect("refused");
        assert_eq!(load.kind, "init");
        assert!(load.message.contains("the plugin refused its config") && load.message.contains("span_nams"));
    }

    /// The sandbox, not the probe, keeps the network out: the snoop fixture's net probe (it
    /// drops the span when its connection opens) reaches a listener only once the store is
    /// granted the network.
    #[test]
    fn the_network_is_reachable_only_where_the_sandbox_grants_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let config = format!(r#"{{"port": {}}}"#, listener.local_addr().expect("address").port());
        listener.set_nonblocking(true).expect("nonblocking");
        for granted in [false, true] {
            sandbox::GRANT_NETWORK_IN_TESTS.set(granted);
            let (mut plugin, load) = Plugin::new(spec("fixture-snoop", &config, OnError::Pass));
            assert!(load.is_none(), "{load:?}");
            let step = plugin.run(Signal::Traces, spans(&["net-probe"]).payload());
            let dropped = matches!(step, Step::Answered(Answer::Drop(ref d)) if d == &[0]);
            assert_eq!(dropped, granted, "granted: {granted}, answer: {step:?}");
            assert_eq!(listener.accept().is_ok(), granted, "a connection came in: granted {granted}");
        }
        sandbox::GRANT_NETWORK_IN_TESTS.set(false);
    }

    /// A plugin built against 0.1.0 (the bytes) and the same source built against 0.2.0 (the
    /// batch resource) load side by side and answer alike, for every processor world.
    #[test]
    fn plugins_built_against_both_contracts_answer_alike() {
        let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/plugins-0.1.0");
        let batch = spans(&["GET /healthz@a", "checkout@b", "GET /healthz@b"]);
        for (name, config) in [
            ("drop-spans", r#"{"span_names": ["GET /healthz"]}"#),
            ("set-attributes", r#"{"resource": [{"key": "system", "value": "graphistry"}]}"#),
            ("route-by-attribute", r#"{"attribute": "tenant", "routes": {"b": "tenant-b"}}"#),
        ] {
            let current = spec(name, config, OnError::Pass);
            let old = Spec { path: fixtures.join(format!("{name}.wasm")), ..current.clone() };
            let mut answers = Vec::new();
            for (spec, contract) in [(old, Contract::V1), (current, Contract::V2)] {
                let path = spec.path.clone();
                let loaded =
                    loader::load(sandbox::engine(), &path, None, spec.cache_dir.as_deref()).expect("loads");
                assert_eq!(loaded.contract, contract, "{}", path.display());
                let (mut plugin, load) = Plugin::new(spec);
                assert!(load.is_none(), "{name}: {load:?}");
                answers.push(format!("{:?}", plugin.run(Signal::Traces, batch.payload())));
            }
            assert_eq!(answers[0], answers[1], "{name}: 0.1.0 and 0.2.0 builds answer alike");
            assert!(answers[0].starts_with("Answered"), "{name}: {}", answers[0]);
        }
    }

    #[test]
    fn signals_a_plugin_does_not_handle_are_not_sent_to_it() {
        let (mut plugin, _) = Plugin::new(spec("sample-traces", r#"{"percentage": 0}"#, OnError::Pass));
        assert!(matches!(plugin.run(Signal::Logs, &Bytes::new()), Step::Skipped));
        assert!(
            matches!(plugin.run(Signal::Traces, spans(&["a"]).payload()), Step::Answered(Answer::Drop(d)) if d == [0])
        );
    }
}
