//! Host bindings for the plugin worlds, generated from `sdk/wit` — the same folder the guest SDK
//! reads, so the two sides can never drift apart.
//!
//! Options left at their defaults: calls are synchronous (plugins run on the pipeline's own
//! thread, bounded by an epoch deadline, so async would only add a fiber per call) and host
//! imports cannot trap (`log` has no way to fail). The `types` and `host` interfaces are generated once (with the
//! filter world) and shared by the other worlds through `with`, so one `Level`, one
//! `Signal` and one `host::Host` implementation serve every plugin kind.

/// The `filter` world (owner of the shared interfaces).
#[allow(missing_docs)]
pub mod filter {
    wasmtime::component::bindgen!({
        world: "filter",
        path: "../sdk/wit",
    });
}

/// The `transform` world.
#[allow(missing_docs)]
pub mod transform {
    wasmtime::component::bindgen!({
        world: "transform",
        path: "../sdk/wit",
        with: {
            "sluice:plugin/types": super::filter::sluice::plugin::types,
            "sluice:plugin/host": super::filter::sluice::plugin::host,
        },
    });
}

/// The `router` world.
#[allow(missing_docs)]
pub mod router {
    wasmtime::component::bindgen!({
        world: "router",
        path: "../sdk/wit",
        with: {
            "sluice:plugin/types": super::filter::sluice::plugin::types,
            "sluice:plugin/host": super::filter::sluice::plugin::host,
        },
    });
}

/// The `exporter` world.
#[allow(missing_docs)]
pub mod exporter {
    wasmtime::component::bindgen!({
        world: "exporter",
        path: "../sdk/wit",
        with: {
            "sluice:plugin/types": super::filter::sluice::plugin::types,
            "sluice:plugin/host": super::filter::sluice::plugin::host,
        },
    });
}

pub use filter::sluice::plugin::{host, types};

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
