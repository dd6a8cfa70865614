//! Typed, borrowed views of spans, metrics, log records and resources — what a plugin reads.
//!
//! Each getter walks the item's top-level fields and returns a slice of the batch; nothing is
//! copied or allocated. A malformed field reads as absent rather than panicking.

use crate::otlp::{AnyValue, Attributes, Request, Signal};
use crate::wire::{Fields, Value};

fn first_bytes(buf: &[u8], number: u32) -> Option<&[u8]> {
    Fields::new(buf).next_bytes_of(number).and_then(Result::ok)
}

fn first_varint(buf: &[u8], number: u32) -> Option<u64> {
    Fields::new(buf).map_while(Result::ok).find(|f| f.number == number).and_then(|f| f.varint().ok())
}

/// The fixed64 fields `numbers` of the message in `buf` (the last of each wins; 0 when absent).
fn fixed64s<const N: usize>(buf: &[u8], numbers: [u32; N]) -> [u64; N] {
    let mut values = [0; N];
    for field in Fields::new(buf).map_while(Result::ok) {
        if let (Some(slot), Value::Fixed64(v)) =
            (numbers.iter().position(|&n| n == field.number), field.value)
        {
            values[slot] = v;
        }
    }
    values
}

fn str_of(bytes: Option<&[u8]>) -> &str {
    bytes.and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("")
}

macro_rules! attribute_getters {
    ($field:expr) => {
        /// The attributes.
        pub fn attributes(&self) -> Attributes<'a> {
            Attributes::new(self.buf, $field)
        }

        /// The value of attribute `key`, if present and well-formed.
        pub fn attribute(&self, key: &str) -> Option<AnyValue<'a>> {
            self.attributes().get(key).ok().flatten()
        }

        /// The value of attribute `key` if it is a string.
        pub fn str_attribute(&self, key: &str) -> Option<&'a str> {
            self.attribute(key).and_then(|v| v.as_str())
        }
    };
}

/// A resource: the entity producing the telemetry.
#[derive(Debug, Clone, Copy)]
pub struct ResourceView<'a> {
    buf: &'a [u8],
}

impl<'a> ResourceView<'a> {
    /// Views an encoded `Resource` (empty for none).
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    attribute_getters!(1);

    /// `service.name`, or "" when absent.
    pub fn service_name(&self) -> &'a str {
        self.str_attribute("service.name").unwrap_or("")
    }
}

/// A span.
#[derive(Debug, Clone, Copy)]
pub struct SpanView<'a> {
    buf: &'a [u8],
}

impl<'a> SpanView<'a> {
    /// Views an encoded `Span`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// The operation name.
    pub fn name(&self) -> &'a str {
        str_of(first_bytes(self.buf, 5))
    }

    /// The 16-byte trace ID (empty if absent).
    pub fn trace_id(&self) -> &'a [u8] {
        first_bytes(self.buf, 1).unwrap_or(&[])
    }

    /// The 8-byte span ID (empty if absent).
    pub fn span_id(&self) -> &'a [u8] {
        first_bytes(self.buf, 2).unwrap_or(&[])
    }

    /// The parent's span ID (empty for a root span).
    pub fn parent_span_id(&self) -> &'a [u8] {
        first_bytes(self.buf, 4).unwrap_or(&[])
    }

    /// `SpanKind` as its number (0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub fn kind(&self) -> u64 {
        first_varint(self.buf, 6).unwrap_or(0)
    }

    /// Start and end time in Unix nanoseconds.
    pub fn times(&self) -> (u64, u64) {
        let [start, end] = fixed64s(self.buf, [7, 8]);
        (start, end)
    }

    /// The status code (0 unset, 1 ok, 2 error).
    pub fn status_code(&self) -> u64 {
        first_bytes(self.buf, 15).and_then(|status| first_varint(status, 3)).unwrap_or(0)
    }

    attribute_getters!(9);
}

/// A metric (with all its data points).
#[derive(Debug, Clone, Copy)]
pub struct MetricView<'a> {
    buf: &'a [u8],
}

impl<'a> MetricView<'a> {
    /// Views an encoded `Metric`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// The metric's name.
    pub fn name(&self) -> &'a str {
        str_of(first_bytes(self.buf, 1))
    }

    /// The description.
    pub fn description(&self) -> &'a str {
        str_of(first_bytes(self.buf, 2))
    }

    /// The unit (UCUM), e.g. `"By"` or `"s"`.
    pub fn unit(&self) -> &'a str {
        str_of(first_bytes(self.buf, 3))
    }

    /// The number of data points.
    pub fn data_points(&self) -> u64 {
        crate::otlp::data_points(self.buf).unwrap_or(0)
    }
}

/// A log record.
#[derive(Debug, Clone, Copy)]
pub struct LogRecordView<'a> {
    buf: &'a [u8],
}

impl<'a> LogRecordView<'a> {
    /// Views an encoded `LogRecord`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// `SeverityNumber` (1–4 trace, 5–8 debug, 9–12 info, 13–16 warn, 17–20 error, 21–24 fatal; 0 unset).
    pub fn severity_number(&self) -> u64 {
        first_varint(self.buf, 2).unwrap_or(0)
    }

    /// The severity text as the source wrote it.
    pub fn severity_text(&self) -> &'a str {
        str_of(first_bytes(self.buf, 3))
    }

    /// The body.
    pub fn body(&self) -> AnyValue<'a> {
        first_bytes(self.buf, 5).and_then(|b| AnyValue::parse(b).ok()).unwrap_or(AnyValue::Empty)
    }

    /// The trace ID, when the record belongs to a trace.
    pub fn trace_id(&self) -> &'a [u8] {
        first_bytes(self.buf, 9).unwrap_or(&[])
    }

    /// The span ID, when the record belongs to a span.
    pub fn span_id(&self) -> &'a [u8] {
        first_bytes(self.buf, 10).unwrap_or(&[])
    }

    /// When the event happened in Unix nanoseconds: `time_unix_nano`, or the
    /// `observed_time_unix_nano` when the source left it unset (as the data model says), or 0.
    pub fn time_unix_nano(&self) -> u64 {
        let [time, observed] = fixed64s(self.buf, [1, 11]);
        if time != 0 { time } else { observed }
    }

    attribute_getters!(6);
}

/// One item of a batch with its position and its resource.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// The item's index in the batch (what verdicts address).
    pub index: u32,
    /// The index of its resource group.
    pub resource_index: u32,
    /// Its resource.
    pub resource: ResourceView<'a>,
    /// The encoded span, metric or log record.
    pub bytes: &'a [u8],
}

/// Every item of a batch in order, with its resource. Stops at the first malformed part.
pub fn items(signal: Signal, batch: &[u8]) -> impl Iterator<Item = Item<'_>> {
    let mut index = 0u32;
    Request::new(signal, batch)
        .resources()
        .map_while(Result::ok)
        .enumerate()
        .flat_map(move |(r, group)| {
            let resource = ResourceView::new(group.resource().unwrap_or(&[]));
            group
                .scopes()
                .map_while(Result::ok)
                .flat_map(|scope| scope.items().map_while(Result::ok))
                .map(move |bytes| (r as u32, resource, bytes))
        })
        .map(move |(resource_index, resource, bytes)| {
            let item = Item { index, resource_index, resource, bytes };
            index += 1;
            item
        })
}

/// Every resource of a batch in order.
pub fn resources(signal: Signal, batch: &[u8]) -> impl Iterator<Item = ResourceView<'_>> {
    Request::new(signal, batch)
        .resources()
        .map_while(Result::ok)
        .map(|g| ResourceView::new(g.resource().unwrap_or(&[])))
}
