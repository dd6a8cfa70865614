//! The whole-request check accepts exactly what prost decodes: on generated requests of all
//! three signals (every field kind, attribute values nested around the recursion limit,
//! non-UTF-8 strings) and on those requests mutated byte by byte.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;
use prost::Message;
use sluice_bench::generate::Generator;
use sluice_wire::Signal;
use sluice_wire::check::{check, check_item, check_resource};
use sluice_wire::rewrite::{ItemAction, rebuild};
use sluice_wire::wire::put_bytes_field;

fn request(rng: &mut Generator, signal: Signal) -> Vec<u8> {
    match signal {
        Signal::Traces => rng.traces(),
        Signal::Metrics => rng.metrics(),
        Signal::Logs => rng.logs(),
    }
}

/// Damages `bytes` the ways hostile and broken clients do.
fn mutate(rng: &mut Generator, bytes: &mut Vec<u8>) {
    // Bytes that mean something to the wire format: group tags, continuation bits, invalid
    // UTF-8, wire types 6 and 7, a length of 127.
    const SPECIAL: [u8; 10] = [0x0b, 0x0c, 0x13, 0x14, 0x80, 0xff, 0xc3, 0x0e, 0x0f, 0x7f];
    let at = |rng: &mut Generator, len: usize| rng.below(len as u64 + 1) as usize;
    match rng.below(7) {
        0 if !bytes.is_empty() => {
            let i = at(rng, bytes.len() - 1);
            bytes[i] ^= 1 << rng.below(8);
        }
        1 if !bytes.is_empty() => {
            let i = at(rng, bytes.len() - 1);
            bytes[i] = SPECIAL[rng.below(SPECIAL.len() as u64) as usize];
        }
        2 => {
            let i = at(rng, bytes.len());
            bytes.insert(i, SPECIAL[rng.below(SPECIAL.len() as u64) as usize]);
        }
        3 if !bytes.is_empty() => {
            let i = at(rng, bytes.len() - 1);
            bytes.remove(i);
        }
        4 => {
            let len = at(rng, bytes.len());
            bytes.truncate(len);
        }
        5 => {
            // A deprecated group in an unknown field (decoders skip it), at either end, now
            // and then badly closed or nested past the recursion limit.
            let group = group(99 + rng.below(3) as u32 * 2 - 2, rng.below(3) as u32, rng.chance(90));
            let i = if rng.chance(50) { 0 } else { bytes.len() };
            bytes.splice(i..i, group);
        }
        _ => {
            let (a, b) = (at(rng, bytes.len()), at(rng, bytes.len()));
            let copy = bytes[a.min(b)..a.max(b)].to_vec();
            let i = at(rng, bytes.len());
            bytes.splice(i..i, copy);
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
    let mut rng = Generator(7);
    for signal in Signal::ALL {
        for _ in 0..200 {
            let bytes = request(&mut rng, signal);
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

/// `bytes` as field `number` of a message: tag, length, value.
fn framed(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_bytes_field(&mut out, number, bytes);
    out
}

/// A request of one resource group holding `resource`, or one scope group holding `item`.
fn request_around(resource: Option<&[u8]>, item: Option<&[u8]>) -> Vec<u8> {
    let mut group = resource.map(|r| framed(1, r)).unwrap_or_default();
    if let Some(item) = item {
        group.extend(framed(2, &framed(2, item)));
    }
    framed(1, &group)
}

/// A resource or an item checked alone gets the verdict, and the counts, the whole request
/// around it would: what [`check_resource`] and [`check_item`] pass, a request check passes.
fn parts_agree(signal: Signal, resource: &[u8], item: &[u8]) -> Result<(), TestCaseError> {
    let whole = check(signal, &request_around(Some(resource), None));
    prop_assert_eq!(check_resource(resource).is_ok(), whole.is_ok(), "resource {:02x?}", resource);
    let whole = check(signal, &request_around(None, Some(item)));
    let alone = check_item(signal, item);
    prop_assert_eq!(alone.is_ok(), whole.is_ok(), "{} item {:02x?}", signal, item);
    if let (Ok(alone), Ok(whole)) = (alone, whole) {
        prop_assert_eq!((alone.items, alone.invalid_items), (whole.items, whole.invalid_items));
    }
    Ok(())
}

#[test]
fn an_item_nested_past_the_limit_is_refused_alone_as_in_a_request() {
    let mut verdicts = Vec::new();
    for (depth, list) in (40..55).flat_map(|depth| [(depth, false), (depth, true)]) {
        let request = nested_body(depth, list);
        let mut log = Vec::new();
        rebuild(
            Signal::Logs,
            &request,
            |_, _| None,
            |_, item| {
                log = item.to_vec();
                ItemAction::Keep
            },
        )
        .expect("a well-framed request");
        let alone = check_item(Signal::Logs, &log).is_ok();
        assert_eq!(alone, check(Signal::Logs, &request).is_ok(), "depth {depth}, list {list}");
        verdicts.push(alone);
    }
    assert!(verdicts.first() == Some(&true) && verdicts.last() == Some(&false), "{verdicts:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn parts_are_checked_alone_as_in_a_request(seed in any::<u64>(), mutations in 0..3u32, signal in 0..3usize) {
        let signal = Signal::ALL[signal];
        let mut rng = Generator(seed);
        let bytes = request(&mut rng, signal);
        let (mut resource, mut item) = (Vec::new(), Vec::new());
        rebuild(signal, &bytes, |_, r| { resource = r.to_vec(); None }, |_, i| {
            if item.is_empty() {
                item = i.to_vec();
            }
            ItemAction::Keep
        }).expect("a generated request");
        for _ in 0..mutations {
            mutate(&mut rng, &mut resource);
            mutate(&mut rng, &mut item);
        }
        parts_agree(signal, &resource, &item)?;
    }

    #[test]
    fn the_check_accepts_exactly_what_prost_decodes(seed in any::<u64>(), mutations in 0..4u32, signal in 0..3usize) {
        let signal = Signal::ALL[signal];
        let mut rng = Generator(seed);
        let mut bytes = request(&mut rng, signal);
        for _ in 0..mutations {
            mutate(&mut rng, &mut bytes);
        }
        agree(signal, &bytes)?;
    }

    #[test]
    fn arbitrary_bytes_get_the_same_verdict(bytes in proptest::collection::vec(any::<u8>(), 0..64), signal in 0..3usize) {
        agree(Signal::ALL[signal], &bytes)?;
    }
}
