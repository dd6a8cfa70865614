//! The Prometheus conversions never panic, and the store reads any metrics request prost decodes
//! as prost does: the bytes as they came and their canonical re-encoding (what the store reads in
//! place, or hands to prost when the request leans on merge rules) give the same exposition text.
//! Each goes in twice, so deltas accumulate, and out as text and as a remote write request.

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use sluice::exporters::prometheus::store::{Options, Store};
use sluice::exporters::remote_write::encode::WriteRequestEncoder;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = ExportMetricsServiceRequest::decode(data) else { return };
    let options = Options {
        resource_to_labels: vec!["service.name".into(), "k8s.pod.name".into()],
        const_labels: vec![("deployment".into(), "fuzz".into())],
        expiry: Duration::from_secs(60),
        track_updates: true,
    };
    let now = Instant::now();
    let mut canonical = Store::new(options.clone());
    let encoded = request.encode_to_vec();
    canonical.update(&encoded, now).expect("a canonical request is read");
    canonical.update(&encoded, now).expect("a canonical request is read");
    let mut store = Store::new(options);
    store.update(data, now).expect("what prost decodes is read");
    store.update(data, now).expect("what prost decodes is read");
    assert_eq!(store.render(), canonical.render());
    let mut encoder = WriteRequestEncoder::default();
    store.take_updated(|sample| encoder.push(sample, 1_700_000_000_000));
    let _ = encoder.bytes();
    store.expire(now + Duration::from_secs(120));
    assert!(store.render().lines().all(|line| line.starts_with('#')), "every series expired");
});
