//! OTLP's message shapes as borrowed views over the wire format.
//!
//! All three export requests share one shape — resources holding scopes holding items — so the
//! views are written once and parameterised by [`Signal`]. For traces an item is a span, for logs
//! a log record, and for metrics the item counted is a data point (the unit OTLP's
//! `partial_success.rejected_data_points` speaks of), reached through a metric.

use crate::wire::{Error, Fields, Value};

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize), serde(rename_all = "lowercase"))]
pub enum Signal {
    /// `ExportTraceServiceRequest`.
    Traces,
    /// `ExportMetricsServiceRequest`.
    Metrics,
    /// `ExportLogsServiceRequest`.
    Logs,
}

impl Signal {
    /// Every signal, in a fixed order.
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    /// The signal's position in [`Signal::ALL`], for per-signal arrays.
    pub fn index(self) -> usize {
        match self {
            Signal::Traces => 0,
            Signal::Metrics => 1,
            Signal::Logs => 2,
        }
    }

    /// The lowercase name used in configs, URLs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// Field numbers shared by all three request shapes (see the OTLP .proto files).
const REQUEST_RESOURCES: u32 = 1;
const RESOURCE_GROUP_RESOURCE: u32 = 1;
const RESOURCE_GROUP_SCOPES: u32 = 2;
const SCOPE_GROUP_ITEMS: u32 = 2;
const RESOURCE_ATTRIBUTES: u32 = 1;
const KEY_VALUE_KEY: u32 = 1;
const KEY_VALUE_VALUE: u32 = 2;
/// A metric's data fields (gauge 5, sum 7, histogram 9, exponential histogram 10, summary 11),
/// each with the field number of its data points' attributes.
pub const METRIC_DATA: [(u32, u32); 5] = [(5, 7), (7, 7), (9, 9), (10, 1), (11, 7)];
// The data field numbers alone.
const METRIC_DATA_FIELDS: [u32; 5] =
    [METRIC_DATA[0].0, METRIC_DATA[1].0, METRIC_DATA[2].0, METRIC_DATA[3].0, METRIC_DATA[4].0];
/// The data points field inside each of a metric's data fields.
pub const METRIC_DATA_POINTS: u32 = 1;

/// Iterates the length-delimited values of field `number`, skipping every other field.
fn messages(buf: &[u8], number: u32) -> impl Iterator<Item = Result<&[u8], Error>> {
    Fields::new(buf).filter_map(move |field| match field {
        Ok(field) if field.number == number => Some(field.bytes()),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    })
}

/// An export request of one signal, not yet looked at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    signal: Signal,
    buf: &'a [u8],
}

impl<'a> Request<'a> {
    /// Views `buf` as an encoded `Export*ServiceRequest` of `signal`.
    pub fn new(signal: Signal, buf: &'a [u8]) -> Self {
        Self { signal, buf }
    }

    /// The signal.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// The `Resource{Spans,Metrics,Logs}` groups, in order.
    pub fn resources(self) -> impl Iterator<Item = Result<ResourceGroup<'a>, Error>> + 'a {
        let signal = self.signal;
        messages(self.buf, REQUEST_RESOURCES).map(move |r| r.map(|buf| ResourceGroup { signal, buf }))
    }
}

/// One `Resource{Spans,Metrics,Logs}`: a resource and the scopes under it.
#[derive(Debug, Clone, Copy)]
pub struct ResourceGroup<'a> {
    signal: Signal,
    buf: &'a [u8],
}

impl<'a> ResourceGroup<'a> {
    /// The encoded `Resource` message; empty when the group has none.
    pub fn resource(&self) -> Result<&'a [u8], Error> {
        let mut last = &[][..];
        for resource in messages(self.buf, RESOURCE_GROUP_RESOURCE) {
            // Protobuf merges repeated occurrences of a message field; OTLP senders emit one.
            last = resource?;
        }
        Ok(last)
    }

    /// The resource's attributes.
    pub fn attributes(&self) -> Result<Attributes<'a>, Error> {
        Ok(Attributes::new(self.resource()?, RESOURCE_ATTRIBUTES))
    }

    /// The `Scope{Spans,Metrics,Logs}` groups, in order.
    pub fn scopes(self) -> impl Iterator<Item = Result<ScopeGroup<'a>, Error>> + 'a {
        let signal = self.signal;
        messages(self.buf, RESOURCE_GROUP_SCOPES).map(move |r| r.map(|buf| ScopeGroup { signal, buf }))
    }
}

/// One `Scope{Spans,Metrics,Logs}`: an instrumentation scope and its items.
#[derive(Debug, Clone, Copy)]
pub struct ScopeGroup<'a> {
    signal: Signal,
    buf: &'a [u8],
}

impl<'a> ScopeGroup<'a> {
    /// The encoded spans, metrics or log records of this scope.
    pub fn items(self) -> impl Iterator<Item = Result<&'a [u8], Error>> + 'a {
        messages(self.buf, SCOPE_GROUP_ITEMS)
    }

    /// The signal the items belong to.
    pub fn signal(&self) -> Signal {
        self.signal
    }
}

/// A borrowed `AnyValue`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnyValue<'a> {
    /// `string_value` (UTF-8 is not checked here; readers that need `&str` check it).
    String(&'a [u8]),
    /// `bool_value`.
    Bool(bool),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `array_value`, still encoded.
    Array(&'a [u8]),
    /// `kvlist_value`, still encoded.
    KvList(&'a [u8]),
    /// `bytes_value`.
    Bytes(&'a [u8]),
    /// No value set.
    Empty,
}

impl<'a> AnyValue<'a> {
    /// Reads an encoded `AnyValue` message.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let mut value = AnyValue::Empty;
        for field in Fields::new(buf) {
            let field = field?;
            value = match (field.number, field.value) {
                (1, Value::Bytes(b)) => AnyValue::String(b),
                (2, Value::Varint(v)) => AnyValue::Bool(v != 0),
                (3, Value::Varint(v)) => AnyValue::Int(v as i64),
                (4, Value::Fixed64(v)) => AnyValue::Double(f64::from_bits(v)),
                (5, Value::Bytes(b)) => AnyValue::Array(b),
                (6, Value::Bytes(b)) => AnyValue::KvList(b),
                (7, Value::Bytes(b)) => AnyValue::Bytes(b),
                _ => continue,
            };
        }
        Ok(value)
    }

    /// The string value, if this is a valid UTF-8 `string_value`.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            AnyValue::String(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// One borrowed `KeyValue`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyValue<'a> {
    /// The key's bytes.
    pub key: &'a [u8],
    /// The value.
    pub value: AnyValue<'a>,
}

/// Iterates the `KeyValue` attributes held in one field of a message.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    fields: Fields<'a>,
    number: u32,
}

impl<'a> Attributes<'a> {
    /// The attributes in field `number` of the message in `buf`.
    pub fn new(buf: &'a [u8], number: u32) -> Self {
        Self { fields: Fields::new(buf), number }
    }

    /// The value of the first attribute named `key`. Only the matching attribute's value is
    /// parsed; the others are skipped after their key.
    pub fn get(mut self, key: &str) -> Result<Option<AnyValue<'a>>, Error> {
        while let Some(kv) = self.fields.next_bytes_of(self.number) {
            let kv = kv?;
            // Encoders write the key first (tag 0x0a, one-byte length): compare it in place and
            // skip the attribute without walking it when it doesn't match.
            if let [0x0a, len, rest @ ..] = kv
                && *len < 0x80
                && rest.len() >= *len as usize
                && &rest[..*len as usize] != key.as_bytes()
            {
                continue;
            }
            let mut value = None;
            let mut matched = false;
            for part in Fields::new(kv) {
                let part = part?;
                match part.number {
                    KEY_VALUE_KEY => matched = part.bytes()? == key.as_bytes(),
                    KEY_VALUE_VALUE => value = Some(part.bytes()?),
                    _ => {}
                }
            }
            if matched {
                return value.map_or(Ok(Some(AnyValue::Empty)), |v| AnyValue::parse(v).map(Some));
            }
        }
        Ok(None)
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<KeyValue<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let field = match self.fields.next()? {
                Ok(field) => field,
                Err(e) => return Some(Err(e)),
            };
            if field.number != self.number {
                continue;
            }
            return Some(field.bytes().and_then(parse_key_value));
        }
    }
}

fn parse_key_value(buf: &[u8]) -> Result<KeyValue<'_>, Error> {
    let mut kv = KeyValue { key: &[], value: AnyValue::Empty };
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            KEY_VALUE_KEY => kv.key = field.bytes()?,
            KEY_VALUE_VALUE => kv.value = AnyValue::parse(field.bytes()?)?,
            _ => {}
        }
    }
    Ok(kv)
}

/// What one pass over a request found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Resource groups.
    pub resources: u64,
    /// Spans, metric data points or log records.
    pub items: u64,
    /// Items the OTLP spec says a receiver must reject, which no exporter could represent
    /// faithfully: spans without a 16-byte trace ID and an 8-byte span ID, log records whose
    /// IDs are present but of the wrong length, number data points without a value, histogram
    /// data points whose bucket counts (when given) don't number one more than their bounds.
    pub invalid_items: u64,
}

/// Checks a request completely and counts its items, in one pass without allocating: what it
/// accepts, every later stage can decode (see [`check`](crate::check)).
pub fn summarize(signal: Signal, buf: &[u8]) -> Result<Summary, Error> {
    crate::check::check(signal, buf)
}

/// Counts the data points of one encoded `Metric`.
pub fn data_points(metric: &[u8]) -> Result<u64, Error> {
    let mut points = 0;
    for field in Fields::new(metric) {
        let field = field?;
        if METRIC_DATA_FIELDS.contains(&field.number) {
            for point in messages(field.bytes()?, METRIC_DATA_POINTS) {
                point?;
                points += 1;
            }
        }
    }
    Ok(points)
}

/// The distinct `service.name` values of a request's resources, in order of appearance.
pub fn service_names(signal: Signal, buf: &[u8]) -> Result<Vec<&str>, Error> {
    let mut names = Vec::new();
    for group in Request::new(signal, buf).resources() {
        let name = group?.attributes()?.get("service.name")?.and_then(|v| v.as_str());
        if let Some(name) = name.filter(|n| !names.contains(n)) {
            names.push(name);
        }
    }
    Ok(names)
}
