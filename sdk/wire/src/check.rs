//! The whole-request check: every field of every nested message walked in place against OTLP's
//! schema, with the reference decoder's rules, so that what it accepts every later stage can
//! decode.
//!
//! A receiver that checked only the framing down to the items would acknowledge requests that
//! an exporter then fails to decode (a string that is not UTF-8 three levels into an attribute,
//! a varint where a message is due, attribute values nested past the decoder's recursion
//! limit) and the items would be lost after the client was told they were accepted. The walk
//! here accepts exactly what prost's generated decoders accept — wire types per field, packed
//! and unpacked repeated scalars, UTF-8 in `string` fields, unknown fields (groups included)
//! skipped, the recursion limit of 100 — and allocates nothing. The property tests in
//! `tests/against_prost.rs` hold it to that on generated and mutated requests.

use crate::otlp::{Signal, Summary};
use crate::wire::{Error, ErrorKind, read_key, read_varint, skip_group, take};

/// How deep messages may nest below the request: prost's `RECURSION_LIMIT`.
const RECURSION_LIMIT: u32 = 100;

/// How the schema declares a field.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `int32`, `int64`, `uint32`, `uint64`, `sint32`, `bool` or an enum: any varint.
    Varint,
    /// `fixed64`, `sfixed64` or `double`.
    Fixed64,
    /// `fixed32`.
    Fixed32,
    /// `string`: UTF-8.
    Str,
    /// `bytes`.
    Bytes,
    /// A trace ID (`bytes`), whose length the summary checks on spans and log records.
    TraceId,
    /// A span ID (`bytes`), likewise.
    SpanId,
    /// An embedded message, single or repeated.
    Message(&'static Schema),
    /// A number data point's value (`as_double` or `as_int`): a `fixed64` whose presence the
    /// summary checks.
    PointValue,
    /// A histogram data point's `bucket_counts` (`repeated fixed64`, packed or one by one),
    /// counted to check against its bounds.
    BucketCounts,
    /// A histogram data point's `explicit_bounds` (`repeated double`), counted likewise.
    ExplicitBounds,
    /// `repeated uint64`: packed or one by one.
    RepeatedVarint,
}

/// What a message counts for in the [`Summary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Nothing.
    Plain,
    /// A `Resource{Spans,Metrics,Logs}`.
    ResourceGroup,
    /// A span: an item whose IDs are required.
    Span,
    /// A log record: an item whose IDs are optional.
    LogRecord,
    /// A metric data point: an item.
    DataPoint,
    /// A number data point: an item that needs a value.
    NumberPoint,
    /// A histogram data point: an item whose bucket counts, when given, number one more than
    /// its bounds.
    HistogramPoint,
}

/// Field numbers above this are unknown in every OTLP message.
const MAX_FIELD: usize = 16;

/// One message type: its known fields, indexed by number, and its role.
#[derive(Debug)]
struct Schema {
    kinds: [Option<Kind>; MAX_FIELD + 1],
    role: Role,
}

impl Schema {
    /// The schema of a message with `fields` (number and kind) and `role`.
    const fn new(fields: &[(u32, Kind)], role: Role) -> Self {
        let mut kinds = [None; MAX_FIELD + 1];
        let mut i = 0;
        while i < fields.len() {
            kinds[fields[i].0 as usize] = Some(fields[i].1);
            i += 1;
        }
        Schema { kinds, role }
    }

    #[inline]
    fn kind(&self, number: u32) -> Option<Kind> {
        self.kinds.get(number as usize).copied().flatten()
    }
}

const fn plain(fields: &[(u32, Kind)]) -> Schema {
    Schema::new(fields, Role::Plain)
}

use Kind::{
    BucketCounts, Bytes, ExplicitBounds, Fixed32, Fixed64, Message, PointValue, RepeatedVarint, SpanId, Str,
    TraceId, Varint,
};

// opentelemetry/proto/common/v1/common.proto
static ANY_VALUE: Schema = plain(&[
    (1, Str),
    (2, Varint),
    (3, Varint),
    (4, Fixed64),
    (5, Message(&ARRAY_VALUE)),
    (6, Message(&KEY_VALUE_LIST)),
    (7, Bytes),
    (8, Varint),
]);
static ARRAY_VALUE: Schema = plain(&[(1, Message(&ANY_VALUE))]);
static KEY_VALUE_LIST: Schema = plain(&[(1, Message(&KEY_VALUE))]);
static KEY_VALUE: Schema = plain(&[(1, Str), (2, Message(&ANY_VALUE)), (3, Varint)]);
static SCOPE: Schema = plain(&[(1, Str), (2, Str), (3, Message(&KEY_VALUE)), (4, Varint)]);
static ENTITY_REF: Schema = plain(&[(1, Str), (2, Str), (3, Str), (4, Str)]);
// opentelemetry/proto/resource/v1/resource.proto
static RESOURCE: Schema = plain(&[(1, Message(&KEY_VALUE)), (2, Varint), (3, Message(&ENTITY_REF))]);

// opentelemetry/proto/trace/v1/trace.proto
static TRACE_REQUEST: Schema = plain(&[(1, Message(&RESOURCE_SPANS))]);
static RESOURCE_SPANS: Schema =
    Schema::new(&[(1, Message(&RESOURCE)), (2, Message(&SCOPE_SPANS)), (3, Str)], Role::ResourceGroup);
static SCOPE_SPANS: Schema = plain(&[(1, Message(&SCOPE)), (2, Message(&SPAN)), (3, Str)]);
static SPAN: Schema = Schema::new(
    &[
        (1, TraceId),
        (2, SpanId),
        (3, Str),
        (4, Bytes),
        (5, Str),
        (6, Varint),
        (7, Fixed64),
        (8, Fixed64),
        (9, Message(&KEY_VALUE)),
        (10, Varint),
        (11, Message(&SPAN_EVENT)),
        (12, Varint),
        (13, Message(&SPAN_LINK)),
        (14, Varint),
        (15, Message(&STATUS)),
        (16, Fixed32),
    ],
    Role::Span,
);
static SPAN_EVENT: Schema = plain(&[(1, Fixed64), (2, Str), (3, Message(&KEY_VALUE)), (4, Varint)]);
static SPAN_LINK: Schema =
    plain(&[(1, Bytes), (2, Bytes), (3, Str), (4, Message(&KEY_VALUE)), (5, Varint), (6, Fixed32)]);
static STATUS: Schema = plain(&[(2, Str), (3, Varint)]);

// opentelemetry/proto/logs/v1/logs.proto
static LOGS_REQUEST: Schema = plain(&[(1, Message(&RESOURCE_LOGS))]);
static RESOURCE_LOGS: Schema =
    Schema::new(&[(1, Message(&RESOURCE)), (2, Message(&SCOPE_LOGS)), (3, Str)], Role::ResourceGroup);
static SCOPE_LOGS: Schema = plain(&[(1, Message(&SCOPE)), (2, Message(&LOG_RECORD)), (3, Str)]);
static LOG_RECORD: Schema = Schema::new(
    &[
        (1, Fixed64),
        (2, Varint),
        (3, Str),
        (5, Message(&ANY_VALUE)),
        (6, Message(&KEY_VALUE)),
        (7, Varint),
        (8, Fixed32),
        (9, TraceId),
        (10, SpanId),
        (11, Fixed64),
        (12, Str),
    ],
    Role::LogRecord,
);

// opentelemetry/proto/metrics/v1/metrics.proto
static METRICS_REQUEST: Schema = plain(&[(1, Message(&RESOURCE_METRICS))]);
static RESOURCE_METRICS: Schema =
    Schema::new(&[(1, Message(&RESOURCE)), (2, Message(&SCOPE_METRICS)), (3, Str)], Role::ResourceGroup);
static SCOPE_METRICS: Schema = plain(&[(1, Message(&SCOPE)), (2, Message(&METRIC)), (3, Str)]);
static METRIC: Schema = plain(&[
    (1, Str),
    (2, Str),
    (3, Str),
    (5, Message(&GAUGE)),
    (7, Message(&SUM)),
    (9, Message(&HISTOGRAM)),
    (10, Message(&EXPONENTIAL_HISTOGRAM)),
    (11, Message(&SUMMARY)),
    (12, Message(&KEY_VALUE)),
]);
static GAUGE: Schema = plain(&[(1, Message(&NUMBER_POINT))]);
static SUM: Schema = plain(&[(1, Message(&NUMBER_POINT)), (2, Varint), (3, Varint)]);
static HISTOGRAM: Schema = plain(&[(1, Message(&HISTOGRAM_POINT)), (2, Varint)]);
static EXPONENTIAL_HISTOGRAM: Schema = plain(&[(1, Message(&EXPONENTIAL_POINT)), (2, Varint)]);
static SUMMARY: Schema = plain(&[(1, Message(&SUMMARY_POINT))]);
static NUMBER_POINT: Schema = Schema::new(
    &[
        (2, Fixed64),
        (3, Fixed64),
        (4, PointValue),
        (5, Message(&EXEMPLAR)),
        (6, PointValue),
        (7, Message(&KEY_VALUE)),
        (8, Varint),
    ],
    Role::NumberPoint,
);
static HISTOGRAM_POINT: Schema = Schema::new(
    &[
        (2, Fixed64),
        (3, Fixed64),
        (4, Fixed64),
        (5, Fixed64),
        (6, BucketCounts),
        (7, ExplicitBounds),
        (8, Message(&EXEMPLAR)),
        (9, Message(&KEY_VALUE)),
        (10, Varint),
        (11, Fixed64),
        (12, Fixed64),
    ],
    Role::HistogramPoint,
);
static EXPONENTIAL_POINT: Schema = Schema::new(
    &[
        (1, Message(&KEY_VALUE)),
        (2, Fixed64),
        (3, Fixed64),
        (4, Fixed64),
        (5, Fixed64),
        (6, Varint),
        (7, Fixed64),
        (8, Message(&BUCKETS)),
        (9, Message(&BUCKETS)),
        (10, Varint),
        (11, Message(&EXEMPLAR)),
        (12, Fixed64),
        (13, Fixed64),
        (14, Fixed64),
    ],
    Role::DataPoint,
);
static BUCKETS: Schema = plain(&[(1, Varint), (2, RepeatedVarint)]);
static SUMMARY_POINT: Schema = Schema::new(
    &[
        (2, Fixed64),
        (3, Fixed64),
        (4, Fixed64),
        (5, Fixed64),
        (6, Message(&QUANTILE)),
        (7, Message(&KEY_VALUE)),
        (8, Varint),
    ],
    Role::DataPoint,
);
static QUANTILE: Schema = plain(&[(1, Fixed64), (2, Fixed64)]);
static EXEMPLAR: Schema =
    plain(&[(2, Fixed64), (3, Fixed64), (4, Bytes), (5, Bytes), (6, Fixed64), (7, Message(&KEY_VALUE))]);

/// Checks an encoded `Export{Trace,Metrics,Logs}ServiceRequest` of `signal` completely —
/// exactly what the reference decoder would accept — and counts it, in one pass without
/// allocating. See [`Summary`] for what is counted.
pub fn check(signal: Signal, buf: &[u8]) -> Result<Summary, Error> {
    let schema = match signal {
        Signal::Traces => &TRACE_REQUEST,
        Signal::Metrics => &METRICS_REQUEST,
        Signal::Logs => &LOGS_REQUEST,
    };
    walk(buf, schema, RECURSION_LIMIT)
}

/// Walks the message of `schema` in `buf`, with `depth` levels left below it, and counts it.
fn walk(buf: &[u8], schema: &Schema, depth: u32) -> Result<Summary, Error> {
    let mut walk = Walk { summary: Summary::default() };
    walk.message(buf, 0, schema, depth)?;
    Ok(walk.summary)
}

/// How many levels a resource sits below the request (request → resource group → resource),
/// and so how many fewer may open below it.
const RESOURCE_LEVEL: u32 = 2;

/// How many levels an item sits below the request (request → resource group → scope group →
/// item).
const ITEM_LEVEL: u32 = 3;

/// Checks one encoded `Resource` exactly as [`check`] checks it inside a request: rebuilding a
/// checked request around an edited resource needs only the new bytes checked.
pub fn check_resource(buf: &[u8]) -> Result<(), Error> {
    walk(buf, &RESOURCE, RECURSION_LIMIT - RESOURCE_LEVEL).map(drop)
}

/// Checks one encoded item of `signal` — a `Span`, a `Metric` or a `LogRecord` — exactly as
/// [`check`] checks it inside a request, and counts it: one span or log record, or the metric's
/// data points, with those a receiver must refuse among `invalid_items`.
pub fn check_item(signal: Signal, buf: &[u8]) -> Result<Summary, Error> {
    let schema = match signal {
        Signal::Traces => &SPAN,
        Signal::Metrics => &METRIC,
        Signal::Logs => &LOG_RECORD,
    };
    walk(buf, schema, RECURSION_LIMIT - ITEM_LEVEL)
}

struct Walk {
    summary: Summary,
}

impl Walk {
    /// Walks the message in `buf` (which starts at `base` in the request). `depth` is how many
    /// more levels may open below it, counted as the reference decoder counts them.
    fn message(&mut self, buf: &[u8], base: usize, schema: &Schema, depth: u32) -> Result<(), Error> {
        let at = |offset: usize, kind: ErrorKind| Error { offset: base + offset, kind };
        let rebase = |e: Error| Error { offset: base + e.offset, kind: e.kind };
        let (mut trace_id, mut span_id) = (0, 0);
        let (mut has_value, mut bucket_counts, mut bounds) = (false, 0, 0);
        let mut pos = 0;
        while pos < buf.len() {
            let offset = pos;
            let (number, wire_type) = read_key(buf, &mut pos).map_err(rebase)?;
            let Some(kind) = schema.kind(number) else {
                skip(buf, &mut pos, number, wire_type, depth).map_err(rebase)?;
                continue;
            };
            match (kind, wire_type) {
                (Varint, 0) => {
                    read_varint(buf, &mut pos).map_err(rebase)?;
                }
                (Fixed64, 1) => {
                    take(buf, &mut pos, 8, offset).map_err(rebase)?;
                }
                (PointValue, 1) => {
                    take(buf, &mut pos, 8, offset).map_err(rebase)?;
                    has_value = true;
                }
                (BucketCounts, 1) => {
                    take(buf, &mut pos, 8, offset).map_err(rebase)?;
                    bucket_counts += 1;
                }
                (ExplicitBounds, 1) => {
                    take(buf, &mut pos, 8, offset).map_err(rebase)?;
                    bounds += 1;
                }
                (Fixed32, 5) => {
                    take(buf, &mut pos, 4, offset).map_err(rebase)?;
                }
                (RepeatedVarint, 0) => {
                    read_varint(buf, &mut pos).map_err(rebase)?;
                }
                (_, 2) => {
                    let value = delimited(buf, &mut pos, offset).map_err(rebase)?;
                    let start = pos - value.len();
                    match kind {
                        Str if !value.is_ascii() && std::str::from_utf8(value).is_err() => {
                            return Err(at(offset, ErrorKind::InvalidUtf8 { field: number }));
                        }
                        Str | Bytes => {}
                        TraceId => trace_id = value.len(),
                        SpanId => span_id = value.len(),
                        Message(inner) => {
                            if depth == 0 {
                                return Err(at(offset, ErrorKind::TooDeep));
                            }
                            // Most of a request's bytes are attributes of this one shape, in spans
                            // of this one shape.
                            if std::ptr::eq(inner, &KEY_VALUE) && depth > 1 && simple_attribute(value) {
                                continue;
                            }
                            if std::ptr::eq(inner, &SPAN)
                                && depth > 2
                                && let Some(valid_ids) = simple_span(value)
                            {
                                self.summary.items += 1;
                                self.summary.invalid_items += u64::from(!valid_ids);
                                continue;
                            }
                            self.message(value, base + start, inner, depth - 1)?;
                        }
                        BucketCounts | ExplicitBounds if value.len() % 8 != 0 => {
                            return Err(at(offset, ErrorKind::BadPackedLength { field: number }));
                        }
                        BucketCounts => bucket_counts += value.len() / 8,
                        ExplicitBounds => bounds += value.len() / 8,
                        RepeatedVarint => {
                            let mut inner = 0;
                            while inner < value.len() {
                                read_varint(value, &mut inner)
                                    .map_err(|_| at(offset, ErrorKind::BadPackedLength { field: number }))?;
                            }
                        }
                        Varint | Fixed64 | Fixed32 | PointValue => {
                            return Err(at(offset, ErrorKind::UnexpectedWireType { field: number }));
                        }
                    }
                }
                _ => return Err(at(offset, ErrorKind::UnexpectedWireType { field: number })),
            }
        }
        let summary = &mut self.summary;
        match schema.role {
            Role::Plain => {}
            Role::ResourceGroup => summary.resources += 1,
            Role::Span => {
                summary.items += 1;
                summary.invalid_items += u64::from(!(trace_id == 16 && span_id == 8));
            }
            Role::LogRecord => {
                summary.items += 1;
                let valid = matches!(trace_id, 0 | 16) && matches!(span_id, 0 | 8);
                summary.invalid_items += u64::from(!valid);
            }
            Role::DataPoint => summary.items += 1,
            Role::NumberPoint => {
                summary.items += 1;
                summary.invalid_items += u64::from(!has_value);
            }
            Role::HistogramPoint => {
                summary.items += 1;
                summary.invalid_items += u64::from(bucket_counts != 0 && bucket_counts != bounds + 1);
            }
        }
        Ok(())
    }
}

/// Whether `buf` is a `KeyValue` of the shape nearly every attribute has — a key and a value
/// under 128 bytes each, the key ASCII, the value an ASCII string, a bool, an int or a double,
/// in that order — and so valid: checked in a few comparisons instead of two nested walks.
/// `false` says nothing: the general walk decides.
#[inline]
fn simple_attribute(buf: &[u8]) -> bool {
    match attribute_shape(buf) {
        Some(AttributeShape::Text) => buf.is_ascii(),
        Some(AttributeShape::Scalar { key_end }) => buf[2..key_end].is_ascii(),
        None => false,
    }
}

/// What is left to check of a [simple attribute](simple_attribute) once its shape is known.
#[derive(Clone, Copy)]
enum AttributeShape {
    /// A string value: every byte of the attribute — tags, lengths under 128, key and text — is
    /// ASCII exactly when key and text are, so one pass over it checks both.
    Text,
    /// A bool, int or double value: the key, `buf[2..key_end]`, must be ASCII.
    Scalar { key_end: usize },
}

/// The shape of a simple attribute, before any ASCII check; `None` for any other shape.
#[inline]
fn attribute_shape(buf: &[u8]) -> Option<AttributeShape> {
    let [0x0a, key_len, rest @ ..] = buf else { return None };
    let key_len = usize::from(*key_len);
    if key_len >= 0x80 || rest.len() < key_len {
        return None;
    }
    let [0x12, value_len, value @ ..] = &rest[key_len..] else { return None };
    // (A length byte of 0x80 or more would start a longer varint; it can't equal these lengths.)
    if usize::from(*value_len) != value.len() {
        return None;
    }
    let scalar = Some(AttributeShape::Scalar { key_end: 2 + key_len });
    match value {
        [0x0a, len, text @ ..] if usize::from(*len) == text.len() => Some(AttributeShape::Text),
        [0x10, flag] if *flag < 0x80 => scalar,
        [0x18, number @ ..] if is_one_varint(number) => scalar,
        [0x21, _, _, _, _, _, _, _, _] => scalar,
        _ => None,
    }
}

/// Whether `buf` is a span of the shape nearly every span has — IDs, trace state, name, kind,
/// times, flags and counts, and [simple attributes](simple_attribute), each field in its
/// usual encoding — and so valid; then whether its IDs are 16 and 8 bytes. `None` says nothing:
/// the general walk decides (an event, a link, a status, or anything unusual sends it there).
#[inline]
fn simple_span(buf: &[u8]) -> Option<bool> {
    let (mut trace_id, mut span_id) = (0, 0);
    // Where the current run of string attributes began: their tags (0x4a) and one-byte lengths
    // are ASCII too, so one pass over the whole run checks every key and text in it.
    let mut text_run: Option<usize> = None;
    let ascii_run =
        |run: &mut Option<usize>, end: usize| run.take().is_none_or(|start| buf[start..end].is_ascii());
    let mut pos = 0;
    while pos < buf.len() {
        let tag_at = pos;
        let tag = buf[pos];
        pos += 1;
        if tag != 0x4a && !ascii_run(&mut text_run, tag_at) {
            return None;
        }
        match tag {
            // trace_id, span_id, parent_span_id: bytes.
            0x0a | 0x12 | 0x22 => {
                let value = short_delimited(buf, &mut pos)?;
                match tag {
                    0x0a => trace_id = value.len(),
                    0x12 => span_id = value.len(),
                    _ => {}
                }
            }
            // trace_state, name: strings.
            0x1a | 0x2a => {
                let value = short_delimited(buf, &mut pos)?;
                if !value.is_ascii() && std::str::from_utf8(value).is_err() {
                    return None;
                }
            }
            // kind, dropped counts: varints.
            0x30 | 0x50 | 0x60 | 0x70 => {
                read_varint(buf, &mut pos).ok()?;
            }
            // start and end times: fixed64.
            0x39 | 0x41 => {
                pos = pos.checked_add(8).filter(|&end| end <= buf.len())?;
            }
            // attributes.
            0x4a => {
                let value = short_delimited(buf, &mut pos)?;
                match attribute_shape(value)? {
                    AttributeShape::Text => {
                        text_run.get_or_insert(tag_at);
                    }
                    AttributeShape::Scalar { key_end } => {
                        if !ascii_run(&mut text_run, tag_at) || !value[2..key_end].is_ascii() {
                            return None;
                        }
                    }
                }
            }
            // flags (field 16, fixed32): a two-byte tag.
            0x85 if buf.get(pos) == Some(&0x01) => {
                pos = pos.checked_add(5).filter(|&end| end <= buf.len())?;
            }
            _ => return None,
        }
    }
    ascii_run(&mut text_run, buf.len()).then_some(trace_id == 16 && span_id == 8)
}

/// A length-delimited value under 128 bytes at `*pos` (its one-byte length first); `None` for a
/// longer one or one that runs past `buf`.
#[inline]
fn short_delimited<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len = usize::from(*buf.get(*pos).filter(|&&len| len < 0x80)?);
    let start = *pos + 1;
    let value = buf.get(start..start + len)?;
    *pos = start + len;
    Some(value)
}

/// Whether `buf` is exactly one valid varint.
#[inline]
fn is_one_varint(buf: &[u8]) -> bool {
    let mut pos = 0;
    read_varint(buf, &mut pos).is_ok() && pos == buf.len()
}

/// A length-delimited value at `*pos` (its length prefix first).
fn delimited<'a>(buf: &'a [u8], pos: &mut usize, offset: usize) -> Result<&'a [u8], Error> {
    let len = read_varint(buf, pos)?;
    let len = usize::try_from(len).map_err(|_| Error { offset, kind: ErrorKind::Truncated })?;
    take(buf, pos, len, offset)
}

/// Steps over an unknown field as the reference decoder does: any wire type, a group with its
/// nested fields, each level of a group counting against `depth`.
fn skip(buf: &[u8], pos: &mut usize, number: u32, wire_type: u8, depth: u32) -> Result<(), Error> {
    let offset = *pos;
    if depth == 0 {
        return Err(Error { offset, kind: ErrorKind::TooDeep });
    }
    match wire_type {
        0 => read_varint(buf, pos).map(drop),
        1 => take(buf, pos, 8, offset).map(drop),
        2 => delimited(buf, pos, offset).map(drop),
        3 => skip_group(buf, pos, number, depth - 1).map(drop),
        4 => Err(Error { offset, kind: ErrorKind::UnmatchedEndGroup }),
        _ => take(buf, pos, 4, offset).map(drop),
    }
}
