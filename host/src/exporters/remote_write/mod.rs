//! `type = "prometheus_remote_write"`: metrics pushed with Prometheus remote write 1.0 — a
//! snappy-compressed protobuf `WriteRequest` per batch — through the same delivery machinery
//! (credentials, TLS, retries, counters) as the OTLP exporter. Names, labels and delta →
//! cumulative accumulation follow the `prometheus` exporter's translation exactly.

pub mod config;
pub mod encode;

use super::BuildError;
use super::registry::{ExporterType, SharedKeys, Start};
use crate::config::ClientConfig;
use serde_spanned::Spanned;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use tokio::task::JoinHandle;

use self::encode::WriteRequestEncoder;
use super::http::delivery::{Delivery, Settings, judge_http_status};
use super::prometheus::store::{Options, Store};
use crate::config::{ComponentId, RemoteWriteExporterConfig, SeriesConfig, Signal};
use crate::metrics::{DeliveryCounters, PerSignal};
use crate::queue;

/// How often series past their expiry are dropped.
const EXPIRY_CHECK: Duration = Duration::from_secs(1);

/// Starts the exporter's task.
pub fn spawn(
    name: &ComponentId,
    config: &RemoteWriteExporterConfig,
    (client, series): (&ClientConfig, &SeriesConfig),
    mut rx: queue::Receiver,
    counters: PerSignal<DeliveryCounters>,
) -> Result<JoinHandle<()>, String> {
    let url: http::Uri = config.endpoint.get_ref().parse().map_err(|e| format!("endpoint: {e}"))?;
    let delivery = Delivery::new(Settings { name, client, http2_only: false, counters })?;
    // Remote write sends only the series each batch touched.
    let mut store = Store::new(Options::of(series, |name| name.to_string(), true));
    let mut encoder = WriteRequestEncoder::default();
    let mut compressor = snap::raw::Encoder::new();
    let mut next_expiry = Instant::now();
    let mut fixed = HeaderMap::new();
    fixed.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
    fixed.insert(CONTENT_ENCODING, HeaderValue::from_static("snappy"));
    fixed.insert("x-prometheus-remote-write-version", HeaderValue::from_static("0.1.0"));
    Ok(tokio::spawn(async move {
        while let Some(batch) = rx.recv().await {
            let items = batch.items();
            // Validation routes only metrics here; anything else has nothing to write.
            if batch.signal() != Signal::Metrics {
                delivery.settled(batch.signal(), items);
                continue;
            }
            let now = Instant::now();
            if let Err(error) = store.update(batch.payload(), now) {
                delivery.give_up(Signal::Metrics, items, &error.to_string());
                continue;
            }
            // Walking every series to expire them is as costly as a batch: once a second is
            // enough (a series outlives its `expiry` by at most that).
            if now >= next_expiry {
                store.expire(now);
                next_expiry = now + EXPIRY_CHECK;
            }
            let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            encoder.clear();
            store.take_updated(|sample| encoder.push(sample, timestamp));
            let mut body = vec![0; snap::raw::max_compress_len(encoder.bytes().len())];
            match compressor.compress(encoder.bytes(), &mut body) {
                Ok(written) => body.truncate(written),
                Err(error) => {
                    delivery.give_up(Signal::Metrics, items, &format!("cannot compress: {error}"));
                    continue;
                }
            };
            let body = Bytes::from(body);
            // Remote write's rule is plain HTTP's: 2xx delivered, 429/5xx retried, other 4xx final.
            delivery.deliver(Signal::Metrics, items, &url, body, &fixed, judge_http_status).await;
        }
        tracing::debug!(exporter = %delivery.name(), "Exporter drained");
    }))
}

impl ExporterType for RemoteWriteExporterConfig {
    const SHARED: &'static [SharedKeys] = &[SharedKeys::Series, SharedKeys::Client];

    fn endpoints(&self) -> Vec<&Spanned<String>> {
        vec![&self.endpoint]
    }

    async fn start(&self, start: Start<'_>) -> Result<JoinHandle<()>, BuildError> {
        let (name, client, series, delivery) =
            (start.name, start.client()?, start.series()?, start.delivery());
        spawn(name, self, (client, series), start.queue, delivery)
            .map_err(|message| BuildError::client(name, message))
    }
}
