//! `type = "otlp"`: OTLP/gRPC, OTLP/HTTP protobuf and OTLP/HTTP JSON to any destination.
//!
//! Batches from the queue are merged per signal into requests (up to `batch.max_items` /
//! `batch.max_bytes`, or after `batch.timeout`) without decoding: two encoded
//! `Export*ServiceRequest`s back to back are one valid message holding both. Up to
//! `concurrency` requests are in flight; each is retried on retryable answers (gRPC
//! UNAVAILABLE and friends, RESOURCE_EXHAUSTED with RetryInfo; HTTP 429, 502, 503, 504 honouring
//! `Retry-After`) with exponential backoff and jitter, until `retry.max_elapsed`, after which it
//! is dropped with one ERROR line and `sluice_exporter_failed_items_total`. When every sender is
//! busy the queue fills, and then the configured `on_full` policy applies.
//!
//! # Layout
//! - `client`: the hyper client with rustls.
//! - `wire`: request bodies per protocol, and reading answers.

mod client;
mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use http_body_util::{BodyExt, Full};
use prometheus_client::metrics::gauge::Gauge;
use rand::Rng;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use self::wire::Verdict;
use crate::config::{AuthConfig, ComponentId, OtlpExporterConfig, OtlpProtocol, Signal};
use crate::log_throttle::LogThrottle;
use crate::metrics::{DeliveryCounters, PerSignal};
use crate::otlp::Batch;
use crate::secret::Secret;

/// Everything the senders share.
struct Shared {
    name: ComponentId,
    config: OtlpExporterConfig,
    client: client::HttpClient,
    urls: PerSignal<Option<http::Uri>>,
    headers: Vec<(HeaderName, Secret)>,
    auth: Option<(Secret, Option<Secret>)>,
    counters: PerSignal<DeliveryCounters>,
    failure_log: LogThrottle,
    retry_log: LogThrottle,
}

#[derive(Default)]
struct Pending {
    parts: Vec<Bytes>,
    items: u64,
    bytes: usize,
    since: Option<Instant>,
}

impl Pending {
    fn take(&mut self) -> (Bytes, u64) {
        let parts = std::mem::take(&mut self.parts);
        let items = std::mem::take(&mut self.items);
        self.bytes = 0;
        self.since = None;
        let payload = if parts.len() == 1 {
            parts.into_iter().next().expect("one part")
        } else {
            // Concatenated requests are one request holding all their resource groups.
            let mut merged = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
            for part in parts {
                merged.extend_from_slice(&part);
            }
            merged.freeze()
        };
        (payload, items)
    }
}

/// Builds the exporter and starts its batcher. The returned task ends once the queue is closed
/// and drained and every request in flight has finished (delivered or given up).
pub fn spawn(
    name: &ComponentId,
    config: &OtlpExporterConfig,
    rx: mpsc::Receiver<Arc<Batch>>,
    depth: Gauge,
    counters: PerSignal<DeliveryCounters>,
) -> Result<JoinHandle<()>, String> {
    let client = client::build(&config.tls, config.protocol)?;
    let urls = PerSignal::new(|signal| {
        let url = config.url_for(signal)?;
        let url = match config.protocol {
            OtlpProtocol::Grpc => format!("{}{}", url.trim_end_matches('/'), wire::grpc_path(signal)),
            _ => url,
        };
        url.parse::<http::Uri>().ok()
    });
    let headers = config
        .headers
        .iter()
        .map(|(name, value)| {
            let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|e| format!("header `{name}`: {e}"))?;
            Ok((name, Secret::new(value.get_ref().clone())))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let auth = config.auth.as_ref().map(|auth| match auth {
        AuthConfig::Basic { username, password } => {
            (Secret::new(username.get_ref().clone()), Some(Secret::new(password.get_ref().clone())))
        }
        AuthConfig::Bearer { token } => (Secret::new(token.get_ref().clone()), None),
    });
    let shared = Arc::new(Shared {
        name: name.clone(),
        config: config.clone(),
        client,
        urls,
        headers,
        auth,
        counters,
        failure_log: LogThrottle::default(),
        retry_log: LogThrottle::default(),
    });
    Ok(tokio::spawn(batch_and_send(shared, rx, depth)))
}

fn slot(signal: Signal) -> usize {
    match signal {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

async fn batch_and_send(shared: Arc<Shared>, mut rx: mpsc::Receiver<Arc<Batch>>, depth: Gauge) {
    let limits = shared.config.batch.clone();
    let concurrency = shared.config.concurrency.max(1);
    let senders = Arc::new(Semaphore::new(concurrency));
    let mut pending: [Pending; 3] = Default::default();
    loop {
        let oldest = pending.iter().filter_map(|p| p.since).min();
        let deadline =
            oldest.map_or_else(|| Instant::now() + Duration::from_secs(3600), |t| t + limits.timeout.0);
        tokio::select! {
            biased;
            received = rx.recv() => {
                let Some(batch) = received else { break };
                depth.dec();
                let signal = batch.signal();
                let part = &mut pending[slot(signal)];
                let size = batch.payload().len();
                if !part.parts.is_empty()
                    && (part.items + batch.items() > limits.max_items || part.bytes + size > limits.max_bytes.as_usize())
                {
                    send(&shared, &senders, signal, part.take()).await;
                }
                part.parts.push(batch.payload().clone());
                part.items += batch.items();
                part.bytes += size;
                part.since.get_or_insert_with(Instant::now);
                if part.items >= limits.max_items || part.bytes >= limits.max_bytes.as_usize() {
                    send(&shared, &senders, signal, part.take()).await;
                }
            }
            _ = tokio::time::sleep_until(deadline.into()), if oldest.is_some() => {
                let now = Instant::now();
                for signal in Signal::ALL {
                    let part = &mut pending[slot(signal)];
                    if part.since.is_some_and(|since| now >= since + limits.timeout.0) {
                        send(&shared, &senders, signal, part.take()).await;
                    }
                }
            }
        }
    }
    for signal in Signal::ALL {
        let part = &mut pending[slot(signal)];
        if !part.parts.is_empty() {
            send(&shared, &senders, signal, part.take()).await;
        }
    }
    // Wait for every request in flight.
    let _ = senders.acquire_many(concurrency as u32).await;
    tracing::debug!(exporter = %shared.name, "Exporter drained");
}

/// Waits for a free sender, then delivers in the background.
async fn send(
    shared: &Arc<Shared>,
    senders: &Arc<Semaphore>,
    signal: Signal,
    (payload, items): (Bytes, u64),
) {
    let Ok(permit) = senders.clone().acquire_owned().await else { return };
    let shared = shared.clone();
    tokio::spawn(async move {
        shared.deliver(signal, payload, items).await;
        drop(permit);
    });
}

impl Shared {
    fn counters(&self, signal: Signal) -> &DeliveryCounters {
        self.counters.get(signal)
    }

    fn give_up(&self, signal: Signal, items: u64, reason: &str) {
        self.counters(signal).failed.inc_by(items);
        if let Some(suppressed) = self.failure_log.check() {
            tracing::error!(
                exporter = %self.name, %signal, items, similar_failures_not_logged = suppressed,
                "Delivery failed; items dropped: {reason}"
            );
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let retry = &self.config.retry;
        let base = retry.initial_backoff.0.saturating_mul(2u32.saturating_pow(attempt.min(20)));
        let capped = base.min(retry.max_backoff.0);
        // ±50% jitter keeps a fleet of hosts from retrying in lockstep.
        capped.mul_f64(rand::rng().random_range(0.5..1.5))
    }

    async fn deliver(&self, signal: Signal, payload: Bytes, items: u64) {
        let Some(url) = self.urls.get(signal).clone() else {
            self.give_up(signal, items, &format!("no endpoint is configured for {signal}"));
            return;
        };
        let (body, content_type) =
            match wire::body(self.config.protocol, self.config.compression, signal, &payload) {
                Ok(body) => body,
                Err(reason) => return self.give_up(signal, items, &reason),
            };
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let verdict = self.attempt(&url, body.clone(), content_type).await;
            let (reason, after) = match verdict {
                Verdict::Delivered { rejected } => {
                    let rejected = rejected.min(items);
                    self.counters(signal).sent.inc_by(items - rejected);
                    self.counters(signal).rejected.inc_by(rejected);
                    return;
                }
                Verdict::Permanent { reason } => return self.give_up(signal, items, &reason),
                Verdict::Retry { reason, after } => (reason, after),
            };
            let delay = after.unwrap_or_else(|| self.backoff(attempt)).max(self.backoff(attempt) / 4);
            if !self.config.retry.enabled || started.elapsed() + delay > self.config.retry.max_elapsed.0 {
                let reason =
                    format!("{reason} (gave up after {} attempts in {:?})", attempt + 1, started.elapsed());
                return self.give_up(signal, items, &reason);
            }
            self.counters(signal).retried.inc_by(items);
            if let Some(suppressed) = self.retry_log.check() {
                tracing::warn!(
                    exporter = %self.name, %signal, items, retry_in = ?delay, similar_retries_not_logged = suppressed,
                    "Delivery will be retried: {reason}"
                );
            }
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    fn request(
        &self,
        url: &http::Uri,
        body: Bytes,
        content_type: &'static str,
    ) -> Result<http::Request<Full<Bytes>>, String> {
        let mut request =
            http::Request::post(url.clone()).body(Full::new(body)).map_err(|e| e.to_string())?;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("sluice/", env!("CARGO_PKG_VERSION"))));
        let encoding = wire::encoding_name(self.config.compression);
        if self.config.protocol == OtlpProtocol::Grpc {
            headers.insert("te", HeaderValue::from_static("trailers"));
            headers.insert("grpc-accept-encoding", HeaderValue::from_static("gzip,zstd,identity"));
            if let Some(encoding) = encoding {
                headers.insert("grpc-encoding", HeaderValue::from_static(encoding));
            }
        } else if let Some(encoding) = encoding {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding));
        }
        let sensitive = |value: String| -> Result<HeaderValue, String> {
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| "a credential holds characters a header can't".to_string())?;
            value.set_sensitive(true);
            Ok(value)
        };
        for (name, secret) in &self.headers {
            headers.insert(name.clone(), sensitive(secret.value()?)?);
        }
        match &self.auth {
            Some((user, Some(password))) => {
                let pair = format!("{}:{}", user.value()?, password.value()?);
                let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pair);
                headers.insert(AUTHORIZATION, sensitive(format!("Basic {encoded}"))?);
            }
            Some((token, None)) => {
                headers.insert(AUTHORIZATION, sensitive(format!("Bearer {}", token.value()?))?);
            }
            None => {}
        }
        Ok(request)
    }

    async fn attempt(&self, url: &http::Uri, body: Bytes, content_type: &'static str) -> Verdict {
        let request = match self.request(url, body, content_type) {
            Ok(request) => request,
            // A missing secret file may appear (a Kubernetes mount): worth retrying.
            Err(reason) => return Verdict::Retry { reason, after: None },
        };
        let exchange = async {
            let response =
                self.client.request(request).await.map_err(|e| format!("{:#}", anyhow::Error::new(e)))?;
            let (parts, body) = response.into_parts();
            let collected = body.collect().await.map_err(|e| format!("reading the answer: {e}"))?;
            let trailers = collected.trailers().cloned();
            Ok::<_, String>((parts, trailers, collected.to_bytes()))
        };
        match tokio::time::timeout(self.config.timeout.0, exchange).await {
            Err(_) => Verdict::Retry {
                reason: format!("no answer within {:?}", self.config.timeout.0),
                after: None,
            },
            Ok(Err(reason)) => {
                Verdict::Retry { reason: format!("cannot reach {url}: {reason}"), after: None }
            }
            Ok(Ok((parts, trailers, body))) => match self.config.protocol {
                OtlpProtocol::Grpc => {
                    wire::grpc_verdict(parts.status, &parts.headers, trailers.as_ref(), &body)
                }
                OtlpProtocol::HttpProtobuf => wire::http_verdict(parts.status, &parts.headers, &body, false),
                OtlpProtocol::HttpJson => wire::http_verdict(parts.status, &parts.headers, &body, true),
            },
        }
    }
}
