//! The wire views must agree with an owned prost decode of the same bytes.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use sluice_wire::otlp::{AnyValue as View, service_names};
use sluice_wire::{Signal, Summary, summarize};

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(service.into())) }),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn span(trace_len: usize) -> Span {
    Span { trace_id: vec![1; trace_len], span_id: vec![2; 8], name: "GET /".into(), ..Default::default() }
}

#[test]
fn counts_spans_and_flags_bad_ids() {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: resource("api"),
                scope_spans: vec![ScopeSpans { spans: vec![span(16), span(16)], ..Default::default() }],
                ..Default::default()
            },
            ResourceSpans {
                resource: resource("db"),
                scope_spans: vec![
                    ScopeSpans { spans: vec![span(15)], ..Default::default() },
                    ScopeSpans { spans: vec![span(16)], ..Default::default() },
                ],
                ..Default::default()
            },
        ],
    };
    let bytes = request.encode_to_vec();
    assert_eq!(summarize(Signal::Traces, &bytes), Ok(Summary { resources: 2, items: 4, invalid_items: 1 }));
    assert_eq!(service_names(Signal::Traces, &bytes), Ok(vec!["api", "db"]));
}

#[test]
fn counts_metric_data_points_across_kinds() {
    let valued = NumberDataPoint { value: Some(number_data_point::Value::AsInt(7)), ..Default::default() };
    let gauge = Metric {
        name: "g".into(),
        data: Some(metric::Data::Gauge(Gauge { data_points: vec![valued.clone(), valued.clone(), valued] })),
        ..Default::default()
    };
    let histogram = Metric {
        name: "h".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint::default(); 2],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    };
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("gpu"),
            scope_metrics: vec![ScopeMetrics { metrics: vec![gauge, histogram], ..Default::default() }],
            ..Default::default()
        }],
    };
    let bytes = request.encode_to_vec();
    assert_eq!(summarize(Signal::Metrics, &bytes), Ok(Summary { resources: 1, items: 5, invalid_items: 0 }));
}

#[test]
fn log_ids_are_optional_but_checked() {
    let records = vec![
        LogRecord::default(),
        LogRecord { trace_id: vec![1; 16], span_id: vec![2; 8], ..Default::default() },
        LogRecord { trace_id: vec![1; 3], ..Default::default() },
    ];
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: None,
            scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
            ..Default::default()
        }],
    };
    let bytes = request.encode_to_vec();
    assert_eq!(summarize(Signal::Logs, &bytes), Ok(Summary { resources: 1, items: 3, invalid_items: 1 }));
    assert_eq!(service_names(Signal::Logs, &bytes), Ok(vec![]));
}

#[test]
fn reads_any_value_kinds() {
    for (value, expected) in [
        (any_value::Value::BoolValue(true), View::Bool(true)),
        (any_value::Value::IntValue(-5), View::Int(-5)),
        (any_value::Value::DoubleValue(1.5), View::Double(1.5)),
        (any_value::Value::BytesValue(vec![9]), View::Bytes(&[9])),
    ] {
        let bytes = AnyValue { value: Some(value) }.encode_to_vec();
        assert_eq!(View::parse(&bytes), Ok(expected));
    }
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for garbage in [&b"\xff\xff\xff"[..], b"\x0a\x05\x12", b"hello world", b"\x0a\x02\x08"] {
        assert!(summarize(Signal::Traces, garbage).is_err(), "{garbage:?}");
    }
}

#[test]
fn log_record_view_reads_times_and_ids() {
    let records = [
        LogRecord {
            time_unix_nano: 5,
            observed_time_unix_nano: 7,
            span_id: vec![2; 8],
            ..Default::default()
        },
        LogRecord { observed_time_unix_nano: 7, ..Default::default() },
        LogRecord::default(),
    ];
    let bytes = records.iter().map(Message::encode_to_vec).collect::<Vec<_>>();
    let views: Vec<_> = bytes.iter().map(|b| sluice_wire::views::LogRecordView::new(b)).collect();
    // An unset event time falls back to the observed time, as the log data model says.
    assert_eq!(views.iter().map(|v| v.time_unix_nano()).collect::<Vec<_>>(), [5, 7, 0]);
    assert_eq!(views[0].span_id(), &[2; 8]);
    assert!(views[1].span_id().is_empty());
}
