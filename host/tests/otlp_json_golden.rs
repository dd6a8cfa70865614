//! The OTLP/JSON the file exporter and the `http/json` protocol write, pinned: one request per
//! signal that sets every field (64-bit integers as strings, hex IDs, enums as numbers, every
//! `AnyValue` kind, NaN and infinities, absent messages as `null`) must render to exactly the
//! bytes in `tests/otlp-json/SIGNAL.json`, both from the wire (`write_json`) and through the
//! owned messages and `serde_json` (the way Sluice rendered JSON before), so neither can drift.
//!
//! `SLUICE_BLESS=1 cargo test -p sluice-host --test otlp_json_golden` rewrites the files from
//! the owned path after a deliberate change; review the diff before committing it.

use std::fs;
use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
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
use prost::Message;
use sluice::batch::{Decoded, write_json};
use sluice::config::Signal;

fn value(value: Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(value) })
}

fn kv(key: &str, v: Option<AnyValue>) -> KeyValue {
    KeyValue { key: key.into(), value: v, key_strindex: 0 }
}

/// One attribute of every kind, and the odd shapes around them.
fn every_attribute() -> Vec<KeyValue> {
    vec![
        kv(
            "string",
            value(Value::StringValue("quote \" backslash \\ newline \n tab \t é 日本 🚀 \u{1}".into())),
        ),
        kv("bool", value(Value::BoolValue(true))),
        kv("int", value(Value::IntValue(-9_223_372_036_854_775_808))),
        kv("double", value(Value::DoubleValue(1.5e-7))),
        kv("negative zero", value(Value::DoubleValue(-0.0))),
        kv("nan", value(Value::DoubleValue(f64::NAN))),
        kv(
            "array",
            value(Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue { value: Some(Value::IntValue(1)) },
                    AnyValue { value: None },
                    AnyValue {
                        value: Some(Value::ArrayValue(ArrayValue {
                            values: vec![AnyValue { value: Some(Value::StringValue("deep".into())) }],
                        })),
                    },
                ],
            })),
        ),
        kv(
            "kvlist",
            value(Value::KvlistValue(KeyValueList {
                values: vec![kv("inner", value(Value::BoolValue(false))), kv("no value", None)],
            })),
        ),
        kv("bytes", value(Value::BytesValue(vec![0, 1, 2, 0xfe, 0xff]))),
        kv("strindex", value(Value::StringValueStrindex(-3))),
        kv("empty", Some(AnyValue { value: None })),
        kv("absent", None),
        KeyValue { key: String::new(), value: value(Value::IntValue(7)), key_strindex: 12 },
    ]
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: every_attribute(),
        dropped_attributes_count: 2,
        entity_refs: vec![EntityRef {
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            r#type: "service".into(),
            id_keys: vec!["service.name".into(), "service.namespace".into()],
            description_keys: vec!["service.version".into()],
        }],
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "io.opentelemetry.golden".into(),
        version: "1.2.3".into(),
        attributes: vec![kv("scope.attr", value(Value::StringValue("s".into())))],
        dropped_attributes_count: 1,
    })
}

fn traces() -> Vec<u8> {
    let span = Span {
        trace_id: (0..16).collect(),
        span_id: vec![0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3],
        trace_state: "vendor=value".into(),
        parent_span_id: vec![0xff; 8],
        flags: 0x301,
        name: "GET /api/checkout".into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_123_456_789,
        end_time_unix_nano: u64::MAX,
        attributes: every_attribute(),
        dropped_attributes_count: 3,
        events: vec![Event {
            time_unix_nano: 1_700_000_000_200_000_000,
            name: "exception".into(),
            attributes: vec![kv("exception.message", value(Value::StringValue("boom".into())))],
            dropped_attributes_count: 4,
        }],
        dropped_events_count: 5,
        links: vec![Link {
            trace_id: vec![0xab; 16],
            span_id: vec![0xcd; 8],
            trace_state: "k=v".into(),
            attributes: vec![kv("link.kind", value(Value::StringValue("follows".into())))],
            dropped_attributes_count: 6,
            flags: 0x100,
        }],
        dropped_links_count: 7,
        status: Some(Status { message: "deadline exceeded".into(), code: 2 }),
    };
    let bare = Span { name: "bare".into(), kind: 99, ..Default::default() };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: resource(),
                scope_spans: vec![
                    ScopeSpans { scope: scope(), spans: vec![span, bare], schema_url: "scope-schema".into() },
                    ScopeSpans::default(),
                ],
                schema_url: "resource-schema".into(),
            },
            ResourceSpans::default(),
        ],
    }
    .encode_to_vec()
}

fn exemplars() -> Vec<Exemplar> {
    vec![
        Exemplar {
            filtered_attributes: vec![kv("user", value(Value::StringValue("u1".into())))],
            time_unix_nano: 1_700_000_000_000_000_001,
            span_id: vec![1; 8],
            trace_id: vec![2; 16],
            value: Some(exemplar::Value::AsDouble(0.25)),
        },
        Exemplar { value: Some(exemplar::Value::AsInt(-5)), ..Default::default() },
        Exemplar::default(),
    ]
}

fn metrics() -> Vec<u8> {
    let number = |value| NumberDataPoint {
        attributes: vec![kv("gpu", value_of("0"))],
        start_time_unix_nano: 1,
        time_unix_nano: 2,
        exemplars: exemplars(),
        flags: 1,
        value,
    };
    let metric = |name: &str, data| Metric {
        name: name.into(),
        description: "what it measures".into(),
        unit: "By".into(),
        metadata: vec![kv("prometheus.type", value_of("counter"))],
        data,
    };
    let metrics = vec![
        metric(
            "gauge",
            Some(metric::Data::Gauge(Gauge {
                data_points: vec![
                    number(Some(number_data_point::Value::AsDouble(f64::INFINITY))),
                    number(Some(number_data_point::Value::AsInt(i64::MAX))),
                    number(None),
                ],
            })),
        ),
        metric(
            "sum",
            Some(metric::Data::Sum(Sum {
                data_points: vec![number(Some(number_data_point::Value::AsDouble(3.0)))],
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
        ),
        metric(
            "histogram",
            Some(metric::Data::Histogram(Histogram {
                data_points: vec![
                    HistogramDataPoint {
                        attributes: vec![kv("route", value_of("/"))],
                        start_time_unix_nano: 10,
                        time_unix_nano: 20,
                        count: 6,
                        sum: Some(12.5),
                        bucket_counts: vec![1, 2, 3, u64::MAX],
                        explicit_bounds: vec![0.5, 1.0, f64::NAN],
                        exemplars: exemplars(),
                        flags: 0,
                        min: Some(-1.0),
                        max: Some(9.75),
                    },
                    HistogramDataPoint::default(),
                ],
                aggregation_temporality: 1,
            })),
        ),
        metric(
            "exponential",
            Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    attributes: vec![kv("host", value_of("a"))],
                    start_time_unix_nano: 3,
                    time_unix_nano: 4,
                    count: 9,
                    sum: Some(0.0),
                    scale: -4,
                    zero_count: 2,
                    positive: Some(Buckets { offset: -2, bucket_counts: vec![0, 1, u64::MAX] }),
                    negative: None,
                    flags: 1,
                    exemplars: exemplars(),
                    min: None,
                    max: Some(f64::NEG_INFINITY),
                    zero_threshold: 1e-9,
                }],
                aggregation_temporality: 2,
            })),
        ),
        metric(
            "summary",
            Some(metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    attributes: vec![],
                    start_time_unix_nano: 5,
                    time_unix_nano: 6,
                    count: 100,
                    sum: 250.5,
                    quantile_values: vec![
                        ValueAtQuantile { quantile: 0.99, value: f64::NAN },
                        ValueAtQuantile { quantile: 1.0, value: f64::INFINITY },
                        ValueAtQuantile { quantile: 0.0, value: f64::NEG_INFINITY },
                    ],
                    flags: 0,
                }],
            })),
        ),
        metric("no data", None),
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics { scope: scope(), metrics, schema_url: String::new() }],
            schema_url: "resource-schema".into(),
        }],
    }
    .encode_to_vec()
}

fn value_of(text: &str) -> Option<AnyValue> {
    value(Value::StringValue(text.into()))
}

fn logs() -> Vec<u8> {
    let record = LogRecord {
        time_unix_nano: 1_700_000_000_000_000_000,
        observed_time_unix_nano: 1_700_000_000_000_000_500,
        severity_number: 17,
        severity_text: "ERROR".into(),
        body: value(Value::KvlistValue(KeyValueList { values: every_attribute() })),
        attributes: every_attribute(),
        dropped_attributes_count: 1,
        flags: 1,
        trace_id: vec![0x0f; 16],
        span_id: vec![0xf0; 8],
        event_name: "payment.failed".into(),
    };
    let plain = LogRecord { observed_time_unix_nano: 42, body: value_of("plain line"), ..Default::default() };
    let bodiless = LogRecord { severity_number: 30, ..Default::default() };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: None,
            scope_logs: vec![ScopeLogs {
                scope: None,
                log_records: vec![record, plain, bodiless],
                schema_url: "scope-schema".into(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

#[test]
fn every_signal_renders_its_golden_json_from_the_wire_and_through_serde() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/otlp-json");
    let bless = std::env::var_os("SLUICE_BLESS").is_some();
    let mut failures = Vec::new();
    for (signal, bytes) in [(Signal::Traces, traces()), (Signal::Metrics, metrics()), (Signal::Logs, logs())]
    {
        let mut owned = Vec::new();
        Decoded::from_protobuf(signal, &bytes)
            .expect("decodes")
            .write_json(&mut owned, false)
            .expect("serde");
        let golden: PathBuf = dir.join(format!("{signal}.json"));
        if bless {
            fs::create_dir_all(&dir).expect("create tests/otlp-json");
            fs::write(&golden, &owned).expect("write golden");
            continue;
        }
        let expected = fs::read(&golden).expect("golden file; run with SLUICE_BLESS=1");
        let mut wire = Vec::new();
        write_json(signal, &[&bytes], &mut wire).expect("renders");
        for (path, got) in [("owned messages + serde_json", &owned), ("wire renderer", &wire)] {
            if *got != expected {
                failures.push(format!(
                    "{signal} via {path} differs from {}\n--- expected\n{}\n--- actual\n{}",
                    golden.display(),
                    String::from_utf8_lossy(&expected),
                    String::from_utf8_lossy(got)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
