//! The sandbox every plugin call runs in: one engine with epoch interruption, a store per
//! instance with a memory cap, and a WASI context that grants nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{Config, Engine, ResourceLimiter, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{host, v2};
use crate::log_throttle::LogThrottle;

/// How often the engine's epoch advances; call deadlines are rounded up to whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Ticks without plugin code running after which the epoch thread sleeps until a call starts.
/// Waking every 5 ms with nothing to interrupt was a third of an idle host's CPU.
const PARK_AFTER_IDLE_TICKS: u32 = 200;

/// Bytes of a plugin's stderr kept for the fault log (a panic message fits).
const STDERR_CAPTURE: usize = 4096;

/// The process-wide engine and the ticker that advances its epoch, started on first use.
fn sandbox() -> &'static (Engine, Ticker) {
    static SANDBOX: OnceLock<(Engine, Ticker)> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let mut config = Config::new();
        // Deadlines: the store traps once the epoch passes its deadline.
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).expect("the engine configuration is valid");
        let weak = engine.weak();
        let tick = move || weak.upgrade().map(|engine| engine.increment_epoch()).is_some();
        let ticker = Ticker::start("sluice-epoch", EPOCH_TICK, PARK_AFTER_IDLE_TICKS, tick);
        (engine, ticker)
    })
}

/// The process-wide engine.
pub fn engine() -> &'static Engine {
    &sandbox().0
}

/// Gives `store`'s next call `timeout` to run, and keeps the epoch advancing until the
/// returned guard drops: hold it (`let _ticking = …`) until the call has returned. The epoch
/// thread sleeps while no call runs, so a deadline set without this would never pass.
pub fn arm<T>(store: &mut Store<T>, timeout: Duration) -> Ticking<'static> {
    let ticking = sandbox().1.ticking();
    store.set_epoch_deadline(deadline_ticks(timeout));
    ticking
}

/// The deadline, in epoch ticks, for a call allowed to run for `timeout`.
fn deadline_ticks(timeout: Duration) -> u64 {
    (timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64).max(1) + 1
}

/// A thread that calls `tick` every period while some call may be running, and parks once
/// `park_after` periods passed with none.
struct Ticker {
    state: Arc<TickerState>,
    thread: Thread,
}

#[derive(Debug, Default)]
struct TickerState {
    /// Calls running now (each holds a [`Ticking`]).
    running: AtomicUsize,
    /// Whether the thread parked (or is about to): a call starting must wake it.
    parked: AtomicBool,
}

impl Ticker {
    /// Starts the thread `name`; it ends once `tick` returns false.
    fn start(
        name: &str,
        period: Duration,
        park_after: u32,
        mut tick: impl FnMut() -> bool + Send + 'static,
    ) -> Self {
        let state = Arc::new(TickerState::default());
        let shared = state.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut idle = 0;
                while tick() {
                    std::thread::sleep(period);
                    idle = if shared.running.load(SeqCst) > 0 { 0 } else { idle + 1 };
                    if idle < park_after {
                        continue;
                    }
                    // The other half of `ticking`'s handshake: with both sides storing before
                    // they load (all SeqCst), either this sees the call's count or the call sees
                    // `parked` and unparks (an unpark before the park makes it return at once).
                    shared.parked.store(true, SeqCst);
                    while shared.running.load(SeqCst) == 0 {
                        std::thread::park();
                    }
                    shared.parked.store(false, SeqCst);
                    idle = 0;
                }
            })
            .expect("can spawn the epoch thread");
        Ticker { thread: thread.thread().clone(), state }
    }

    /// Counts a call as running until the guard drops, waking the thread if it parked.
    fn ticking(&self) -> Ticking<'_> {
        self.state.running.fetch_add(1, SeqCst);
        if self.state.parked.load(SeqCst) {
            self.thread.unpark();
        }
        Ticking(&self.state)
    }
}

/// A call running: the epoch keeps advancing while this is held.
#[must_use = "the epoch may stop advancing once this is dropped: hold it until the call returns"]
#[derive(Debug)]
pub struct Ticking<'a>(&'a TickerState);

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, SeqCst);
    }
}

/// Caps linear memory and remembers whether the cap was what stopped the guest.
#[derive(Debug)]
pub struct MemoryCap {
    max_bytes: usize,
    /// Set when a growth was refused, so the fault that follows is reported as out-of-memory.
    pub hit: bool,
    /// The largest linear memory granted so far, in bytes.
    pub peak: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

#[cfg(test)]
thread_local! {
    /// Tests only: stores made on this thread get the host's network, so a test can show that a
    /// probe which the sandbox stops does reach the network once it is granted.
    pub(crate) static GRANT_NETWORK_IN_TESTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Everything a plugin instance's store holds.
pub struct StoreState {
    plugin: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    stderr: MemoryOutputPipe,
    /// The memory cap.
    pub limits: MemoryCap,
    log_throttle: Arc<LogThrottle>,
}

impl StoreState {
    /// A fresh state for plugin `plugin`, allowed `max_memory` bytes of linear memory and the
    /// environment variables named in `env` (nothing else).
    pub fn new(
        plugin: Arc<str>,
        max_memory: usize,
        env: &[(String, String)],
        log_throttle: Arc<LogThrottle>,
    ) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        let mut wasi = WasiCtx::builder();
        // No preopened directories, no network, no inherited stdio or environment: a plugin
        // sees only its batch, its config and what `env` grants.
        wasi.stderr(stderr.clone());
        for (key, value) in env {
            wasi.env(key, value);
        }
        #[cfg(test)]
        if GRANT_NETWORK_IN_TESTS.get() {
            wasi.inherit_network().allow_tcp(true);
        }
        Self {
            plugin,
            wasi: wasi.build(),
            table: ResourceTable::new(),
            stderr,
            limits: MemoryCap { max_bytes: max_memory, hit: false, peak: 0 },
            log_throttle,
        }
    }

    /// What the plugin wrote to stderr (a panic message, typically), trimmed.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).trim().to_string()
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl StoreState {
    /// The table holding the resources handed to the guest (the batch of a 0.2.0 call).
    pub fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Writes a plugin's log line, rate-limited.
    fn log_line(&mut self, level: host::Level, message: &str) {
        let Some(suppressed) = self.log_throttle.check() else { return };
        let plugin = &*self.plugin;
        match level {
            host::Level::Debug => tracing::debug!(plugin, suppressed, "{message}"),
            host::Level::Info => tracing::info!(plugin, suppressed, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, suppressed, "{message}"),
            host::Level::Error => tracing::error!(plugin, suppressed, "{message}"),
        }
    }
}

impl host::Host for StoreState {
    fn log(&mut self, level: host::Level, message: String) {
        self.log_line(level, &message);
    }
}

impl super::bindings::types::Host for StoreState {}

impl v2::host::Host for StoreState {
    fn log(&mut self, level: v2::host::Level, message: String) {
        let level = match level {
            v2::host::Level::Debug => host::Level::Debug,
            v2::host::Level::Info => host::Level::Info,
            v2::host::Level::Warn => host::Level::Warn,
            v2::host::Level::Error => host::Level::Error,
        };
        self.log_line(level, &message);
    }
}

impl v2::types::Host for StoreState {}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    use super::*;

    /// Polls `done` for up to ten seconds.
    fn eventually(what: &str, done: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < until, "never: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The ticker parks once no call ran for a while and stops ticking; a call starting wakes
    /// it (so a deadline set then still passes), and it parks again once the call is done.
    #[test]
    fn the_ticker_sleeps_while_no_call_runs_and_a_call_wakes_it() {
        let (ticks, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (counted, stopped) = (ticks.clone(), stop.clone());
        let ticker = Ticker::start("test-epoch", Duration::from_millis(1), 5, move || {
            counted.fetch_add(1, SeqCst);
            !stopped.load(SeqCst)
        });
        let parked = || ticker.state.parked.load(SeqCst);
        eventually("parked with no call running", parked);
        let at_park = ticks.load(SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(ticks.load(SeqCst), at_park, "no ticks while parked");

        let call = ticker.ticking();
        eventually("ticking again once a call started", || ticks.load(SeqCst) >= at_park + 20);
        assert!(!parked(), "never parks while a call runs");
        drop(call);
        eventually("parked again after the call", parked);

        // Calls that start and end while it is parked leave it parked, ticking or not.
        for _ in 0..100 {
            drop(ticker.ticking());
        }
        eventually("parked after short calls", parked);

        // Woken to its next tick, the thread ends.
        stop.store(true, SeqCst);
        drop(ticker.ticking());
    }
}
