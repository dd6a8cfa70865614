//! `type = "prometheus"`: a scrape endpoint serving the metrics that reach this exporter, in
//! Prometheus text format, translated per the OpenTelemetry "Prometheus and OpenMetrics
//! compatibility" spec:
//!
//! - names sanitized, unit suffixes added (`s` → `_seconds`, `By` → `_bytes`, `1` → `_ratio` on
//!   gauges), `_total` on monotonic sums (counters);
//! - histograms as `_bucket{le}` / `_sum` / `_count`; summaries with `quantile` labels;
//!   exponential histograms **converted to classic buckets** (one bucket per populated
//!   exponential bucket, upper bound base^(index+1));
//! - `job` / `instance` from `service.namespace`/`service.name` and `service.instance.id`, the
//!   other resource attributes on `target_info`, chosen ones promoted to labels
//!   (`resource_to_labels`), `const_labels` on every series;
//! - delta sums and histograms accumulated into cumulative ones;
//! - series dropped when their source has not updated them for `expiry`.
//!
//! # Layout
//! - `names`: metric and label names.
//! - `store`: the series, their translation, and the text format.

pub mod labels;
mod names;
pub mod store;
mod translate;

pub mod config;

use super::BuildError;
use super::registry::{ExporterType, SharedKeys, Start};
use crate::config::ListenAddress;
use serde_spanned::Spanned;
use tokio::task::JoinHandle;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use self::store::{Options, Store};
use super::{ExportError, Exporter};
use crate::batch::Batch;
use crate::config::{ComponentId, PrometheusExporterConfig, SeriesConfig, Signal};

/// Serves what it is given on its scrape endpoint.
pub struct PrometheusExporter {
    store: Arc<Mutex<Store>>,
    stop: CancellationToken,
}

async fn scrape(State(store): State<Arc<Mutex<Store>>>) -> impl IntoResponse {
    let text = {
        let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
        store.expire(Instant::now());
        store.render()
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

impl PrometheusExporter {
    /// Binds the scrape endpoint and starts serving it.
    pub fn start(
        name: &ComponentId,
        config: &PrometheusExporterConfig,
        series: &SeriesConfig,
    ) -> Result<Self, ExportError> {
        let address = config.address.get_ref().0;
        let io = |context: String| move |source| ExportError::Io { context, source };
        let listener =
            std::net::TcpListener::bind(address).map_err(io(format!("cannot listen on {address}")))?;
        listener.set_nonblocking(true).map_err(io("cannot configure the listener".into()))?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(io("cannot configure the listener".into()))?;
        let store = Arc::new(Mutex::new(Store::new(Options::of(series, names_label, false))));
        let stop = CancellationToken::new();
        let router = Router::new().route("/metrics", get(scrape)).with_state(store.clone());
        let label = format!("exporter `{name}`");
        tracing::info!(component = %label, %address, "Serving a Prometheus scrape endpoint on /metrics");
        tokio::spawn(crate::receivers::server::run(listener, router, stop.clone()));
        Ok(Self { store, stop })
    }
}

fn names_label(key: &str) -> String {
    names::sanitize_label(key)
}

impl Exporter for PrometheusExporter {
    fn export(&mut self, batch: &Batch) -> Result<(), ExportError> {
        if batch.signal() != Signal::Metrics {
            return Ok(());
        }
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        store.update(batch.payload(), Instant::now())?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ExportError> {
        self.stop.cancel();
        Ok(())
    }
}

impl ExporterType for PrometheusExporterConfig {
    const SHARED: &'static [SharedKeys] = &[SharedKeys::Series];

    fn listens_on(&self) -> Option<&Spanned<ListenAddress>> {
        Some(&self.address)
    }

    async fn start(&self, start: Start<'_>) -> Result<JoinHandle<()>, BuildError> {
        let series = start.series()?;
        let exporter = PrometheusExporter::start(start.name, self, series).map_err(|e| start.failed(e))?;
        Ok(start.run(exporter))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric,
        NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
        exponential_histogram_data_point::Buckets, metric, number_data_point,
        summary_data_point::ValueAtQuantile,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message as _;
    use sluice_wire::wire::put_bytes_field;

    use super::store::{Options, Store};

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
            ..Default::default()
        }
    }

    fn point(value: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
        NumberDataPoint {
            attributes: attrs,
            value: Some(number_data_point::Value::AsDouble(value)),
            ..Default::default()
        }
    }

    /// An encoded request of `metrics` from one resource.
    fn request(metrics: Vec<Metric>) -> Vec<u8> {
        let resource =
            vec![kv("service.name", "api"), kv("service.instance.id", "i-1"), kv("k8s.cluster.name", "c1")];
        request_from(resource, metrics)
    }

    /// An encoded request of `metrics` from a resource with `attributes`.
    fn request_from(attributes: Vec<KeyValue>, metrics: Vec<Metric>) -> Vec<u8> {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource { attributes, ..Default::default() }),
                scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn store_options() -> Options {
        Options {
            resource_to_labels: vec!["k8s.cluster.name".into()],
            const_labels: vec![("env".into(), "test".into())],
            expiry: Duration::from_secs(60),
            track_updates: false,
        }
    }

    fn store() -> Store {
        Store::new(store_options())
    }

    /// Found by the `prometheus_store` fuzz target: counts come off the wire as any u64, and
    /// adding delta histograms (or a bucket's counts up to `le`) wrapped — a panic in a debug
    /// build, wrong counts in a release one. They saturate.
    #[test]
    fn huge_delta_histogram_counts_saturate() {
        let huge = HistogramDataPoint {
            count: u64::MAX - 1,
            explicit_bounds: vec![1.0],
            bucket_counts: vec![u64::MAX - 1, u64::MAX - 1],
            ..Default::default()
        };
        let metrics = vec![Metric {
            name: "latency".into(),
            unit: "s".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![huge],
                aggregation_temporality: 1,
            })),
            ..Default::default()
        }];
        let mut store = store();
        let now = std::time::Instant::now();
        store.update(&request(metrics.clone()), now).expect("decodes");
        store.update(&request(metrics), now).expect("decodes");
        let text = store.render();
        let max = format!("{}", u64::MAX as f64);
        assert!(text.lines().any(|l| l.starts_with("latency_seconds_count") && l.ends_with(&max)), "{text}");
    }

    #[test]
    fn translates_gauges_counters_and_histograms() {
        let mut store = store();
        let metrics = vec![
            Metric {
                name: "gpu.temperature".into(),
                unit: "Cel".into(),
                data: Some(metric::Data::Gauge(Gauge {
                    data_points: vec![point(61.5, vec![kv("gpu", "0")])],
                })),
                ..Default::default()
            },
            Metric {
                name: "jobs.done".into(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: vec![point(3.0, vec![])],
                    aggregation_temporality: 1, // delta
                    is_monotonic: true,
                })),
                ..Default::default()
            },
            Metric {
                name: "job.duration".into(),
                unit: "s".into(),
                data: Some(metric::Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        count: 3,
                        sum: Some(6.0),
                        bucket_counts: vec![1, 1, 1],
                        explicit_bounds: vec![1.0, 2.5],
                        ..Default::default()
                    }],
                    aggregation_temporality: 2,
                })),
                ..Default::default()
            },
        ];
        let now = std::time::Instant::now();
        store.update(&request(metrics.clone()), now).expect("decodes");
        store.update(&request(metrics), now).expect("decodes");
        let text = store.render();
        let base = r#"env="test",instance="i-1",job="api",k8s_cluster_name="c1""#;
        let gpu = r#"gpu_temperature_celsius{env="test",gpu="0",instance="i-1",job="api",k8s_cluster_name="c1"} 61.5"#;
        assert!(text.contains(gpu), "{text}");
        assert!(text.contains("# TYPE jobs_done_total counter"), "{text}");
        assert!(text.contains(&format!("jobs_done_total{{{base}}} 6")), "deltas accumulate: {text}");
        assert!(text.contains(&format!("job_duration_seconds_bucket{{{base},le=\"2.5\"}} 2")), "{text}");
        assert!(text.contains(&format!("job_duration_seconds_bucket{{{base},le=\"+Inf\"}} 3")), "{text}");
        assert!(text.contains(&format!("job_duration_seconds_count{{{base}}} 3")), "{text}");
        assert!(text.contains(r#"target_info{instance="i-1",job="api",k8s_cluster_name="c1"} 1"#), "{text}");
        store.expire(now + Duration::from_secs(61));
        assert!(store.is_empty());
    }

    #[test]
    fn delta_histograms_accumulate_and_label_values_are_escaped() {
        let latency = |counts: Vec<u64>| Metric {
            name: "latency".into(),
            unit: "s".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: vec![kv("path", "a\"b\\c\nd")],
                    count: counts.iter().sum(),
                    sum: Some(1.5),
                    bucket_counts: counts,
                    explicit_bounds: vec![1.0],
                    ..Default::default()
                }],
                aggregation_temporality: 1, // delta
            })),
            ..Default::default()
        };
        let mut store = store();
        let now = std::time::Instant::now();
        store.update(&request(vec![latency(vec![1, 2])]), now).expect("decodes");
        store.update(&request(vec![latency(vec![4, 8])]), now).expect("decodes");
        let text = store.render();
        let labels = r#"env="test",instance="i-1",job="api",k8s_cluster_name="c1",path="a\"b\\c\nd""#;
        for line in [
            format!("latency_seconds_bucket{{{labels},le=\"1\"}} 5"),
            format!("latency_seconds_bucket{{{labels},le=\"+Inf\"}} 15"),
            format!("latency_seconds_sum{{{labels}}} 3"),
            format!("latency_seconds_count{{{labels}}} 15"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
    }

    fn any(value: any_value::Value) -> KeyValue {
        KeyValue { key: String::new(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    #[test]
    fn translates_exponential_histograms_summaries_and_every_attribute_kind() {
        let attributes = vec![
            KeyValue { key: "on".into(), ..any(any_value::Value::BoolValue(true)) },
            KeyValue { key: "n".into(), ..any(any_value::Value::IntValue(-42)) },
            KeyValue { key: "ratio".into(), ..any(any_value::Value::DoubleValue(1.5)) },
            KeyValue {
                key: "tags".into(),
                ..any(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue { value: Some(any_value::Value::StringValue("x".into())) }],
                }))
            },
            KeyValue { key: "none".into(), value: None, ..Default::default() },
        ];
        let metrics = vec![
            Metric {
                name: "size".into(),
                data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![ExponentialHistogramDataPoint {
                        attributes: attributes.clone(),
                        count: 7,
                        sum: Some(30.0),
                        scale: 0, // base 2
                        zero_count: 1,
                        positive: Some(Buckets { offset: 1, bucket_counts: vec![2, 3] }),
                        negative: Some(Buckets { offset: 0, bucket_counts: vec![1] }),
                        ..Default::default()
                    }],
                    aggregation_temporality: 2,
                })),
                ..Default::default()
            },
            Metric {
                name: "rpc".into(),
                data: Some(metric::Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint {
                        count: 4,
                        sum: 10.0,
                        quantile_values: vec![
                            ValueAtQuantile { quantile: 0.5, value: 1.0 },
                            ValueAtQuantile { quantile: 0.99, value: 3.0 },
                        ],
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            },
            Metric {
                name: "queued".into(),
                data: Some(metric::Data::Gauge(Gauge {
                    data_points: vec![NumberDataPoint {
                        value: Some(number_data_point::Value::AsInt(-3)),
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            },
        ];
        let mut store = store();
        store.update(&request(metrics), std::time::Instant::now()).expect("decodes");
        let text = store.render();
        let base = r#"env="test",instance="i-1",job="api",k8s_cluster_name="c1""#;
        let point = format!(
            r#"{base},n="-42",on="true",ratio="1.5",tags="ArrayValue(ArrayValue {{ values: [AnyValue {{ value: Some(StringValue(\"x\")) }}] }})""#
        );
        for line in [
            // Negative buckets and the zero bucket count below the first bound, 2^(1+1).
            format!(r#"size_bucket{{{point},le="4"}} 4"#),
            format!(r#"size_bucket{{{point},le="8"}} 7"#),
            format!(r#"size_bucket{{{point},le="+Inf"}} 7"#),
            format!("size_sum{{{point}}} 30"),
            format!(r#"rpc{{{base},quantile="0.5"}} 1"#),
            format!(r#"rpc{{{base},quantile="0.99"}} 3"#),
            format!("rpc_sum{{{base}}} 10"),
            format!("rpc_count{{{base}}} 4"),
            format!("queued{{{base}}} -3"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
    }

    /// Requests leaning on protobuf's merge rules (a resource sent twice; a metric's data sent
    /// twice) are stored as the decoder merges them, and a delta read before the merge point
    /// counts once.
    #[test]
    fn requests_needing_merges_are_stored_as_decoded() {
        let jobs = Metric {
            name: "jobs".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![point(3.0, vec![])],
                aggregation_temporality: 1, // delta
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let gauge = |value, gpu: &str| Gauge { data_points: vec![point(value, vec![kv("gpu", gpu)])] };
        let resource = |attributes| Resource { attributes, ..Default::default() }.encode_to_vec();
        let request_of = |resources: &[Vec<u8>], metrics: &[Vec<u8>]| {
            let mut scope = Vec::new();
            for metric in metrics {
                put_bytes_field(&mut scope, 2, metric);
            }
            let mut group = Vec::new();
            for resource in resources {
                put_bytes_field(&mut group, 1, resource);
            }
            put_bytes_field(&mut group, 2, &scope);
            let mut request = Vec::new();
            put_bytes_field(&mut request, 1, &group);
            request
        };
        let split_resource = [
            resource(vec![kv("service.name", "api"), kv("service.instance.id", "i-1")]),
            resource(vec![kv("k8s.cluster.name", "c1")]),
        ];
        let whole_resource = [resource(vec![
            kv("service.name", "api"),
            kv("service.instance.id", "i-1"),
            kv("k8s.cluster.name", "c1"),
        ])];
        let mut temperature = Metric {
            name: "temperature".into(),
            data: Some(metric::Data::Gauge(gauge(1.0, "0"))),
            ..Default::default()
        }
        .encode_to_vec();
        put_bytes_field(&mut temperature, 5, &gauge(2.0, "1").encode_to_vec());

        let mut store = store();
        let now = std::time::Instant::now();
        store.update(&request_of(&split_resource, &[jobs.encode_to_vec()]), now).expect("decodes");
        store
            .update(&request_of(&whole_resource, &[jobs.encode_to_vec(), temperature]), now)
            .expect("decodes");
        let text = store.render();
        for line in [
            r#"jobs_total{env="test",instance="i-1",job="api",k8s_cluster_name="c1"} 6"#,
            r#"temperature{env="test",gpu="0",instance="i-1",job="api",k8s_cluster_name="c1"} 1"#,
            r#"temperature{env="test",gpu="1",instance="i-1",job="api",k8s_cluster_name="c1"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
    }

    #[test]
    fn a_malformed_request_is_refused_and_changes_nothing() {
        let mut store = store();
        let now = std::time::Instant::now();
        let mut body = request(vec![Metric {
            name: "up".into(),
            data: Some(metric::Data::Gauge(Gauge { data_points: vec![point(1.0, vec![])] })),
            ..Default::default()
        }]);
        body.truncate(body.len() - 3);
        assert!(store.update(&body, now).is_err());
        assert!(store.is_empty(), "{}", store.render());
    }

    /// Remote write sends each series updated since the last send once, however often a
    /// batch (or several) updated it, and nothing for a series left alone.
    #[test]
    fn updated_series_are_taken_once() {
        let mut store = Store::new(Options { track_updates: true, ..store_options() });
        let gauge = |value: f64, gpu: &str| Metric {
            name: "gpu.temperature".into(),
            data: Some(metric::Data::Gauge(Gauge { data_points: vec![point(value, vec![kv("gpu", gpu)])] })),
            ..Default::default()
        };
        let now = std::time::Instant::now();
        store
            .update(&request(vec![gauge(1.0, "0"), gauge(2.0, "0"), gauge(5.0, "1")]), now)
            .expect("decodes");
        store.update(&request(vec![gauge(3.0, "0")]), now).expect("decodes");
        let mut taken: Vec<(String, f64)> = Vec::new();
        store.take_updated(|sample| {
            if sample.name == "gpu_temperature" {
                let gpu = sample.labels.get("gpu").expect("gpu");
                taken.push((gpu.to_string(), sample.value));
            }
        });
        assert_eq!(taken, [("0".to_string(), 3.0), ("1".to_string(), 5.0)], "each once, latest value");
        assert_eq!(store.take_updated(|_| {}), 0, "nothing updated since");
        store.update(&request(vec![gauge(4.0, "1")]), now).expect("decodes");
        let mut temperatures = 0;
        store.take_updated(|sample| temperatures += usize::from(sample.name == "gpu_temperature"));
        assert_eq!(temperatures, 1);
    }

    /// A series listed as updated, expired and then updated again before the next send is a new
    /// series: it is sent once, with the value it came back with.
    #[test]
    fn a_series_that_expired_and_came_back_is_taken_once() {
        let mut store = Store::new(Options { track_updates: true, ..store_options() });
        let gauge = |value: f64| Metric {
            name: "gpu.temperature".into(),
            data: Some(metric::Data::Gauge(Gauge { data_points: vec![point(value, vec![kv("gpu", "0")])] })),
            ..Default::default()
        };
        let start = std::time::Instant::now();
        store.update(&request(vec![gauge(1.0)]), start).expect("decodes");
        let later = start + Duration::from_secs(61);
        store.expire(later);
        assert!(store.is_empty(), "expired");
        store.update(&request(vec![gauge(2.0)]), later).expect("decodes");
        let mut taken = Vec::new();
        store.take_updated(|sample| {
            if sample.name == "gpu_temperature" {
                taken.push(sample.value);
            }
        });
        assert_eq!(taken, [2.0]);
    }

    /// Each `gpu.temperature` sample taken since the last call, by its `gpu` label.
    fn taken_by_gpu(store: &mut Store) -> BTreeMap<String, f64> {
        let mut taken = BTreeMap::new();
        store.take_updated(|sample| {
            if sample.name == "gpu_temperature" {
                taken.insert(sample.labels.get("gpu").expect("a gpu label").to_string(), sample.value);
            }
        });
        taken
    }

    /// A `gpu.temperature` gauge with one point per `(gpu, value)`.
    fn temperatures(points: &[(&str, f64)]) -> Metric {
        let points = points.iter().map(|&(gpu, value)| point(value, vec![kv("gpu", gpu)])).collect();
        Metric {
            name: "gpu.temperature".into(),
            data: Some(metric::Data::Gauge(Gauge { data_points: points })),
            ..Default::default()
        }
    }

    /// A point is first looked for where the point before's series led last time: whatever the
    /// order, each value lands in its own series.
    #[test]
    fn series_are_found_whatever_order_they_come_in() {
        let mut store = Store::new(Options { track_updates: true, ..store_options() });
        let now = std::time::Instant::now();
        let orders: [&[&str]; 4] = [
            &["0", "1", "2", "3", "4"],
            &["3", "0", "5", "1", "2", "4"],
            &["0", "1", "2", "3", "4", "5"],
            &["4", "0"],
        ];
        for (round, order) in orders.into_iter().enumerate() {
            let value = |gpu: &str| (round * 10) as f64 + gpu.parse::<f64>().expect("a number");
            let points: Vec<_> = order.iter().map(|&gpu| (gpu, value(gpu))).collect();
            store.update(&request(vec![temperatures(&points)]), now).expect("decodes");
            let expected: BTreeMap<_, _> = order.iter().map(|&gpu| (gpu.to_string(), value(gpu))).collect();
            assert_eq!(taken_by_gpu(&mut store), expected, "round {round}");
        }
        // Six series and target_info.
        assert_eq!(store.len(), 7);
    }

    /// Expiry moves the series left; an update listed before it is still taken, and later
    /// points still find their series.
    #[test]
    fn updates_listed_before_an_expiry_are_taken_after_it() {
        let mut store = Store::new(Options { track_updates: true, ..store_options() });
        let start = std::time::Instant::now();
        store
            .update(&request(vec![temperatures(&[("0", 1.0), ("1", 1.0), ("2", 1.0)])]), start)
            .expect("decodes");
        taken_by_gpu(&mut store);
        let later = start + Duration::from_secs(50);
        store.update(&request(vec![temperatures(&[("2", 9.0)])]), later).expect("decodes");
        store.expire(start + Duration::from_secs(61));
        assert_eq!(taken_by_gpu(&mut store), BTreeMap::from([("2".to_string(), 9.0)]));
        store.update(&request(vec![temperatures(&[("3", 3.0), ("2", 10.0)])]), later).expect("decodes");
        let expected = BTreeMap::from([("2".to_string(), 10.0), ("3".to_string(), 3.0)]);
        assert_eq!(taken_by_gpu(&mut store), expected);
        assert!(store.render().contains(r#"gpu="2",instance="i-1",job="api",k8s_cluster_name="c1"} 10"#));
    }

    /// A label is named once: a constant label wins over `job` and `instance`, and those over
    /// a point's own attributes (two `job` labels would fail the whole scrape).
    #[test]
    fn a_label_named_twice_keeps_the_first() {
        let const_labels = vec![("job".into(), "fleet".into()), ("env".into(), "test".into())];
        let mut store = Store::new(Options { const_labels, ..store_options() });
        let metric = Metric {
            name: "gpu.temperature".into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![point(1.0, vec![kv("gpu", "0"), kv("instance", "mine")])],
            })),
            ..Default::default()
        };
        store.update(&request(vec![metric]), std::time::Instant::now()).expect("decodes");
        let text = store.render();
        let line = text.lines().find(|line| line.starts_with("gpu_temperature{")).expect("the series");
        assert_eq!(
            line,
            r#"gpu_temperature{env="test",gpu="0",instance="i-1",job="fleet",k8s_cluster_name="c1"} 1"#
        );
    }

    /// A point's attributes name its series only together with its resource's labels: a series
    /// reached from two resources is not taken for the one after it in the other's order.
    #[test]
    fn the_same_attributes_under_another_resource_name_another_series() {
        let mut store = Store::new(Options { track_updates: true, ..store_options() });
        let now = std::time::Instant::now();
        let gauge = |points: Vec<NumberDataPoint>| Metric {
            name: "gpu.temperature".into(),
            data: Some(metric::Data::Gauge(Gauge { data_points: points })),
            ..Default::default()
        };
        let in_c1 = || vec![kv("service.name", "api"), kv("k8s.cluster.name", "c1")];
        // The second resource has no cluster; its first point names it as an attribute, so
        // both resources reach the series {gpu="0", k8s_cluster_name="c1"}.
        let no_cluster = || vec![kv("service.name", "api")];
        let first =
            |value| gauge(vec![point(value, vec![kv("gpu", "0")]), point(value, vec![kv("gpu", "1")])]);
        let second = |value| {
            let clustered = vec![kv("gpu", "0"), kv("k8s.cluster.name", "c1")];
            gauge(vec![point(value, clustered), point(value, vec![kv("gpu", "1")])])
        };
        store.update(&request_from(in_c1(), vec![first(1.0)]), now).expect("decodes");
        store.update(&request_from(no_cluster(), vec![second(2.0)]), now).expect("decodes");
        store.update(&request_from(in_c1(), vec![first(3.0)]), now).expect("decodes");
        let mut taken = BTreeMap::new();
        store.take_updated(|sample| {
            if sample.name == "gpu_temperature" {
                let at =
                    (sample.labels.get("gpu").unwrap_or_default(), sample.labels.get("k8s_cluster_name"));
                taken.insert((at.0.to_string(), at.1.map(str::to_string)), sample.value);
            }
        });
        let c1 = Some("c1".to_string());
        let expected = BTreeMap::from([
            (("0".into(), c1.clone()), 3.0),
            (("1".into(), c1), 3.0),
            (("1".into(), None), 2.0),
        ]);
        assert_eq!(taken, expected);
    }
}
