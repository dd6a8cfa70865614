//! What the whole-request check costs per span, beside the framing-only walk it replaced and
//! an owned prost decode, on the load generator's request shape (100 spans × 10 attributes).
//!
//! ```sh
//! cargo run --release -p sluice-wire --example check_cost
//! ```

use std::hint::black_box;
use std::time::Instant;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use sluice_wire::Signal;
use sluice_wire::otlp::Request;

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

/// One of the load generator's requests: varied values, so no branch history repeats.
fn request(seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let spans = (0..100u64)
        .map(|i| Span {
            trace_id: vec![1; 16],
            span_id: next().to_be_bytes().to_vec(),
            parent_span_id: next().to_be_bytes().to_vec(),
            name: if i % 10 == 0 { "GET /healthz".into() } else { format!("GET /api/v1/items/{}", i % 17) },
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i,
            end_time_unix_nano: 1_700_000_000_000_100_000 + i,
            attributes: (0..10)
                .map(|a| text(&format!("attribute.key.{a}"), &format!("value-{a}-{}", next() as u32)))
                .collect(),
            ..Default::default()
        })
        .collect();
    let resource = Resource { attributes: vec![text("service.name", "bench")], ..Default::default() };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// The walk the receivers did before: framing down to the spans, and each span's IDs.
fn framing_only(buf: &[u8]) -> u64 {
    let mut items = 0;
    for group in Request::new(Signal::Traces, buf).resources() {
        for scope in group.expect("valid").scopes() {
            for item in scope.expect("valid").items() {
                let item = item.expect("valid");
                let ids =
                    sluice_wire::Fields::new(item).map_while(Result::ok).filter(|f| f.number <= 2).count();
                items += ids as u64 / 2;
            }
        }
    }
    items
}

fn per_span(what: &str, rounds: u32, mut f: impl FnMut(usize) -> u64) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..7 {
        let start = Instant::now();
        for round in 0..rounds {
            black_box(f(round as usize));
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e9 / f64::from(rounds) / 100.0);
    }
    println!("{what:<28} {best:>8.1} ns per span (best of 7)");
    best
}

fn main() {
    // 64 different requests, cycled, as the load generator sends them.
    let pool: Vec<Vec<u8>> = (0..64u64).map(request).collect();
    let buf = |round: usize| black_box(&pool[round % pool.len()][..]);
    println!("requests: {} bytes, 100 spans × 10 attributes", pool[0].len());
    let old = per_span("framing and IDs only", 20_000, |r| framing_only(buf(r)));
    let new = per_span("whole-request check", 20_000, |r| {
        sluice_wire::check::check(Signal::Traces, buf(r)).expect("valid").items
    });
    per_span("prost decode (owned)", 2_000, |r| {
        ExportTraceServiceRequest::decode(buf(r)).expect("valid").resource_spans.len() as u64
    });
    println!("the check costs {:.1} ns per span more than the framing-only walk", new - old);
}
