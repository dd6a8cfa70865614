//! Filters keep or drop items.

use sluice_wire::views::{self, LogRecordView, MetricView, ResourceView, SpanView};

use crate::{Config, Signal, Signals};

/// A filter plugin. Override the `keep_*` methods for the signals it handles; the defaults keep
/// everything.
pub trait Filter: Sized + 'static {
    /// The signals to be called for.
    const SIGNALS: Signals = Signals::ALL;

    /// Builds the plugin from its config; an error refuses the plugin with that message.
    fn init(config: &Config) -> Result<Self, String>;

    /// Whether to keep a span.
    fn keep_span(&self, _span: &SpanView<'_>, _resource: &ResourceView<'_>) -> bool {
        true
    }

    /// Whether to keep a metric (with all its data points).
    fn keep_metric(&self, _metric: &MetricView<'_>, _resource: &ResourceView<'_>) -> bool {
        true
    }

    /// Whether to keep a log record.
    fn keep_log(&self, _log: &LogRecordView<'_>, _resource: &ResourceView<'_>) -> bool {
        true
    }
}

/// The indexes of the items `plugin` drops, ascending.
pub fn dropped<F: Filter>(plugin: &F, signal: Signal, batch: &[u8]) -> Vec<u32> {
    views::items(signal, batch)
        .filter(|item| {
            let keep = match signal {
                Signal::Traces => plugin.keep_span(&SpanView::new(item.bytes), &item.resource),
                Signal::Metrics => plugin.keep_metric(&MetricView::new(item.bytes), &item.resource),
                Signal::Logs => plugin.keep_log(&LogRecordView::new(item.bytes), &item.resource),
            };
            !keep
        })
        .map(|item| item.index)
        .collect()
}

/// Exports a [`Filter`] as the plugin's `filter` world.
#[macro_export]
macro_rules! export_filter {
    ($plugin:ty) => {
        const _: () = {
            $crate::__instance_slot!($plugin);
            struct Exports;
            impl $crate::bindings::filter::Guest for Exports {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<$crate::bindings::types::PluginInfo, ::std::string::String>
                {
                    let signals = <$plugin as $crate::Filter>::SIGNALS;
                    $crate::__init(&INSTANCE, &config, <$plugin as $crate::Filter>::init, signals)
                }
                fn filter(
                    batch: &$crate::bindings::batches::Batch,
                ) -> ::std::result::Result<::std::vec::Vec<u32>, ::std::string::String> {
                    $crate::__with_instance(&INSTANCE, |plugin| {
                        let (signal, bytes) = $crate::__batch_bytes(batch);
                        ::std::result::Result::Ok($crate::filter::dropped(plugin, signal, &bytes))
                    })
                }
            }
    $crate::bindings::filter::export_filter_world!(Exports with_types_in $crate::bindings::filter);
        };
    };
}

/// The batch as the host reads it for the plugin: the `batch` resource of
/// `sluice:plugin@0.2.0`. Each method is one call into the host, answered from its views of the
/// encoded request; nothing is parsed in the guest.
pub use crate::bindings::batches::Batch as HostBatch;

/// A filter that reads the batch through the host ([`HostBatch`]) instead of walking its bytes
/// in the guest. Worth it for rules that ask a few questions of every item at once
/// ([`HostBatch::names`], [`HostBatch::attribute_of_each`]); per-item calls cost a host call
/// each, where [`Filter`]'s walk costs nothing per field.
pub trait BatchFilter: Sized + 'static {
    /// The signals to be called for.
    const SIGNALS: Signals = Signals::ALL;

    /// Builds the plugin from its config; an error refuses the plugin with that message.
    fn init(config: &Config) -> Result<Self, String>;

    /// The indexes of the items to drop, ascending.
    fn dropped(&self, batch: &HostBatch) -> Vec<u32>;
}

/// Exports a [`BatchFilter`] as the plugin's `filter` world.
#[macro_export]
macro_rules! export_batch_filter {
    ($plugin:ty) => {
        const _: () = {
            $crate::__instance_slot!($plugin);
            struct Exports;
            impl $crate::bindings::filter::Guest for Exports {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<$crate::bindings::types::PluginInfo, ::std::string::String>
                {
                    let signals = <$plugin as $crate::filter::BatchFilter>::SIGNALS;
                    $crate::__init(
                        &INSTANCE,
                        &config,
                        <$plugin as $crate::filter::BatchFilter>::init,
                        signals,
                    )
                }
                fn filter(
                    batch: &$crate::bindings::batches::Batch,
                ) -> ::std::result::Result<::std::vec::Vec<u32>, ::std::string::String> {
                    $crate::__with_instance(&INSTANCE, |plugin| {
                        ::std::result::Result::Ok($crate::filter::BatchFilter::dropped(plugin, batch))
                    })
                }
            }
    $crate::bindings::filter::export_filter_world!(Exports with_types_in $crate::bindings::filter);
        };
    };
}
