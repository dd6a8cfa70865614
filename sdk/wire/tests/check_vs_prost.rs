//! The whole-request check accepts exactly what prost decodes: on generated requests of all
//! three signals (every field kind, attribute values nested around the recursion limit,
//! non-UTF-8 strings) and on those requests mutated byte by byte.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, exemplar, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use prost::Message;
use sluice_wire::Signal;
use sluice_wire::check::check;

/// A small deterministic generator, so a failing case is reproduced from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn count(&mut self, max: u64) -> usize {
        self.below(max + 1) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn string(&mut self) -> String {
        const PIECES: [&str; 8] = ["GET /", "service.name", "é", "日本", "🚀", "", "k8s.pod", "x"];
        (0..self.count(3)).map(|_| PIECES[self.below(8) as usize]).collect()
    }

    fn bytes(&mut self, lengths: &[usize]) -> Vec<u8> {
        let len = lengths[self.below(lengths.len() as u64) as usize];
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// An attribute value, nested `depth` levels at most.
    fn value(&mut self, depth: u32) -> AnyValue {
        use any_value::Value;
        let kinds = if depth == 0 { 5 } else { 7 };
        let value = match self.below(kinds) {
            0 => Value::StringValue(self.string()),
            1 => Value::BoolValue(self.chance(50)),
            2 => Value::IntValue(self.next() as i64),
            3 => Value::DoubleValue(f64::from_bits(self.next())),
            4 => Value::BytesValue(self.bytes(&[0, 3, 16])),
            5 => Value::ArrayValue(ArrayValue {
                values: (0..self.count(2)).map(|_| self.value(depth - 1)).collect(),
            }),
            _ => Value::KvlistValue(KeyValueList {
                values: (0..self.count(2)).map(|_| self.attribute(depth - 1)).collect(),
            }),
        };
        AnyValue { value: Some(value).filter(|_| !self.chance(5)) }
    }

    fn attribute(&mut self, depth: u32) -> KeyValue {
        KeyValue {
            key: self.string(),
            value: Some(self.value(depth)).filter(|_| !self.chance(5)),
            ..Default::default()
        }
    }

    fn attributes(&mut self) -> Vec<KeyValue> {
        (0..self.count(3)).map(|_| self.attribute(2)).collect()
    }

    fn resource(&mut self) -> Option<Resource> {
        let entity = |rng: &mut Self| EntityRef {
            schema_url: rng.string(),
            r#type: rng.string(),
            id_keys: vec![rng.string()],
            description_keys: Vec::new(),
        };
        self.chance(90).then(|| Resource {
            attributes: self.attributes(),
            dropped_attributes_count: self.below(3) as u32,
            entity_refs: (0..self.count(1)).map(|_| entity(self)).collect(),
        })
    }

    fn scope(&mut self) -> Option<InstrumentationScope> {
        self.chance(70).then(|| InstrumentationScope {
            name: self.string(),
            version: self.string(),
            attributes: self.attributes(),
            dropped_attributes_count: 0,
        })
    }

    fn span(&mut self) -> Span {
        Span {
            trace_id: self.bytes(&[16, 16, 16, 0, 15]),
            span_id: self.bytes(&[8, 8, 8, 0, 9]),
            trace_state: self.string(),
            parent_span_id: self.bytes(&[0, 8]),
            flags: self.next() as u32,
            name: self.string(),
            kind: self.below(6) as i32,
            start_time_unix_nano: self.next(),
            end_time_unix_nano: self.next(),
            attributes: self.attributes(),
            dropped_attributes_count: 0,
            // Most spans have no events, links or status: the shape the check's fast path takes.
            events: (0..if self.chance(30) { self.count(2) } else { 0 })
                .map(|_| Event {
                    time_unix_nano: self.next(),
                    name: self.string(),
                    attributes: self.attributes(),
                    dropped_attributes_count: 0,
                })
                .collect(),
            dropped_events_count: 0,
            links: (0..if self.chance(20) { 1 } else { 0 })
                .map(|_| Link {
                    trace_id: self.bytes(&[16]),
                    span_id: self.bytes(&[8]),
                    trace_state: self.string(),
                    attributes: self.attributes(),
                    dropped_attributes_count: 0,
                    flags: 1,
                })
                .collect(),
            dropped_links_count: 0,
            status: self.chance(20).then(|| Status { message: self.string(), code: self.below(3) as i32 }),
        }
    }

    fn traces(&mut self) -> Vec<u8> {
        let resource_spans = (0..self.count(2))
            .map(|_| ResourceSpans {
                resource: self.resource(),
                scope_spans: (0..self.count(2))
                    .map(|_| ScopeSpans {
                        scope: self.scope(),
                        spans: (0..self.count(3)).map(|_| self.span()).collect(),
                        schema_url: self.string(),
                    })
                    .collect(),
                schema_url: self.string(),
            })
            .collect();
        ExportTraceServiceRequest { resource_spans }.encode_to_vec()
    }

    fn log(&mut self) -> LogRecord {
        LogRecord {
            time_unix_nano: self.next(),
            observed_time_unix_nano: self.next(),
            severity_number: self.below(25) as i32,
            severity_text: self.string(),
            body: self.chance(80).then(|| self.value(3)),
            attributes: self.attributes(),
            dropped_attributes_count: 0,
            flags: 0,
            trace_id: self.bytes(&[0, 16, 15]),
            span_id: self.bytes(&[0, 8, 7]),
            event_name: self.string(),
        }
    }

    fn logs(&mut self) -> Vec<u8> {
        let resource_logs = (0..self.count(2))
            .map(|_| ResourceLogs {
                resource: self.resource(),
                scope_logs: (0..self.count(2))
                    .map(|_| ScopeLogs {
                        scope: self.scope(),
                        log_records: (0..self.count(3)).map(|_| self.log()).collect(),
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: self.string(),
            })
            .collect();
        ExportLogsServiceRequest { resource_logs }.encode_to_vec()
    }

    fn exemplars(&mut self) -> Vec<Exemplar> {
        (0..self.count(1))
            .map(|_| Exemplar {
                filtered_attributes: self.attributes(),
                time_unix_nano: self.next(),
                span_id: self.bytes(&[8]),
                trace_id: self.bytes(&[16]),
                value: Some(exemplar::Value::AsInt(self.next() as i64)),
            })
            .collect()
    }

    fn metric(&mut self) -> Metric {
        let number = |rng: &mut Self| NumberDataPoint {
            attributes: rng.attributes(),
            start_time_unix_nano: rng.next(),
            time_unix_nano: rng.next(),
            exemplars: rng.exemplars(),
            flags: 0,
            value: Some(if rng.chance(50) {
                number_data_point::Value::AsDouble(f64::from_bits(rng.next()))
            } else {
                number_data_point::Value::AsInt(rng.next() as i64)
            }),
        };
        let data = match self.below(5) {
            0 => {
                metric::Data::Gauge(Gauge { data_points: (0..self.count(3)).map(|_| number(self)).collect() })
            }
            1 => metric::Data::Sum(Sum {
                data_points: (0..self.count(3)).map(|_| number(self)).collect(),
                aggregation_temporality: self.below(3) as i32,
                is_monotonic: self.chance(50),
            }),
            2 => metric::Data::Histogram(Histogram {
                data_points: (0..self.count(2))
                    .map(|_| HistogramDataPoint {
                        attributes: self.attributes(),
                        count: self.next(),
                        sum: self.chance(50).then(|| f64::from_bits(self.next())),
                        bucket_counts: (0..self.count(4)).map(|_| self.next()).collect(),
                        explicit_bounds: (0..self.count(3)).map(|_| self.next() as f64).collect(),
                        exemplars: self.exemplars(),
                        min: Some(1.0),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: 1,
            }),
            3 => metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: (0..self.count(2))
                    .map(|_| ExponentialHistogramDataPoint {
                        attributes: self.attributes(),
                        count: self.next(),
                        scale: self.below(20) as i32 - 10,
                        positive: Some(Buckets {
                            offset: -(self.below(5) as i32),
                            bucket_counts: (0..self.count(4))
                                .map(|_| self.next() >> self.below(64))
                                .collect(),
                        }),
                        negative: self.chance(50).then(Buckets::default),
                        zero_threshold: 0.5,
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: 2,
            }),
            _ => metric::Data::Summary(Summary {
                data_points: (0..self.count(2))
                    .map(|_| SummaryDataPoint {
                        attributes: self.attributes(),
                        count: self.next(),
                        sum: 1.5,
                        quantile_values: vec![ValueAtQuantile { quantile: 0.5, value: 2.0 }],
                        ..Default::default()
                    })
                    .collect(),
            }),
        };
        Metric {
            name: self.string(),
            description: self.string(),
            unit: self.string(),
            metadata: self.attributes(),
            data: Some(data).filter(|_| !self.chance(5)),
        }
    }

    fn metrics(&mut self) -> Vec<u8> {
        let resource_metrics = (0..self.count(2))
            .map(|_| ResourceMetrics {
                resource: self.resource(),
                scope_metrics: (0..self.count(2))
                    .map(|_| ScopeMetrics {
                        scope: self.scope(),
                        metrics: (0..self.count(3)).map(|_| self.metric()).collect(),
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: self.string(),
            })
            .collect();
        ExportMetricsServiceRequest { resource_metrics }.encode_to_vec()
    }

    fn request(&mut self, signal: Signal) -> Vec<u8> {
        match signal {
            Signal::Traces => self.traces(),
            Signal::Metrics => self.metrics(),
            Signal::Logs => self.logs(),
        }
    }

    /// Damages `bytes` the ways hostile and broken clients do.
    fn mutate(&mut self, bytes: &mut Vec<u8>) {
        // Bytes that mean something to the wire format: group tags, continuation bits, invalid
        // UTF-8, wire types 6 and 7, a length of 127.
        const SPECIAL: [u8; 10] = [0x0b, 0x0c, 0x13, 0x14, 0x80, 0xff, 0xc3, 0x0e, 0x0f, 0x7f];
        let at = |rng: &mut Self, len: usize| rng.below(len as u64 + 1) as usize;
        match self.below(7) {
            0 if !bytes.is_empty() => {
                let i = at(self, bytes.len() - 1);
                bytes[i] ^= 1 << self.below(8);
            }
            1 if !bytes.is_empty() => {
                let i = at(self, bytes.len() - 1);
                bytes[i] = SPECIAL[self.below(SPECIAL.len() as u64) as usize];
            }
            2 => {
                let i = at(self, bytes.len());
                bytes.insert(i, SPECIAL[self.below(SPECIAL.len() as u64) as usize]);
            }
            3 if !bytes.is_empty() => {
                let i = at(self, bytes.len() - 1);
                bytes.remove(i);
            }
            4 => {
                let len = at(self, bytes.len());
                bytes.truncate(len);
            }
            5 => {
                // A deprecated group in an unknown field (decoders skip it), at either end, now
                // and then badly closed or nested past the recursion limit.
                let group = group(99 + self.below(3) as u32 * 2 - 2, self.below(3) as u32, self.chance(90));
                let i = if self.chance(50) { 0 } else { bytes.len() };
                bytes.splice(i..i, group);
            }
            _ => {
                let (a, b) = (at(self, bytes.len()), at(self, bytes.len()));
                let copy = bytes[a.min(b)..a.max(b)].to_vec();
                let i = at(self, bytes.len());
                bytes.splice(i..i, copy);
            }
        }
    }
}

/// An unknown field (50, in no OTLP message) holding groups nested `depth` deep with `fields`
/// varints inside the innermost; its end tag names another field unless `closed`.
fn group(depth: u32, fields: u32, closed: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..depth.max(1) {
        sluice_wire::wire::put_varint(&mut out, 50 << 3 | 3);
    }
    out.extend((0..fields).flat_map(|i| [0x08, i as u8]));
    for _ in 0..depth.max(1) {
        sluice_wire::wire::put_varint(&mut out, if closed { 50 << 3 | 4 } else { 51 << 3 | 4 });
    }
    out
}

fn prost_decodes(signal: Signal, bytes: &[u8]) -> bool {
    match signal {
        Signal::Traces => ExportTraceServiceRequest::decode(bytes).is_ok(),
        Signal::Metrics => ExportMetricsServiceRequest::decode(bytes).is_ok(),
        Signal::Logs => ExportLogsServiceRequest::decode(bytes).is_ok(),
    }
}

fn agree(signal: Signal, bytes: &[u8]) -> Result<(), TestCaseError> {
    let checked = check(signal, bytes);
    prop_assert_eq!(
        checked.is_ok(),
        prost_decodes(signal, bytes),
        "{:?} on {} {:02x?}",
        checked,
        signal,
        bytes
    );
    Ok(())
}

/// Logs whose body is an attribute value nested `depth` arrays deep (around a key-value list
/// when `list`: three messages a level instead of two, so both parities of depth are tried).
fn nested_body(depth: usize, list: bool) -> Vec<u8> {
    let mut value = AnyValue { value: Some(any_value::Value::IntValue(7)) };
    if list {
        let pair = KeyValue { key: "k".into(), value: Some(value), ..Default::default() };
        value = AnyValue { value: Some(any_value::Value::KvlistValue(KeyValueList { values: vec![pair] })) };
    }
    for _ in 0..depth {
        value = AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![value] })) };
    }
    let log = LogRecord { body: Some(value), ..Default::default() };
    let scope_logs = vec![ScopeLogs { log_records: vec![log], ..Default::default() }];
    ExportLogsServiceRequest { resource_logs: vec![ResourceLogs { scope_logs, ..Default::default() }] }
        .encode_to_vec()
}

#[test]
fn the_recursion_limit_falls_where_prosts_does() {
    for list in [false, true] {
        let mut accepted = Vec::new();
        for depth in 40..55 {
            let bytes = nested_body(depth, list);
            let ok = check(Signal::Logs, &bytes).is_ok();
            assert_eq!(ok, prost_decodes(Signal::Logs, &bytes), "depth {depth}, list {list}");
            accepted.push(ok);
        }
        // Both sides of the limit were reached: the deepest bodies are refused, the others not.
        assert!(accepted.first() == Some(&true) && accepted.last() == Some(&false), "{accepted:?}");
    }
}

#[test]
fn unknown_groups_are_skipped_as_prost_skips_them() {
    let span = Span { trace_id: vec![1; 16], span_id: vec![2; 8], ..Default::default() }.encode_to_vec();
    let mut verdicts = Vec::new();
    for (depth, closed) in [(1, true), (3, true), (1, false), (95, true), (96, true), (97, true), (120, true)]
    {
        // The group inside a span, four messages below the request.
        let mut inner = span.clone();
        inner.extend(group(depth, 2, closed));
        let mut scope = Vec::new();
        sluice_wire::wire::put_bytes_field(&mut scope, 2, &inner);
        let mut resource = Vec::new();
        sluice_wire::wire::put_bytes_field(&mut resource, 2, &scope);
        let mut request = Vec::new();
        sluice_wire::wire::put_bytes_field(&mut request, 1, &resource);
        let ok = check(Signal::Traces, &request).is_ok();
        assert_eq!(ok, prost_decodes(Signal::Traces, &request), "depth {depth}, closed {closed}");
        verdicts.push(ok);
    }
    assert_eq!(verdicts, [true, true, false, true, true, false, false]);
}

#[test]
fn generated_requests_are_accepted_and_counted() {
    let mut rng = Rng(7);
    for signal in Signal::ALL {
        for _ in 0..200 {
            let bytes = rng.request(signal);
            assert!(check(signal, &bytes).is_ok(), "{signal}: {bytes:02x?}");
        }
    }
}

#[test]
fn a_string_that_is_not_utf8_is_refused_where_it_lies() {
    let mut bytes = Vec::new();
    let log = LogRecord {
        attributes: vec![KeyValue {
            key: "k".into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue("é".into())) }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let scope_logs = vec![ScopeLogs { log_records: vec![log], ..Default::default() }];
    ExportLogsServiceRequest { resource_logs: vec![ResourceLogs { scope_logs, ..Default::default() }] }
        .encode(&mut bytes)
        .expect("encodes");
    assert!(check(Signal::Logs, &bytes).is_ok());
    let at = bytes.iter().position(|&b| b == 0xc3).expect("the é");
    bytes[at + 1] = 0x28; // 0xc3 0x28 is not UTF-8
    let error = check(Signal::Logs, &bytes).expect_err("refused");
    assert!(error.to_string().contains("not valid UTF-8"), "{error}");
    assert!(!prost_decodes(Signal::Logs, &bytes));
}

/// The common shapes — a plain span, a short attribute — are checked by fast paths: a byte
/// that breaks UTF-8 in one string of them (the span's name or trace state, an attribute's key
/// or value), everything else plain ASCII, is refused there too.
#[test]
fn bad_utf8_is_refused_in_the_common_shapes() {
    let text = |value: &str| Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) });
    let span = |name: &str, state: &str, key: &str, value: &str| Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: name.into(),
        trace_state: state.into(),
        attributes: vec![KeyValue { key: key.into(), value: text(value), ..Default::default() }],
        ..Default::default()
    };
    let spans = [
        span("caf\u{e9}", "s", "k", "v"),
        span("n", "caf\u{e9}", "k", "v"),
        span("n", "s", "caf\u{e9}", "v"),
        span("n", "s", "k", "caf\u{e9}"),
    ];
    for span in spans {
        let scope_spans = vec![ScopeSpans { spans: vec![span.clone()], ..Default::default() }];
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans { scope_spans, ..Default::default() }],
        };
        let mut bytes = request.encode_to_vec();
        assert!(check(Signal::Traces, &bytes).is_ok());
        let at = bytes.iter().position(|&b| b == 0xc3).expect("the accent");
        bytes[at + 1] = b'(';
        assert!(check(Signal::Traces, &bytes).is_err(), "{span:?}");
        assert!(!prost_decodes(Signal::Traces, &bytes));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn the_check_accepts_exactly_what_prost_decodes(seed in any::<u64>(), mutations in 0..4u32, signal in 0..3usize) {
        let signal = Signal::ALL[signal];
        let mut rng = Rng(seed);
        let mut bytes = rng.request(signal);
        for _ in 0..mutations {
            rng.mutate(&mut bytes);
        }
        agree(signal, &bytes)?;
    }

    #[test]
    fn arbitrary_bytes_get_the_same_verdict(bytes in proptest::collection::vec(any::<u8>(), 0..64), signal in 0..3usize) {
        agree(Signal::ALL[signal], &bytes)?;
    }
}
