//! The whole-request check accepts exactly what prost decodes, on any bytes: the first byte
//! picks the signal, the rest is the request. Also: it never panics, and what it accepts the
//! zero-copy views walk without an error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sluice_wire::Signal;
use sluice_wire::otlp::Request;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, request)) = data.split_first() else { return };
    let signal = Signal::ALL[usize::from(pick) % 3];
    let checked = sluice_wire::check::check(signal, request);
    let decoded = match signal {
        Signal::Traces => ExportTraceServiceRequest::decode(request).is_ok(),
        Signal::Metrics => ExportMetricsServiceRequest::decode(request).is_ok(),
        Signal::Logs => ExportLogsServiceRequest::decode(request).is_ok(),
    };
    assert_eq!(checked.is_ok(), decoded, "check: {checked:?}");
    if checked.is_ok() {
        for group in Request::new(signal, request).resources() {
            let group = group.expect("checked");
            assert!(group.attributes().expect("checked").all(|kv| kv.is_ok()));
            for scope in group.scopes() {
                assert!(scope.expect("checked").items().all(|item| item.is_ok()));
            }
        }
    }
});
