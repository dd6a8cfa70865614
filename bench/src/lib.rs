//! What the load generator sends, shared with the micro-benchmarks that measure a path on the
//! same bytes (`cargo run --release -p sluice-host --example compress_cost`).

pub mod generate;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rand::Rng;

fn string_kv(key: String, value: String) -> KeyValue {
    KeyValue {
        key,
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }),
        ..Default::default()
    }
}

/// An encoded `ExportTraceServiceRequest`: one batch of `batch` spans with `attributes` attributes each, ~470 bytes per span at 10,
/// spread round-robin over `traces` traces (at least one).
pub fn make_batch(rng: &mut impl Rng, batch: usize, attributes: usize, traces: usize) -> Vec<u8> {
    let trace_ids: Vec<[u8; 16]> = (0..traces.max(1)).map(|_| rng.random()).collect();
    let start = 1_700_000_000_000_000_000u64 + rng.random_range(0..1_000_000_000u64);
    let spans = (0..batch)
        .map(|i| Span {
            trace_id: trace_ids[i % trace_ids.len()].to_vec(),
            span_id: rng.random::<[u8; 8]>().to_vec(),
            parent_span_id: rng.random::<[u8; 8]>().to_vec(),
            name: if i % 10 == 0 { "GET /healthz".into() } else { format!("GET /api/v1/items/{}", i % 17) },
            kind: 2,
            start_time_unix_nano: start + i as u64 * 1000,
            end_time_unix_nano: start + i as u64 * 1000 + 50_000,
            attributes: (0..attributes)
                .map(|a| {
                    string_kv(format!("attribute.key.{a}"), format!("value-{a}-{}", rng.random::<u32>()))
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string_kv("service.name".into(), "loadgen".into()),
                    string_kv("service.instance.id".into(), format!("{:x}", rng.random::<u64>())),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "sluice-loadgen".into(), ..Default::default() }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}
