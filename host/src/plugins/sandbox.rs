//! The sandbox every plugin call runs in: one engine with epoch interruption, a store per
//! instance with a memory cap, and a WASI context that grants nothing.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{Config, Engine, ResourceLimiter};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{host, v2};
use crate::log_throttle::LogThrottle;

/// How often the engine's epoch advances; call deadlines are rounded up to whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Bytes of a plugin's stderr kept for the fault log (a panic message fits).
const STDERR_CAPTURE: usize = 4096;

/// The process-wide engine, with its epoch ticker thread started on first use.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        // Deadlines: the store traps once the epoch passes its deadline.
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).expect("the engine configuration is valid");
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .expect("can spawn the epoch thread");
        engine
    })
}

/// The deadline, in epoch ticks, for a call allowed to run for `timeout`.
pub fn deadline_ticks(timeout: Duration) -> u64 {
    (timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64).max(1) + 1
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
