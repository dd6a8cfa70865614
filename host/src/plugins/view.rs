//! The `batch` resource of `sluice:plugin@0.2.0`: a plugin reads the batch through the host's
//! zero-copy views instead of walking the protobuf itself, which is what makes a plugin in any
//! language cheap to write (a Python guest would spend far longer parsing than the host does).
//!
//! The resource holds the encoded request (a reference count, not a copy) and, on first use, an
//! index of where each item and resource lies in it; every accessor then reads just the fields
//! it answers with. Nothing is decoded into owned messages except an array or key-value list
//! attribute, which is handed over as its OTLP JSON text.

use std::ops::Range;
use std::sync::OnceLock;

use bytes::Bytes;
use prost::Message;
use sluice_wire::otlp::{AnyValue, Attributes, METRIC_DATA, METRIC_DATA_POINTS, Request};
use sluice_wire::views::{LogRecordView, MetricView, ResourceView, SpanView};
use sluice_wire::wire::Fields;

use crate::config::Signal;

const SPAN_STATUS: u32 = 15;
const STATUS_MESSAGE: u32 = 2;
const LOG_EVENT_NAME: u32 = 12;

/// One batch as a plugin call sees it.
#[derive(Debug)]
pub struct BatchView {
    signal: Signal,
    bytes: Bytes,
    index: OnceLock<Index>,
}

/// Where things are in the encoded request.
#[derive(Debug, Default)]
struct Index {
    /// Each item's bytes and its resource group.
    items: Vec<(Range<usize>, u32)>,
    /// Each resource group's encoded `Resource`.
    resources: Vec<Range<usize>>,
}

/// An attribute value, borrowed from the batch.
pub type Value<'a> = AnyValue<'a>;

impl BatchView {
    /// The view of `bytes`, an encoded request of `signal` (already checked at the door).
    pub fn new(signal: Signal, bytes: Bytes) -> Self {
        Self { signal, bytes, index: OnceLock::new() }
    }

    /// The signal.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// The encoded request.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded request, sharing its buffer.
    pub fn shared_bytes(&self) -> Bytes {
        self.bytes.clone()
    }

    fn index(&self) -> &Index {
        self.index.get_or_init(|| {
            let base = self.bytes.as_ptr() as usize;
            let range = |slice: &[u8]| {
                let start = slice.as_ptr() as usize - base;
                start..start + slice.len()
            };
            let mut index = Index::default();
            // The receivers checked the whole request; a part that doesn't read ends the index.
            for (n, group) in
                Request::new(self.signal, &self.bytes).resources().map_while(Result::ok).enumerate()
            {
                let resource = group.resource().unwrap_or(&[]);
                index.resources.push(if resource.is_empty() { 0..0 } else { range(resource) });
                for scope in group.scopes().map_while(Result::ok) {
                    for item in scope.items().map_while(Result::ok) {
                        index.items.push((range(item), n as u32));
                    }
                }
            }
            index
        })
    }

    /// How many items it holds.
    pub fn len(&self) -> u32 {
        self.index().items.len() as u32
    }

    /// Whether it holds no item.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many resource groups it holds.
    pub fn resource_count(&self) -> u32 {
        self.index().resources.len() as u32
    }

    /// Item `item`'s encoded bytes.
    fn item(&self, item: u32) -> Option<&[u8]> {
        self.index().items.get(item as usize).map(|(range, _)| &self.bytes[range.clone()])
    }

    /// The resource group of item `item`.
    pub fn resource_of(&self, item: u32) -> Option<u32> {
        self.index().items.get(item as usize).map(|(_, resource)| *resource)
    }

    /// Resource group `resource`'s attributes.
    pub fn resource_attributes(&self, resource: u32) -> Option<Attributes<'_>> {
        let range = self.index().resources.get(resource as usize)?;
        Some(ResourceView::new(&self.bytes[range.clone()]).attributes())
    }

    /// Item `item`'s attributes (a metric's: its first data point's).
    pub fn attributes(&self, item: u32) -> Option<Attributes<'_>> {
        let bytes = self.item(item)?;
        Some(match self.signal {
            Signal::Traces => SpanView::new(bytes).attributes(),
            Signal::Logs => LogRecordView::new(bytes).attributes(),
            Signal::Metrics => first_point_attributes(bytes),
        })
    }

    /// Item `item`'s name: a span's or metric's name, a log record's event name.
    pub fn name(&self, item: u32) -> &str {
        let Some(bytes) = self.item(item) else { return "" };
        match self.signal {
            Signal::Traces => SpanView::new(bytes).name(),
            Signal::Metrics => MetricView::new(bytes).name(),
            Signal::Logs => string_field(bytes, LOG_EVENT_NAME),
        }
    }

    /// Item `item` as a span, if the batch holds spans.
    pub fn span(&self, item: u32) -> Option<SpanView<'_>> {
        (self.signal == Signal::Traces).then(|| self.item(item).map(SpanView::new)).flatten()
    }

    /// A span's status message.
    pub fn status_message(&self, item: u32) -> &str {
        let status = self.item(item).and_then(|bytes| bytes_field(bytes, SPAN_STATUS)).unwrap_or(&[]);
        string_field(status, STATUS_MESSAGE)
    }

    /// Item `item` as a log record, if the batch holds logs.
    pub fn log(&self, item: u32) -> Option<LogRecordView<'_>> {
        (self.signal == Signal::Logs).then(|| self.item(item).map(LogRecordView::new)).flatten()
    }

    /// Item `item` as a metric, if the batch holds metrics, with its data's type (`None`: no
    /// data field).
    pub fn metric(&self, item: u32) -> Option<(MetricView<'_>, Option<MetricData>)> {
        if self.signal != Signal::Metrics {
            return None;
        }
        let bytes = self.item(item)?;
        let data = Fields::new(bytes).map_while(Result::ok).find_map(|field| match field.number {
            5 => Some(MetricData::Gauge),
            7 => Some(MetricData::Sum),
            9 => Some(MetricData::Histogram),
            10 => Some(MetricData::ExponentialHistogram),
            11 => Some(MetricData::Summary),
            _ => None,
        });
        Some((MetricView::new(bytes), data))
    }
}

/// Which data a metric holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricData {
    /// `gauge`.
    Gauge,
    /// `sum`.
    Sum,
    /// `histogram`.
    Histogram,
    /// `exponential_histogram`.
    ExponentialHistogram,
    /// `summary`.
    Summary,
}

fn bytes_field(buf: &[u8], number: u32) -> Option<&[u8]> {
    Fields::new(buf).map_while(Result::ok).find(|f| f.number == number).and_then(|f| f.bytes().ok())
}

fn string_field(buf: &[u8], number: u32) -> &str {
    bytes_field(buf, number).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("")
}

/// The attributes of a metric's first data point (none when it has no point).
fn first_point_attributes(metric: &[u8]) -> Attributes<'_> {
    for field in Fields::new(metric).map_while(Result::ok) {
        let Some(&(_, number)) = METRIC_DATA.iter().find(|(data, _)| *data == field.number) else { continue };
        let data = field.bytes().unwrap_or(&[]);
        if let Some(point) = bytes_field(data, METRIC_DATA_POINTS) {
            return Attributes::new(point, number);
        }
    }
    Attributes::new(&[], 0)
}

/// The OTLP JSON text of an encoded `ArrayValue` or `KeyValueList`, for a guest that can't
/// receive nested values.
pub fn nested_json(value: &AnyValue<'_>) -> String {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    let json = match value {
        AnyValue::Array(bytes) => {
            ArrayValue::decode(*bytes).ok().and_then(|v| serde_json::to_string(&v).ok())
        }
        AnyValue::KvList(bytes) => {
            KeyValueList::decode(*bytes).ok().and_then(|v| serde_json::to_string(&v).ok())
        }
        _ => None,
    };
    json.unwrap_or_else(|| "null".into())
}

/// The `batch` resource's methods, answered from the view the call's resource names.
pub mod host {
    use wasmtime::component::{Linker, Resource};

    use super::{BatchView, MetricData, Value, nested_json};
    use crate::config::Signal;
    use crate::plugins::bindings::v2::{batches, types};
    use crate::plugins::sandbox::StoreState;

    /// A value in the guest's terms.
    fn value(value: Value<'_>) -> types::AttributeValue {
        match value {
            Value::String(bytes) => {
                types::AttributeValue::String(String::from_utf8_lossy(bytes).into_owned())
            }
            Value::Bool(b) => types::AttributeValue::Boolean(b),
            Value::Int(i) => types::AttributeValue::Int(i),
            Value::Double(d) => types::AttributeValue::Double(d),
            Value::Bytes(bytes) => types::AttributeValue::Bytes(bytes.to_vec()),
            Value::Array(_) | Value::KvList(_) => types::AttributeValue::Json(nested_json(&value)),
            Value::Empty => types::AttributeValue::Empty,
        }
    }

    fn attributes(found: Option<sluice_wire::otlp::Attributes<'_>>) -> Vec<types::Attribute> {
        found
            .into_iter()
            .flatten()
            .map_while(Result::ok)
            .map(|kv| types::Attribute {
                key: String::from_utf8_lossy(kv.key).into_owned(),
                value: value(kv.value),
            })
            .collect()
    }

    fn lookup(found: Option<sluice_wire::otlp::Attributes<'_>>, key: &str) -> Option<types::AttributeValue> {
        found.and_then(|attributes| attributes.get(key).ok().flatten()).map(value)
    }

    /// The import `batch.bytes` is served by, replacing the generated binding's: the bytes go
    /// from the batch's own buffer straight into the guest's memory. The generated host method
    /// returns a `Vec`, which copies the whole batch once more on the way (the copies into a
    /// guest went from 3.05% to 2.59% of a host running `pipelines/forward.toml` without it).
    pub fn serve_bytes_without_copy(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
        linker.allow_shadowing(true);
        let served = linker.instance("sluice:plugin/batches@0.2.0").and_then(|mut batches| {
            batches.func_wrap("[method]batch.bytes", |mut store, (this,): (Resource<BatchView>,)| {
                let state: &mut StoreState = store.data_mut();
                Ok((state.view(&this).shared_bytes(),))
            })
        });
        linker.allow_shadowing(false);
        served
    }

    impl StoreState {
        /// The view behind `handle`. The host made the handle for this call and deletes it
        /// after, so a guest can only name one that exists; an empty view stands in otherwise.
        fn view(&mut self, handle: &Resource<BatchView>) -> &BatchView {
            static EMPTY: std::sync::OnceLock<BatchView> = std::sync::OnceLock::new();
            match self.table().get(handle) {
                Ok(view) => view,
                Err(_) => EMPTY.get_or_init(|| BatchView::new(Signal::Traces, bytes::Bytes::new())),
            }
        }
    }

    impl batches::Host for StoreState {}

    impl batches::HostBatch for StoreState {
        fn signal(&mut self, this: Resource<BatchView>) -> types::Signal {
            match self.view(&this).signal() {
                Signal::Traces => types::Signal::Traces,
                Signal::Metrics => types::Signal::Metrics,
                Signal::Logs => types::Signal::Logs,
            }
        }

        fn len(&mut self, this: Resource<BatchView>) -> u32 {
            self.view(&this).len()
        }

        fn resource_count(&mut self, this: Resource<BatchView>) -> u32 {
            self.view(&this).resource_count()
        }

        fn resource_of(&mut self, this: Resource<BatchView>, item: u32) -> u32 {
            self.view(&this).resource_of(item).unwrap_or(u32::MAX)
        }

        fn resource_attribute(
            &mut self,
            this: Resource<BatchView>,
            resource: u32,
            key: String,
        ) -> Option<types::AttributeValue> {
            lookup(self.view(&this).resource_attributes(resource), &key)
        }

        fn resource_attributes(&mut self, this: Resource<BatchView>, resource: u32) -> Vec<types::Attribute> {
            attributes(self.view(&this).resource_attributes(resource))
        }

        fn name(&mut self, this: Resource<BatchView>, item: u32) -> String {
            self.view(&this).name(item).to_string()
        }

        fn names(&mut self, this: Resource<BatchView>) -> Vec<String> {
            let view = self.view(&this);
            (0..view.len()).map(|item| view.name(item).to_string()).collect()
        }

        fn attribute(
            &mut self,
            this: Resource<BatchView>,
            item: u32,
            key: String,
        ) -> Option<types::AttributeValue> {
            lookup(self.view(&this).attributes(item), &key)
        }

        fn attribute_of_each(
            &mut self,
            this: Resource<BatchView>,
            key: String,
        ) -> Vec<Option<types::AttributeValue>> {
            let view = self.view(&this);
            (0..view.len()).map(|item| lookup(view.attributes(item), &key)).collect()
        }

        fn attributes(&mut self, this: Resource<BatchView>, item: u32) -> Vec<types::Attribute> {
            attributes(self.view(&this).attributes(item))
        }

        fn span(&mut self, this: Resource<BatchView>, item: u32) -> Option<types::SpanFields> {
            let view = self.view(&this);
            let span = view.span(item)?;
            let (start, end) = span.times();
            Some(types::SpanFields {
                name: span.name().to_string(),
                kind: span.kind() as u32,
                trace_id: span.trace_id().to_vec(),
                span_id: span.span_id().to_vec(),
                parent_span_id: span.parent_span_id().to_vec(),
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                status_code: span.status_code() as u32,
                status_message: view.status_message(item).to_string(),
            })
        }

        fn log(&mut self, this: Resource<BatchView>, item: u32) -> Option<types::LogFields> {
            let log = self.view(&this).log(item)?;
            Some(types::LogFields {
                time_unix_nano: log.time_unix_nano(),
                severity_number: log.severity_number() as u32,
                severity_text: log.severity_text().to_string(),
                body: value(log.body()),
                trace_id: log.trace_id().to_vec(),
                span_id: log.span_id().to_vec(),
            })
        }

        fn metric(&mut self, this: Resource<BatchView>, item: u32) -> Option<types::MetricFields> {
            let (metric, data) = self.view(&this).metric(item)?;
            Some(types::MetricFields {
                name: metric.name().to_string(),
                description: metric.description().to_string(),
                unit: metric.unit().to_string(),
                metric_type: match data {
                    Some(MetricData::Gauge) => types::MetricType::Gauge,
                    Some(MetricData::Sum) => types::MetricType::Sum,
                    Some(MetricData::Histogram) => types::MetricType::Histogram,
                    Some(MetricData::ExponentialHistogram) => types::MetricType::ExponentialHistogram,
                    Some(MetricData::Summary) => types::MetricType::Summary,
                    None => types::MetricType::Empty,
                },
                data_points: metric.data_points() as u32,
            })
        }

        /// What the generated binding would serve; the linker serves
        /// [`serve_bytes_without_copy`]'s instead, which returns the same bytes without copying.
        fn bytes(&mut self, this: Resource<BatchView>) -> Vec<u8> {
            self.view(&this).bytes().to_vec()
        }

        fn drop(&mut self, this: Resource<BatchView>) -> wasmtime::Result<()> {
            // The host deletes the batch after the call; a guest dropping its borrow is a no-op.
            let _ = this;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::spans;

    #[test]
    fn items_resources_names_and_attributes_read_from_the_bytes() {
        let batch = spans(&["GET /healthz", "checkout"]);
        let view = BatchView::new(Signal::Traces, batch.payload().clone());
        assert_eq!((view.len(), view.resource_count()), (2, 1));
        assert_eq!((view.name(0), view.name(1), view.name(2)), ("GET /healthz", "checkout", ""));
        assert_eq!(view.resource_of(1), Some(0));
        assert_eq!(view.resource_of(2), None);
        let service = view.resource_attributes(0).expect("a resource").get("service.name").expect("valid");
        assert!(service.is_some());
        assert!(view.span(0).is_some() && view.log(0).is_none() && view.metric(0).is_none());
        assert_eq!(view.bytes(), batch.payload().as_ref());
    }
}
