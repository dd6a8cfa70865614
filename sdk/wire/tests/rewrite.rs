//! Rebuilt and edited requests must decode (with prost) to exactly what was asked for.

use std::borrow::Cow;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use sluice_wire::Signal;
use sluice_wire::edit::{
    AttrEdit, AttrValue, SetMode, edit_attributes, edit_metric_points, set_string_field,
};
use sluice_wire::rewrite::{ItemAction, rebuild, retain};

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn span(name: &str) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: name.into(),
        attributes: vec![kv("http.route", any_value::Value::StringValue(format!("/{name}")))],
        ..Default::default()
    }
}

fn traces() -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", any_value::Value::StringValue("a".into()))],
                    ..Default::default()
                }),
                scope_spans: vec![
                    ScopeSpans {
                        spans: vec![span("s0"), span("s1")],
                        schema_url: "x".into(),
                        ..Default::default()
                    },
                    ScopeSpans { spans: vec![span("s2")], ..Default::default() },
                ],
                schema_url: "r".into(),
            },
            ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans { spans: vec![span("s3")], ..Default::default() }],
                ..Default::default()
            },
        ],
    }
}

fn names(request: &ExportTraceServiceRequest) -> Vec<Vec<Vec<String>>> {
    request
        .resource_spans
        .iter()
        .map(|r| r.scope_spans.iter().map(|s| s.spans.iter().map(|s| s.name.clone()).collect()).collect())
        .collect()
}

#[test]
fn retain_drops_items_and_empty_groups() {
    let bytes = traces().encode_to_vec();
    let kept = ExportTraceServiceRequest::decode(
        &retain(Signal::Traces, &bytes, |n| n != 2 && n != 3).expect("valid")[..],
    )
    .expect("decodes");
    assert_eq!(names(&kept), vec![vec![vec!["s0".to_string(), "s1".to_string()]]]);
    assert_eq!(kept.resource_spans[0].scope_spans[0].schema_url, "x");
    assert_eq!(kept.resource_spans[0].schema_url, "r");

    let all = retain(Signal::Traces, &bytes, |_| true).expect("valid");
    assert_eq!(all, bytes, "keeping everything reproduces the input byte for byte");
    let none = retain(Signal::Traces, &bytes, |_| false).expect("valid");
    assert!(none.is_empty());
}

#[test]
fn rebuild_replaces_items_and_adds_missing_resources() {
    let bytes = traces().encode_to_vec();
    let tag = [AttrEdit::Set {
        key: Cow::Borrowed("system"),
        value: AttrValue::Str("graphistry".into()),
        mode: SetMode::Upsert,
    }];
    let out = rebuild(
        Signal::Traces,
        &bytes,
        |_, resource| Some(edit_attributes(resource, 1, &tag).expect("valid")),
        |n, item| {
            if n == 1 {
                ItemAction::Replace(set_string_field(item, 5, "renamed").expect("valid"))
            } else {
                ItemAction::Keep
            }
        },
    )
    .expect("valid");
    let out = ExportTraceServiceRequest::decode(&out[..]).expect("decodes");
    // Every item kept, in its group, in order; only item 1 replaced.
    let strings = |names: &[&[&str]]| -> Vec<Vec<String>> {
        names.iter().map(|scope| scope.iter().map(|name| name.to_string()).collect()).collect()
    };
    assert_eq!(names(&out), vec![strings(&[&["s0", "renamed"], &["s2"]]), strings(&[&["s3"]])]);
    assert_eq!(out.resource_spans.len(), 2);
    for group in &out.resource_spans {
        let resource = group.resource.as_ref().expect("every group has a resource now");
        assert!(resource.attributes.iter().any(|kv| kv.key == "system"));
    }
    let first = &out.resource_spans[0].resource.as_ref().expect("resource").attributes;
    assert_eq!(first.len(), 2, "service.name kept beside the new attribute");
    assert_eq!(out.resource_spans[1].resource.as_ref().expect("resource").attributes.len(), 1);
    // What was not edited is as it was: the kept span whole, the group's schema URLs.
    assert_eq!(out.resource_spans[0].scope_spans[0].spans[0], span("s0"));
    assert_eq!(out.resource_spans[0].scope_spans[0].schema_url, "x");
    assert_eq!(out.resource_spans[0].schema_url, "r");
}

#[test]
fn attribute_edits_follow_their_modes() {
    let item = span("x").encode_to_vec();
    let edits = [
        AttrEdit::Set {
            key: "http.route".into(),
            value: AttrValue::Str("/changed".into()),
            mode: SetMode::Insert,
        },
        AttrEdit::Set { key: "new".into(), value: AttrValue::Int(-3), mode: SetMode::Update },
        AttrEdit::Set { key: "added".into(), value: AttrValue::Bool(true), mode: SetMode::Insert },
        AttrEdit::Rename { key: "http.route".into(), new_key: "route".into() },
        AttrEdit::Set { key: "ratio".into(), value: AttrValue::Double(0.5), mode: SetMode::Upsert },
        AttrEdit::Delete { key: "missing".into() },
    ];
    let out = Span::decode(&edit_attributes(&item, 9, &edits).expect("valid")[..]).expect("decodes");
    let attrs: Vec<(String, Option<any_value::Value>)> =
        out.attributes.into_iter().map(|kv| (kv.key, kv.value.and_then(|v| v.value))).collect();
    assert_eq!(
        attrs,
        vec![
            ("route".into(), Some(any_value::Value::StringValue("/x".into()))),
            ("added".into(), Some(any_value::Value::BoolValue(true))),
            ("ratio".into(), Some(any_value::Value::DoubleValue(0.5))),
        ]
    );
    assert_eq!(out.name, "x");
    assert_eq!(out.trace_id, vec![1; 16]);
}

#[test]
fn metric_edits_reach_every_data_point() {
    let metric = Metric {
        name: "gpu.temp".into(),
        data: Some(metric::Data::Gauge(Gauge { data_points: vec![NumberDataPoint::default(); 2] })),
        ..Default::default()
    };
    let histogram = Metric {
        name: "latency".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint::default()],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    };
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics { metrics: vec![metric, histogram], ..Default::default() }],
            ..Default::default()
        }],
    };
    let tag =
        [AttrEdit::Set { key: "host".into(), value: AttrValue::Str("n1".into()), mode: SetMode::Upsert }];
    let out = rebuild(
        Signal::Metrics,
        &request.encode_to_vec(),
        |_, _| None,
        |n, item| {
            let edited = edit_metric_points(item, &tag).expect("valid");
            ItemAction::Replace(if n == 0 {
                set_string_field(&edited, 1, "gpu.temperature").expect("valid")
            } else {
                edited
            })
        },
    )
    .expect("valid");
    let out = ExportMetricsServiceRequest::decode(&out[..]).expect("decodes");
    let metrics = &out.resource_metrics[0].scope_metrics[0].metrics;
    assert_eq!(metrics.len(), 2);
    assert_eq!(metrics[0].name, "gpu.temperature");
    assert_eq!(metrics[1].name, "latency");
    let host = vec![kv("host", any_value::Value::StringValue("n1".into()))];
    let Some(metric::Data::Gauge(gauge)) = &metrics[0].data else { panic!("gauge") };
    assert_eq!(gauge.data_points.len(), 2, "both gauge points kept");
    for point in &gauge.data_points {
        assert_eq!(point.attributes, host);
    }
    let Some(metric::Data::Histogram(h)) = &metrics[1].data else { panic!("histogram") };
    assert_eq!(h.data_points.len(), 1);
    assert_eq!(h.data_points[0].attributes, host);
    assert_eq!(h.aggregation_temporality, 2);
}

/// Found by the `wire_rewrite` fuzz target: a resource group whose `resource` field occurs
/// twice (valid protobuf: decoders merge them) was asked about twice and sized twice, so every
/// later group was framed with another's size. It is asked about once (the last occurrence, as
/// the views read it); a replacement stands for both, and a kept one keeps both.
#[test]
fn a_resource_written_twice_is_one_resource() {
    let original = traces().encode_to_vec();
    // Append a second `resource` to the first group by hand, and re-frame that group.
    let groups: Vec<_> = sluice_wire::Fields::new(&original).map(|f| f.expect("valid")).collect();
    let first = groups[0].bytes().expect("a group");
    let mut group = first.to_vec();
    sluice_wire::wire::put_bytes_field(&mut group, 1, &Resource::default().encode_to_vec());
    let mut twice = Vec::new();
    sluice_wire::wire::put_bytes_field(&mut twice, 1, &group);
    for field in &groups[1..] {
        twice.extend_from_slice(field.raw);
    }
    let bytes = twice;
    let before = sluice_wire::check::check(Signal::Traces, &bytes).expect("valid");
    let mut asked = Vec::new();
    let tagged = rebuild(
        Signal::Traces,
        &bytes,
        |n, _| {
            asked.push(n);
            Some(
                Resource {
                    attributes: vec![kv("tagged", any_value::Value::BoolValue(true))],
                    ..Default::default()
                }
                .encode_to_vec(),
            )
        },
        |_, _| ItemAction::Keep,
    )
    .expect("rebuilt");
    assert_eq!(asked, (0..groups.len() as u32).collect::<Vec<_>>(), "once per group");
    let after = sluice_wire::check::check(Signal::Traces, &tagged).expect("still valid");
    assert_eq!(after.items, before.items);
    let decoded = ExportTraceServiceRequest::decode(&tagged[..]).expect("decodes");
    assert!(
        decoded.resource_spans.iter().all(|g| g.resource.as_ref().is_some_and(|r| r.attributes.len() == 1))
    );
    let kept = rebuild(Signal::Traces, &bytes, |_, _| None, |_, _| ItemAction::Keep).expect("rebuilt");
    assert_eq!(kept, bytes, "nothing replaced, nothing changed");
}

#[test]
fn partition_splits_in_one_pass_under_copies_of_each_group() {
    let request = traces();
    let buf = request.encode_to_vec();
    // s0 and s3 to part 0, s1 and s2 to part 2, nothing to part 1.
    let parts = sluice_wire::rewrite::partition(&buf, 3, |n, _| [0, 2, 2, 0][n as usize]).expect("valid");
    assert!(parts[1].is_empty(), "a part with no items is empty");
    let decoded: Vec<ExportTraceServiceRequest> = [&parts[0], &parts[2]]
        .iter()
        .map(|p| ExportTraceServiceRequest::decode(p.as_slice()).expect("decodes"))
        .collect();
    assert_eq!(names(&decoded[0]), [vec![vec!["s0".to_string()]], vec![vec!["s3".to_string()]]]);
    assert_eq!(names(&decoded[1]), [vec![vec!["s1".to_string()], vec!["s2".to_string()]]]);
    // Resources and scopes are copied whole: the service, the schema URLs.
    let first = &decoded[0].resource_spans[0];
    assert_eq!((first.schema_url.as_str(), first.scope_spans[0].schema_url.as_str()), ("r", "x"));
    assert_eq!(first.resource, request.resource_spans[0].resource);
    assert_eq!(decoded[1].resource_spans[0].scope_spans[1].schema_url, "");
    // Each part decodes to what retaining its items gives.
    for (part, wanted) in [(0, [0u32, 3]), (2, [1, 2])] {
        let retained = retain(Signal::Traces, &buf, |n| wanted.contains(&n)).expect("valid");
        let decode = |bytes: &[u8]| ExportTraceServiceRequest::decode(bytes).expect("decodes");
        assert_eq!(decode(&parts[part]), decode(&retained), "part {part}");
    }
}
