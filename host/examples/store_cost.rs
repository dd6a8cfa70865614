//! What the Prometheus exporters' store costs per data point, in process, on the requests
//! `bench/prometheus.py` sends: 100,000 gauge series in requests of 5,000 points, each point
//! with a `series` and a `gpu` attribute. It times a store taking every series for the first
//! time, and a store taking new values for series it holds; `--remote` also takes the updated
//! series after each request, as remote write does.
//!
//! ```sh
//! taskset -c 0 cargo run --release -p sluice-host --example store_cost [--remote]
//! ```
//!
//! Receiving and the HTTP layer are left out: this is the store's share of
//! `bench/prometheus.py`'s figure, and it settles far better on a shared machine.

use std::hint::black_box;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use sluice::exporters::prometheus::store::{Options, Store};

/// The allocator the `sluice` binary runs with: creating series is mostly allocating.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SERIES: usize = 100_000;
const PER_REQUEST: usize = 5_000;

fn text(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }),
        ..Default::default()
    }
}

/// The request for series `first..first + PER_REQUEST`, each with `value`.
fn request(first: usize, value: f64) -> Vec<u8> {
    let points = (first..first + PER_REQUEST)
        .map(|i| NumberDataPoint {
            attributes: vec![text("series", i.to_string()), text("gpu", (i % 8).to_string())],
            value: Some(number_data_point::Value::AsDouble(value)),
            ..Default::default()
        })
        .collect();
    let metric = Metric {
        name: "bench.value".into(),
        unit: "By".into(),
        data: Some(metric::Data::Gauge(Gauge { data_points: points })),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![text("service.name", "bench".into())],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics { metrics: vec![metric], ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn main() {
    let remote = std::env::args().any(|arg| arg == "--remote");
    let options = Options { expiry: Duration::from_secs(600), track_updates: remote, ..Options::default() };
    let round =
        |value: f64| (0..SERIES).step_by(PER_REQUEST).map(|first| request(first, value)).collect::<Vec<_>>();
    let (first, again) = (round(0.0), round(1.0));
    let feed = |store: &mut Store, requests: &[Vec<u8>]| {
        let now = Instant::now();
        for body in requests {
            store.update(black_box(body), now).expect("a valid request");
            if remote {
                black_box(store.take_updated(|sample| {
                    black_box(sample.value);
                }));
            }
        }
    };
    // New series: a fresh store each time.
    let new = fastest(|| {
        let mut store = Store::new(options.clone());
        let started = Instant::now();
        feed(&mut store, &first);
        let took = started.elapsed();
        assert_eq!(store.len(), SERIES + 1, "every series and target_info");
        took
    });
    // Held series: one store, fed round after round.
    let mut store = Store::new(options.clone());
    feed(&mut store, &first);
    let held = fastest(|| {
        let started = Instant::now();
        feed(&mut store, &again);
        started.elapsed()
    });
    let per_point = |took: Duration| took.as_nanos() as f64 / SERIES as f64;
    let mode = if remote { "update + take (remote write)" } else { "update (scrape)" };
    println!("{mode}, {SERIES} series, fastest round:");
    println!("  new series:  {:.0} ns per data point", per_point(new));
    println!("  held series: {:.0} ns per data point", per_point(held));
}

/// The fastest of rounds run for two seconds (at least three): a neighbour's load only ever
/// slows a round down.
fn fastest(mut round: impl FnMut() -> Duration) -> Duration {
    let started = Instant::now();
    let mut best = Duration::MAX;
    let mut rounds = 0;
    while rounds < 3 || started.elapsed() < Duration::from_secs(2) {
        best = best.min(round());
        rounds += 1;
    }
    best
}
