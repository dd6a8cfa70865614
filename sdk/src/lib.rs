//! Write Sluice plugins in Rust.
//!
//! A plugin is a WebAssembly component built for `wasm32-wasip2`. It implements one trait and
//! invokes one export macro:
//!
//! ```ignore
//! use sluice_sdk::prelude::*;
//!
//! struct DropHealthChecks;
//!
//! impl Filter for DropHealthChecks {
//!     fn init(_config: &Config) -> Result<Self, String> {
//!         Ok(Self)
//!     }
//!
//!     fn keep_span(&self, span: &SpanView<'_>, _resource: &ResourceView<'_>) -> bool {
//!         span.name() != "GET /healthz"
//!     }
//! }
//!
//! sluice_sdk::export_filter!(DropHealthChecks);
//! ```
//!
//! The host calls the plugin once per batch. The SDK walks the batch's protobuf in place and
//! calls the trait's per-item methods with borrowed views — plain Rust calls inside the guest,
//! with nothing decoded or copied — then hands the host a compact answer: which items to drop
//! ([`Filter`]), which attributes to change ([`Transform`]), or where each item goes ([`Router`]).
//! A [`filter::BatchFilter`] instead asks the host about the batch ([`filter::HostBatch`]: names,
//! attributes by key, fields), which is how plugins in languages without this SDK read batches.
//! An [`Exporter`] instead turns a batch into HTTP requests, which the host sends to its
//! destination with the host's TLS, credentials and retries.
//!
//! # Layout
//! - [`filter`], [`transform`], [`router`], [`exporter`]: the plugin kinds, one trait each.
//! - [`config`]: the plugin's `config` table from the pipeline TOML.
//! - [`json`]: wire values as JSON, for exporters.
//! - [`log`]: lines in the host's log.
//! - [`pattern`]: `*` wildcards for names and keys in plugin configs, and lists of them
//!   compiled into one matcher.
//! - [`views`]: the borrowed views of spans, metrics, log records and resources.

#![deny(missing_docs)]

pub mod config;
pub mod exporter;
pub mod filter;
pub mod json;
pub mod log;
pub mod pattern;
pub mod router;
pub mod transform;

pub use config::Config;
pub use exporter::Exporter;
pub use filter::Filter;
pub use router::Router;
pub use sluice_wire::views;
pub use transform::{Edits, Transform};

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::config::Config;
    pub use crate::exporter::{Batch, Exporter, Method, Request};
    pub use crate::filter::{BatchFilter, Filter, HostBatch};
    pub use crate::json;
    pub use crate::pattern::{Pattern, PatternSet};
    pub use crate::router::Router;
    pub use crate::transform::{Edits, Transform};
    pub use crate::{Signal, Signals};
    pub use sluice_wire::otlp::AnyValue;
    pub use sluice_wire::views::{LogRecordView, MetricView, ResourceView, SpanView};
}

/// The OTLP signals.
pub use sluice_wire::Signal;

/// Which signals a plugin handles; the host skips calls for the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signals {
    /// Spans.
    pub traces: bool,
    /// Metrics.
    pub metrics: bool,
    /// Log records.
    pub logs: bool,
}

impl Signals {
    /// All three.
    pub const ALL: Signals = Signals { traces: true, metrics: true, logs: true };
    /// Traces only.
    pub const TRACES: Signals = Signals { traces: true, metrics: false, logs: false };
    /// Metrics only.
    pub const METRICS: Signals = Signals { traces: false, metrics: true, logs: false };
    /// Logs only.
    pub const LOGS: Signals = Signals { traces: false, metrics: false, logs: true };
}

/// The generated bindings, one module per world. Plugins use the traits and macros instead.
#[doc(hidden)]
pub mod bindings {
    /// The `filter` world; also owns the shared `types` and `host` interfaces.
    pub mod filter {
        wit_bindgen::generate!({
            world: "filter",
            path: "wit",
            pub_export_macro: true,
            export_macro_name: "export_filter_world",
            default_bindings_module: "sluice_sdk::bindings::filter",
            generate_all,
        });
    }

    /// The `transform` world, reusing the filter world's shared interfaces.
    pub mod transform {
        wit_bindgen::generate!({
            world: "transform",
            path: "wit",
            pub_export_macro: true,
            export_macro_name: "export_transform_world",
            default_bindings_module: "sluice_sdk::bindings::transform",
            with: {
                "sluice:plugin/types@0.2.0": crate::bindings::filter::sluice::plugin::types,
                "sluice:plugin/host@0.2.0": crate::bindings::filter::sluice::plugin::host,
                "sluice:plugin/batches@0.2.0": crate::bindings::filter::sluice::plugin::batches,
            },
        });
    }

    /// The `router` world, reusing the filter world's shared interfaces.
    pub mod router {
        wit_bindgen::generate!({
            world: "router",
            path: "wit",
            pub_export_macro: true,
            export_macro_name: "export_router_world",
            default_bindings_module: "sluice_sdk::bindings::router",
            with: {
                "sluice:plugin/types@0.2.0": crate::bindings::filter::sluice::plugin::types,
                "sluice:plugin/host@0.2.0": crate::bindings::filter::sluice::plugin::host,
                "sluice:plugin/batches@0.2.0": crate::bindings::filter::sluice::plugin::batches,
            },
        });
    }

    /// The `exporter` world, reusing the filter world's shared interfaces.
    pub mod exporter {
        wit_bindgen::generate!({
            world: "exporter",
            path: "wit",
            pub_export_macro: true,
            export_macro_name: "export_exporter_world",
            default_bindings_module: "sluice_sdk::bindings::exporter",
            with: {
                "sluice:plugin/types@0.2.0": crate::bindings::filter::sluice::plugin::types,
                "sluice:plugin/host@0.2.0": crate::bindings::filter::sluice::plugin::host,
                "sluice:plugin/batches@0.2.0": crate::bindings::filter::sluice::plugin::batches,
            },
        });
    }

    pub use filter::sluice::plugin::{batches, host, types};
}

use bindings::types as wit;

impl From<wit::Signal> for Signal {
    fn from(signal: wit::Signal) -> Self {
        match signal {
            wit::Signal::Traces => Signal::Traces,
            wit::Signal::Metrics => Signal::Metrics,
            wit::Signal::Logs => Signal::Logs,
        }
    }
}

#[doc(hidden)]
pub fn __plugin_info(signals: Signals) -> wit::PluginInfo {
    let mut flags = wit::Signals::empty();
    if signals.traces {
        flags = flags | wit::Signals::TRACES;
    }
    if signals.metrics {
        flags = flags | wit::Signals::METRICS;
    }
    if signals.logs {
        flags = flags | wit::Signals::LOGS;
    }
    wit::PluginInfo { signals: flags }
}

/// The export macros' `init`: parse the config, build the plugin, keep it in `slot`.
#[doc(hidden)]
pub fn __init<T>(
    slot: &'static std::thread::LocalKey<std::cell::RefCell<Option<T>>>,
    config: &str,
    build: fn(&Config) -> Result<T, String>,
    signals: Signals,
) -> Result<wit::PluginInfo, String> {
    let plugin = build(&Config::from_json(config)?)?;
    slot.with(|cell| *cell.borrow_mut() = Some(plugin));
    Ok(__plugin_info(signals))
}

/// Declares the thread-local slot an export macro keeps its plugin instance in.
#[doc(hidden)]
#[macro_export]
macro_rules! __instance_slot {
    ($plugin:ty) => {
        ::std::thread_local! {
            static INSTANCE: ::std::cell::RefCell<::std::option::Option<$plugin>> =
                const { ::std::cell::RefCell::new(::std::option::Option::None) };
        }
    };
}

/// The batch's signal and encoded bytes, for the traits that walk the wire format in the guest
/// (one copy into the guest per call).
#[doc(hidden)]
pub fn __batch_bytes(batch: &bindings::batches::Batch) -> (Signal, Vec<u8>) {
    (batch.signal().into(), batch.bytes())
}

/// Runs `f` with the plugin instance stored by the export macro's `init`.
#[doc(hidden)]
pub fn __with_instance<T, R>(
    slot: &'static std::thread::LocalKey<std::cell::RefCell<Option<T>>>,
    f: impl FnOnce(&T) -> Result<R, String>,
) -> Result<R, String> {
    slot.with(|cell| match cell.borrow().as_ref() {
        Some(plugin) => f(plugin),
        None => Err("the plugin was called before `init` succeeded".into()),
    })
}
