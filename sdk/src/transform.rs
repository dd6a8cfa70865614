//! Transforms change attributes, resource attributes and metric names.
//!
//! The plugin doesn't rewrite the batch: it records [`Edits`], and the host applies them to the
//! encoded bytes, rewriting only the items and resources they touch.

use sluice_wire::views::{self, LogRecordView, MetricView, ResourceView, SpanView};

use crate::bindings::types as wit;
use crate::{Config, Signal, Signals};

/// An attribute value to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(String),
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Double(f64),
    /// A boolean.
    Bool(bool),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Double(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<Value> for wit::Value {
    fn from(value: Value) -> Self {
        match value {
            Value::Str(s) => wit::Value::String(s),
            Value::Int(i) => wit::Value::Int(i),
            Value::Double(d) => wit::Value::Double(d),
            Value::Bool(b) => wit::Value::Boolean(b),
        }
    }
}

/// The edits for the resource or item currently being visited.
#[derive(Debug)]
pub struct Edits {
    edits: Vec<wit::Edit>,
    target: wit::Target,
}

impl Edits {
    fn set(&mut self, key: &str, value: Value, mode: wit::SetMode) {
        self.edits.push(wit::Edit::SetAttribute(wit::SetAttribute {
            target: self.target,
            key: key.to_string(),
            value: value.into(),
            mode,
        }));
    }

    /// Sets `key`, replacing any value it has.
    pub fn upsert(&mut self, key: &str, value: impl Into<Value>) {
        self.set(key, value.into(), wit::SetMode::Upsert);
    }

    /// Sets `key` only if it is absent.
    pub fn insert(&mut self, key: &str, value: impl Into<Value>) {
        self.set(key, value.into(), wit::SetMode::Insert);
    }

    /// Sets `key` only if it is present.
    pub fn update(&mut self, key: &str, value: impl Into<Value>) {
        self.set(key, value.into(), wit::SetMode::Update);
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: &str) {
        self.edits.push(wit::Edit::DeleteAttribute(wit::DeleteAttribute {
            target: self.target,
            key: key.to_string(),
        }));
    }

    /// Renames `key` to `new_key`, keeping the value.
    pub fn rename(&mut self, key: &str, new_key: &str) {
        self.edits.push(wit::Edit::RenameAttribute(wit::RenameAttribute {
            target: self.target,
            key: key.to_string(),
            new_key: new_key.to_string(),
        }));
    }

    /// Renames the metric being visited (ignored by the host for other items).
    pub fn rename_metric(&mut self, new_name: &str) {
        if let wit::Target::Item(item) = self.target {
            self.edits
                .push(wit::Edit::RenameMetric(wit::RenameMetric { item, new_name: new_name.to_string() }));
        }
    }
}

/// A transform plugin. Override the methods for what it changes; the defaults change nothing.
pub trait Transform: Sized + 'static {
    /// The signals to be called for.
    const SIGNALS: Signals = Signals::ALL;

    /// Builds the plugin from its config; an error refuses the plugin with that message.
    fn init(config: &Config) -> Result<Self, String>;

    /// Whether [`Transform::span`], [`Transform::metric`] or [`Transform::log`] may edit
    /// anything, given the config: a transform that edits only resources answers `false`, and
    /// the batch's items are then not walked at all.
    fn visits_items(&self) -> bool {
        true
    }

    /// Visits each resource of a batch.
    fn resource(&self, _signal: Signal, _resource: &ResourceView<'_>, _edits: &mut Edits) {}

    /// Visits each span.
    fn span(&self, _span: &SpanView<'_>, _resource: &ResourceView<'_>, _edits: &mut Edits) {}

    /// Visits each metric; attribute edits apply to each of its data points.
    fn metric(&self, _metric: &MetricView<'_>, _resource: &ResourceView<'_>, _edits: &mut Edits) {}

    /// Visits each log record.
    fn log(&self, _log: &LogRecordView<'_>, _resource: &ResourceView<'_>, _edits: &mut Edits) {}
}

/// Everything `plugin` wants changed in `batch`.
pub fn edits<T: Transform>(plugin: &T, signal: Signal, batch: &[u8]) -> Vec<wit::Edit> {
    let mut edits = Edits { edits: Vec::new(), target: wit::Target::Resource(0) };
    for (index, resource) in views::resources(signal, batch).enumerate() {
        edits.target = wit::Target::Resource(index as u32);
        plugin.resource(signal, &resource, &mut edits);
    }
    if !plugin.visits_items() {
        return edits.edits;
    }
    for item in views::items(signal, batch) {
        edits.target = wit::Target::Item(item.index);
        match signal {
            Signal::Traces => plugin.span(&SpanView::new(item.bytes), &item.resource, &mut edits),
            Signal::Metrics => plugin.metric(&MetricView::new(item.bytes), &item.resource, &mut edits),
            Signal::Logs => plugin.log(&LogRecordView::new(item.bytes), &item.resource, &mut edits),
        }
    }
    edits.edits
}

/// Exports a [`Transform`] as the plugin's `transform` world.
#[macro_export]
macro_rules! export_transform {
    ($plugin:ty) => {
        const _: () = {
            $crate::__instance_slot!($plugin);
            struct Exports;
            impl $crate::bindings::transform::Guest for Exports {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<$crate::bindings::types::PluginInfo, ::std::string::String> {
                    let signals = <$plugin as $crate::Transform>::SIGNALS;
                    $crate::__init(&INSTANCE, &config, <$plugin as $crate::Transform>::init, signals)
                }
                fn transform(
                    batch: &$crate::bindings::batches::Batch,
                ) -> ::std::result::Result<::std::vec::Vec<$crate::bindings::types::Edit>, ::std::string::String> {
                    $crate::__with_instance(&INSTANCE, |plugin| {
                        let (signal, bytes) = $crate::__batch_bytes(batch);
                        ::std::result::Result::Ok($crate::transform::edits(plugin, signal, &bytes))
                    })
                }
            }
            $crate::bindings::transform::export_transform_world!(Exports with_types_in $crate::bindings::transform);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Signal;

    /// Tags resources only; a span visited would panic.
    struct ResourcesOnly;

    impl Transform for ResourcesOnly {
        fn init(_: &Config) -> Result<Self, String> {
            Ok(Self)
        }

        fn visits_items(&self) -> bool {
            false
        }

        fn resource(&self, _: Signal, _: &ResourceView<'_>, edits: &mut Edits) {
            edits.upsert("system", "graphistry");
        }

        fn span(&self, _: &SpanView<'_>, _: &ResourceView<'_>, _: &mut Edits) {
            panic!("a transform of resources only is never shown a span");
        }
    }

    #[test]
    fn a_transform_of_resources_only_is_not_shown_the_items() {
        // One resource group (field 1) holding one scope group (field 2) holding one span
        // (field 2) named "s" (field 5).
        let batch = [0x0a, 0x07, 0x12, 0x05, 0x12, 0x03, 0x2a, 0x01, b's'];
        assert_eq!(views::items(Signal::Traces, &batch).count(), 1, "the batch has a span");
        let edits = edits(&ResourcesOnly, Signal::Traces, &batch);
        assert_eq!(edits.len(), 1);
        assert!(
            matches!(&edits[0], wit::Edit::SetAttribute(set) if matches!(set.target, wit::Target::Resource(0)))
        );
    }
}
