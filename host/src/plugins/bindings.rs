//! Host bindings for the plugin worlds of every contract version the host runs, generated from
//! the SDK's WIT folders — the same files the guest SDK reads, so the two sides can never drift
//! apart: `sdk/wit` (`sluice:plugin@0.2.0`, the current one) and `sdk/wit-0.1.0` (kept so that
//! plugins built against 0.1.0 keep running).
//!
//! Options left at their defaults: calls are synchronous (plugins run on the pipeline's own
//! thread, bounded by an epoch deadline, so async would only add a fiber per call) and host
//! imports cannot trap. Within one version the `types` and `host` interfaces are generated once
//! (with the filter world) and shared by the other worlds through `with`. The host works in
//! 0.1.0's types; a 0.2.0 plugin's answers are converted to them (`From` impls below), and its
//! `host` imports are served by the same code.

/// `sluice:plugin@0.1.0`: the guest gets the encoded batch.
#[allow(missing_docs)]
pub mod v1 {
    /// The `filter` world (owner of the shared interfaces).
    pub mod filter {
        wasmtime::component::bindgen!({ world: "filter", path: "../sdk/wit-0.1.0" });
    }

    /// The `transform` world.
    pub mod transform {
        wasmtime::component::bindgen!({
            world: "transform",
            path: "../sdk/wit-0.1.0",
            with: {
                "sluice:plugin/types": super::filter::sluice::plugin::types,
                "sluice:plugin/host": super::filter::sluice::plugin::host,
            },
        });
    }

    /// The `router` world.
    pub mod router {
        wasmtime::component::bindgen!({
            world: "router",
            path: "../sdk/wit-0.1.0",
            with: {
                "sluice:plugin/types": super::filter::sluice::plugin::types,
                "sluice:plugin/host": super::filter::sluice::plugin::host,
            },
        });
    }

    /// The `exporter` world.
    pub mod exporter {
        wasmtime::component::bindgen!({
            world: "exporter",
            path: "../sdk/wit-0.1.0",
            with: {
                "sluice:plugin/types": super::filter::sluice::plugin::types,
                "sluice:plugin/host": super::filter::sluice::plugin::host,
            },
        });
    }
}

/// `sluice:plugin@0.2.0`: the guest gets a `batch` resource the host answers from its views.
#[allow(missing_docs)]
pub mod v2 {
    /// The `filter` world (owner of the shared interfaces).
    pub mod filter {
        wasmtime::component::bindgen!({
            world: "filter",
            path: "../sdk/wit",
            with: { "sluice:plugin/batches.batch": crate::plugins::view::BatchView },
        });
    }

    /// The `transform` world.
    pub mod transform {
        wasmtime::component::bindgen!({
            world: "transform",
            path: "../sdk/wit",
            with: {
                "sluice:plugin/types": super::filter::sluice::plugin::types,
                "sluice:plugin/host": super::filter::sluice::plugin::host,
                "sluice:plugin/batches": super::filter::sluice::plugin::batches,
            },
        });
    }

    /// The `router` world.
    pub mod router {
        wasmtime::component::bindgen!({
            world: "router",
            path: "../sdk/wit",
            with: {
                "sluice:plugin/types": super::filter::sluice::plugin::types,
                "sluice:plugin/host": super::filter::sluice::plugin::host,
                "sluice:plugin/batches": super::filter::sluice::plugin::batches,
            },
        });
    }

    /// The `exporter` world.
    pub mod exporter {
        wasmtime::component::bindgen!({
            world: "exporter",
            path: "../sdk/wit",
            with: {
                "sluice:plugin/types": super::filter::sluice::plugin::types,
                "sluice:plugin/host": super::filter::sluice::plugin::host,
                "sluice:plugin/batches": super::filter::sluice::plugin::batches,
            },
        });
    }

    pub use filter::sluice::plugin::{batches, host, types};
}

pub use v1::filter::sluice::plugin::{host, types};

impl From<types::Method> for http::Method {
    fn from(method: types::Method) -> Self {
        match method {
            types::Method::Get => http::Method::GET,
            types::Method::Post => http::Method::POST,
            types::Method::Put => http::Method::PUT,
            types::Method::Patch => http::Method::PATCH,
            types::Method::Delete => http::Method::DELETE,
        }
    }
}

/// 0.2.0's answers in the host's (0.1.0's) types: the two versions share every answer type.
mod convert {
    use super::{types as v1, v2::types as v2};

    impl From<v2::Signals> for v1::Signals {
        fn from(signals: v2::Signals) -> Self {
            let mut out = v1::Signals::empty();
            for (new, old) in [
                (v2::Signals::TRACES, v1::Signals::TRACES),
                (v2::Signals::METRICS, v1::Signals::METRICS),
                (v2::Signals::LOGS, v1::Signals::LOGS),
            ] {
                if signals.contains(new) {
                    out |= old;
                }
            }
            out
        }
    }

    impl From<v2::Value> for v1::Value {
        fn from(value: v2::Value) -> Self {
            match value {
                v2::Value::String(s) => v1::Value::String(s),
                v2::Value::Int(i) => v1::Value::Int(i),
                v2::Value::Double(d) => v1::Value::Double(d),
                v2::Value::Boolean(b) => v1::Value::Boolean(b),
            }
        }
    }

    impl From<v2::Target> for v1::Target {
        fn from(target: v2::Target) -> Self {
            match target {
                v2::Target::Resource(n) => v1::Target::Resource(n),
                v2::Target::Item(n) => v1::Target::Item(n),
            }
        }
    }

    impl From<v2::SetMode> for v1::SetMode {
        fn from(mode: v2::SetMode) -> Self {
            match mode {
                v2::SetMode::Insert => v1::SetMode::Insert,
                v2::SetMode::Update => v1::SetMode::Update,
                v2::SetMode::Upsert => v1::SetMode::Upsert,
            }
        }
    }

    impl From<v2::Edit> for v1::Edit {
        fn from(edit: v2::Edit) -> Self {
            match edit {
                v2::Edit::SetAttribute(s) => v1::Edit::SetAttribute(v1::SetAttribute {
                    target: s.target.into(),
                    key: s.key,
                    value: s.value.into(),
                    mode: s.mode.into(),
                }),
                v2::Edit::DeleteAttribute(d) => {
                    v1::Edit::DeleteAttribute(v1::DeleteAttribute { target: d.target.into(), key: d.key })
                }
                v2::Edit::RenameAttribute(r) => v1::Edit::RenameAttribute(v1::RenameAttribute {
                    target: r.target.into(),
                    key: r.key,
                    new_key: r.new_key,
                }),
                v2::Edit::RenameMetric(r) => {
                    v1::Edit::RenameMetric(v1::RenameMetric { item: r.item, new_name: r.new_name })
                }
            }
        }
    }

    impl From<v2::Routing> for v1::Routing {
        fn from(routing: v2::Routing) -> Self {
            v1::Routing { routes: routing.routes, by_item: routing.by_item }
        }
    }

    impl From<v2::Method> for v1::Method {
        fn from(method: v2::Method) -> Self {
            match method {
                v2::Method::Get => v1::Method::Get,
                v2::Method::Post => v1::Method::Post,
                v2::Method::Put => v1::Method::Put,
                v2::Method::Patch => v1::Method::Patch,
                v2::Method::Delete => v1::Method::Delete,
            }
        }
    }

    impl From<v2::HttpRequest> for v1::HttpRequest {
        fn from(request: v2::HttpRequest) -> Self {
            v1::HttpRequest {
                method: request.method.into(),
                path: request.path,
                headers: request.headers,
                body: request.body,
            }
        }
    }

    impl From<v1::Signal> for v2::Signal {
        fn from(signal: v1::Signal) -> Self {
            match signal {
                v1::Signal::Traces => v2::Signal::Traces,
                v1::Signal::Metrics => v2::Signal::Metrics,
                v1::Signal::Logs => v2::Signal::Logs,
            }
        }
    }
}
