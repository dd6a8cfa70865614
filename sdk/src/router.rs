//! Routers choose a named route per item; the pipeline maps route names to exporters.

use sluice_wire::views::{self, LogRecordView, MetricView, ResourceView, SpanView};

use crate::bindings::types as wit;
use crate::{Config, Signal, Signals};

/// A router plugin. Each method returns a route name, or `None` for the pipeline's default
/// exporters; the defaults send everything to the default route.
pub trait Router: Sized + 'static {
    /// The signals to be called for.
    const SIGNALS: Signals = Signals::ALL;

    /// Builds the plugin from its config; an error refuses the plugin with that message.
    fn init(config: &Config) -> Result<Self, String>;

    /// The route of a span.
    fn route_span(&self, _span: &SpanView<'_>, _resource: &ResourceView<'_>) -> Option<&str> {
        None
    }

    /// The route of a metric.
    fn route_metric(&self, _metric: &MetricView<'_>, _resource: &ResourceView<'_>) -> Option<&str> {
        None
    }

    /// The route of a log record.
    fn route_log(&self, _log: &LogRecordView<'_>, _resource: &ResourceView<'_>) -> Option<&str> {
        None
    }
}

/// The route of every item of `batch`.
pub fn routing<R: Router>(plugin: &R, signal: Signal, batch: &[u8]) -> wit::Routing {
    let mut routing = wit::Routing { routes: Vec::new(), by_item: Vec::new() };
    for item in views::items(signal, batch) {
        let route = match signal {
            Signal::Traces => plugin.route_span(&SpanView::new(item.bytes), &item.resource),
            Signal::Metrics => plugin.route_metric(&MetricView::new(item.bytes), &item.resource),
            Signal::Logs => plugin.route_log(&LogRecordView::new(item.bytes), &item.resource),
        };
        let index = match route {
            None => 0,
            Some(name) => match routing.routes.iter().position(|r| r == name) {
                Some(i) => i as u32 + 1,
                None => {
                    routing.routes.push(name.to_string());
                    routing.routes.len() as u32
                }
            },
        };
        routing.by_item.push(index);
    }
    routing
}

/// Exports a [`Router`] as the plugin's `router` world.
#[macro_export]
macro_rules! export_router {
    ($plugin:ty) => {
        const _: () = {
            $crate::__instance_slot!($plugin);
            struct Exports;
            impl $crate::bindings::router::Guest for Exports {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<$crate::bindings::types::PluginInfo, ::std::string::String>
                {
                    let signals = <$plugin as $crate::Router>::SIGNALS;
                    $crate::__init(&INSTANCE, &config, <$plugin as $crate::Router>::init, signals)
                }
                fn route(
                    batch: &$crate::bindings::batches::Batch,
                ) -> ::std::result::Result<$crate::bindings::types::Routing, ::std::string::String> {
                    $crate::__with_instance(&INSTANCE, |plugin| {
                        let (signal, bytes) = $crate::__batch_bytes(batch);
                        ::std::result::Result::Ok($crate::router::routing(plugin, signal, &bytes))
                    })
                }
            }
    $crate::bindings::router::export_router_world!(Exports with_types_in $crate::bindings::router);
        };
    };
}
