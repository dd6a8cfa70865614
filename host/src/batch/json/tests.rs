//! The renderer against `serde_json` over the owned messages, byte for byte, on generated
//! requests of every signal; and the requests it leaves to the owned decoder.

use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use prost::Message;
use sluice_bench::generate::Generator;

use super::*;

fn shape(signal: Signal) -> &'static Shape {
    match signal {
        Signal::Traces => &trace::SHAPE,
        Signal::Metrics => &metrics::SHAPE,
        Signal::Logs => &logs::SHAPE,
    }
}

fn request(rng: &mut Generator, signal: Signal) -> Vec<u8> {
    match signal {
        Signal::Traces => rng.traces(),
        Signal::Metrics => rng.metrics(),
        Signal::Logs => rng.logs(),
    }
}

fn owned_json(signal: Signal, bytes: &[u8]) -> String {
    let mut out = Vec::new();
    Decoded::from_protobuf(signal, bytes).expect("decodes").write_json(&mut out, false).expect("serializes");
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// Renders from the wire only: a fall back to the owned decoder would hide a renderer bug.
fn wire_json(signal: Signal, parts: &[&[u8]]) -> String {
    let mut out = Vec::new();
    render(&mut Writer::new(&mut out), parts, shape(signal)).expect("rendered from the wire");
    String::from_utf8(out).expect("JSON is UTF-8")
}

#[test]
fn generated_requests_render_exactly_as_serde_writes_the_owned_messages() {
    let mut rng = Generator(11);
    for signal in Signal::ALL {
        for case in 0..400 {
            let bytes = request(&mut rng, signal);
            assert_eq!(wire_json(signal, &[&bytes]), owned_json(signal, &bytes), "{signal} case {case}");
        }
    }
}

#[test]
fn parts_render_as_the_request_they_make_together() {
    let mut rng = Generator(5);
    for signal in Signal::ALL {
        for _ in 0..50 {
            let (first, second) = (request(&mut rng, signal), request(&mut rng, signal));
            let whole = [first.as_slice(), second.as_slice()].concat();
            assert_eq!(wire_json(signal, &[&first, &second]), owned_json(signal, &whole), "{signal}");
        }
    }
}

#[test]
fn fields_out_of_order_and_repeated_scalars_read_as_prost_reads_them() {
    // A span written backwards, its name given twice (the last wins) and its attributes split
    // around other fields.
    let mut span = Vec::new();
    let put = sluice_wire::wire::put_bytes_field;
    let attribute = |key: &str| {
        let mut value = Vec::new();
        put(&mut value, 1, b"v");
        let mut kv = Vec::new();
        put(&mut kv, 1, key.as_bytes());
        put(&mut kv, 2, &value);
        kv
    };
    put(&mut span, 9, &attribute("a"));
    put(&mut span, 5, b"first");
    sluice_wire::wire::put_fixed64_field(&mut span, 7, 42);
    put(&mut span, 9, &attribute("b"));
    put(&mut span, 5, b"second");
    put(&mut span, 2, &[2; 8]);
    put(&mut span, 1, &[1; 16]);
    let mut scope = Vec::new();
    put(&mut scope, 2, &span);
    let mut group = Vec::new();
    put(&mut group, 2, &scope);
    let mut bytes = Vec::new();
    put(&mut bytes, 1, &group);
    let json = wire_json(Signal::Traces, &[&bytes]);
    assert_eq!(json, owned_json(Signal::Traces, &bytes));
    assert!(json.contains(r#""name":"second""#) && json.contains(r#""key":"a""#), "{json}");
}

#[test]
fn groups_whose_head_comes_after_their_list_render_as_prost_reads_them() {
    let put = sluice_wire::wire::put_bytes_field;
    let span = Span { trace_id: vec![1; 16], span_id: vec![2; 8], name: "s".into(), ..Default::default() };
    let mut scope_name = Vec::new();
    put(&mut scope_name, 1, b"scope-after-spans");
    let mut scope = Vec::new();
    put(&mut scope, 2, &span.encode_to_vec());
    put(&mut scope, 3, b"schema");
    put(&mut scope, 1, &scope_name);
    let mut service = Vec::new();
    put(&mut service, 1, b"service.name");
    let mut resource = Vec::new();
    put(&mut resource, 1, &service);
    let mut group = Vec::new();
    put(&mut group, 2, &scope);
    put(&mut group, 2, &[]);
    put(&mut group, 1, &resource);
    let mut bytes = Vec::new();
    put(&mut bytes, 1, &group);
    let json = wire_json(Signal::Traces, &[&bytes]);
    assert_eq!(json, owned_json(Signal::Traces, &bytes));
    assert!(json.contains("scope-after-spans") && json.contains("service.name"), "{json}");
}

#[test]
fn a_message_field_given_twice_is_merged_by_the_owned_decoder() {
    // Protobuf merges the two halves of a status: the message from one, the code from the other.
    let span = Span { trace_id: vec![1; 16], span_id: vec![2; 8], ..Default::default() };
    let mut span_bytes = span.encode_to_vec();
    span_bytes.extend(
        Span { status: Some(Status { message: "m".into(), code: 0 }), ..Default::default() }.encode_to_vec(),
    );
    span_bytes.extend(
        Span { status: Some(Status { message: String::new(), code: 2 }), ..Default::default() }
            .encode_to_vec(),
    );
    let mut scope = Vec::new();
    sluice_wire::wire::put_bytes_field(&mut scope, 2, &span_bytes);
    let mut group = Vec::new();
    sluice_wire::wire::put_bytes_field(&mut group, 2, &scope);
    let mut bytes = Vec::new();
    sluice_wire::wire::put_bytes_field(&mut bytes, 1, &group);

    let mut out = Vec::new();
    assert!(render(&mut Writer::new(&mut out), &[&bytes], &trace::SHAPE).is_err(), "left to the decoder");
    let mut out = Vec::new();
    write_json(Signal::Traces, &[&bytes], &mut out).expect("rendered");
    let json = String::from_utf8(out).expect("UTF-8");
    assert_eq!(json, owned_json(Signal::Traces, &bytes));
    assert!(json.contains(r#""status":{"message":"m","code":2}"#), "{json}");
}

#[test]
fn a_malformed_request_is_an_error_not_a_partial_line() {
    let mut out = b"kept".to_vec();
    let error = write_json(Signal::Logs, &[&[0x0a, 0x05, 0x01]], &mut out).expect_err("truncated");
    assert!(error.to_string().contains("invalid protobuf logs request"), "{error}");
    assert_eq!(out, b"kept");
}

#[test]
fn a_renderer_sizes_each_buffer_from_the_request_before() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    // Small spans: their JSON (every field written, IDs in hex) is ~9 times their protobuf,
    // far past any fixed guess.
    let span = Span { trace_id: vec![1; 16], span_id: vec![2; 8], name: "s".into(), ..Default::default() };
    let small = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![span; 200], ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let mut rng = Generator(7);
    let renderer = JsonRenderer::default();
    let requests = [(Signal::Traces, small), (Signal::Traces, rng.traces()), (Signal::Logs, rng.logs())];
    for (signal, request) in requests {
        let first = renderer.render(signal, &[&request]).expect("renders");
        assert_eq!(String::from_utf8(first).expect("UTF-8"), owned_json(signal, &request));
        // The same request again: the room reserved from the first fits it without growing
        // (which doubles it), with an eighth, some rounding and a tiny request's fixed text to spare.
        let again = renderer.render(signal, &[&request]).expect("renders");
        let (room, len) = (again.capacity(), again.len());
        assert!(room >= len && room <= len * 5 / 4 + 256, "{signal}: {room} bytes reserved for {len}");
    }
}
