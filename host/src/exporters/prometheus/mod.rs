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
use crate::batch::{Batch, Decoded};
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
        let (label, shutdown) = (format!("exporter `{name}`"), stop.clone().cancelled_owned());
        tracing::info!(component = %label, %address, "Serving a Prometheus scrape endpoint on /metrics");
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
                tracing::error!(component = %label, %error, "Scrape endpoint failed");
            }
        });
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
        let Decoded::Metrics(request) = batch.decoded().map_err(|e| e.clone())? else { return Ok(()) };
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        store.update(request, Instant::now());
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
    use std::time::Duration;

    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
        metric, number_data_point,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;

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

    fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", "api"),
                        kv("service.instance.id", "i-1"),
                        kv("k8s.cluster.name", "c1"),
                    ],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
                ..Default::default()
            }],
        }
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
        store.update(&request(metrics.clone()), now);
        store.update(&request(metrics), now);
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
        store.update(&request(metrics.clone()), now);
        store.update(&request(metrics), now);
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
        store.update(&request(vec![latency(vec![1, 2])]), now);
        store.update(&request(vec![latency(vec![4, 8])]), now);
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
        store.update(&request(vec![gauge(1.0, "0"), gauge(2.0, "0"), gauge(5.0, "1")]), now);
        store.update(&request(vec![gauge(3.0, "0")]), now);
        let mut taken: Vec<(String, f64)> = Vec::new();
        store.take_updated(|sample| {
            if sample.name == "gpu_temperature" {
                let gpu = sample.labels.get("gpu").expect("gpu");
                taken.push((gpu.to_string(), sample.value));
            }
        });
        assert_eq!(taken, [("0".to_string(), 3.0), ("1".to_string(), 5.0)], "each once, latest value");
        assert_eq!(store.take_updated(|_| {}), 0, "nothing updated since");
        store.update(&request(vec![gauge(4.0, "1")]), now);
        let mut temperatures = 0;
        store.take_updated(|sample| temperatures += usize::from(sample.name == "gpu_temperature"));
        assert_eq!(temperatures, 1);
    }
}
