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

mod wire;

pub mod config;

use super::BuildError;
use super::registry::{ExporterType, SharedKeys, Start};
use crate::config::ClientConfig;
use crate::config::Problem;
use serde_spanned::Spanned;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use super::http::delivery::{Delivery, Judge, Outgoing, Settings, Undelivered};
use crate::batch::{Batch, Compressed, JsonRenderer};
use crate::config::{BatchConfig, ComponentId, CompressionConfig, OtlpExporterConfig, OtlpProtocol, Signal};
use crate::metrics::{DeliveryCounters, PerSignal};
use crate::queue;

/// Everything the senders share.
struct Shared {
    config: OtlpExporterConfig,
    urls: PerSignal<Option<http::Uri>>,
    delivery: Delivery,
    handback: Option<Handback>,
    /// Renders `http/json` bodies.
    json: JsonRenderer,
}

/// How a load-balancing exporter's backend gives work back once it has left the resolver's
/// answer: a request that then fails in a retryable way is not retried but handed back, to be
/// routed to its keys' new owners.
#[derive(Debug)]
pub struct Handback {
    /// Becomes `true` when the backend leaves.
    pub retired: watch::Receiver<bool>,
    /// Where its batches go back.
    pub to: mpsc::UnboundedSender<Arc<Batch>>,
}

/// Batches merged into the next request of one signal.
#[derive(Default)]
struct Pending {
    parts: Vec<Bytes>,
    /// The clients' gzip bodies of the batches in `parts`, while every one came as such a body
    /// (and this exporter sends gzip); `None` from the first that did not. Their maps for
    /// joining are found only when the request is built, on its sending task.
    gzipped: Option<Vec<Compressed>>,
    /// Batches kept until the request's outcome is known: those read from a disk queue (each
    /// settles its record when dropped), and with a [`Handback`] all of them (to give back).
    /// Others are not kept: a batch another exporter decoded would hold its decoded form for as
    /// long as this request is retried.
    kept: Vec<Arc<Batch>>,
    items: u64,
    bytes: usize,
    since: Option<Instant>,
}

/// One request: its body, its items, and the batches kept for it (see [`Pending::kept`]).
struct Request {
    body: Body,
    items: u64,
    kept: Vec<Arc<Batch>>,
}

/// What a request sends.
enum Body {
    /// Encoded requests that, concatenated, are this one (it holds all their resource groups),
    /// to compress as configured.
    Parts(Vec<Bytes>),
    /// One batch's body as its client compressed it, the way this exporter compresses: sent on
    /// untouched.
    Compressed(Bytes),
    /// Several batches' bodies as their clients gzipped them, joined into one gzip member
    /// without compressing again ([`crate::gzip::splice`]); `parts`, their payloads, are
    /// compressed as one instead if a body turns out to have no map.
    Joined { bodies: Vec<Compressed>, parts: Vec<Bytes> },
}

impl Pending {
    fn take(&mut self) -> Request {
        let parts = std::mem::take(&mut self.parts);
        let kept = std::mem::take(&mut self.kept);
        let items = std::mem::take(&mut self.items);
        self.bytes = 0;
        self.since = None;
        let body = match self.gzipped.take() {
            // One body alone needs no joining: it goes as its client sent it.
            Some(bodies) if bodies.len() == parts.len() && parts.len() == 1 => {
                Body::Compressed(bodies[0].body().clone())
            }
            Some(bodies) if bodies.len() == parts.len() => Body::Joined { bodies, parts },
            _ => Body::Parts(parts),
        };
        Request { body, items, kept }
    }

    /// Adds `batch`'s payload (and, while every batch so far had one, its client's gzip body).
    fn push(&mut self, batch: &Batch, gzipped: Option<&Compressed>) {
        if self.parts.is_empty() {
            self.gzipped = Some(Vec::new());
        }
        match (&mut self.gzipped, gzipped) {
            (Some(bodies), Some(body)) => bodies.push(body.clone()),
            (gzipped, _) => *gzipped = None,
        }
        self.parts.push(batch.payload().clone());
        self.items += batch.items();
        self.bytes += batch.payload().len();
    }
}

/// Builds the exporter and starts its batcher. The returned task ends once the queue is closed
/// and drained and every request in flight has finished (delivered, given up or handed back).
pub fn spawn(
    name: &ComponentId,
    config: &OtlpExporterConfig,
    client: &ClientConfig,
    rx: queue::Receiver,
    counters: PerSignal<DeliveryCounters>,
    handback: Option<Handback>,
) -> Result<JoinHandle<()>, String> {
    let urls = PerSignal::new(|signal| {
        let url = config.url_for(signal)?;
        let url = match config.protocol {
            OtlpProtocol::Grpc => format!("{}{}", url.trim_end_matches('/'), wire::grpc_path(signal)),
            _ => url,
        };
        url.parse::<http::Uri>().ok()
    });
    let delivery = Delivery::new(Settings {
        name,
        client,
        http2_only: config.protocol == OtlpProtocol::Grpc,
        counters,
    })?;
    let shared =
        Arc::new(Shared { config: config.clone(), urls, delivery, handback, json: JsonRenderer::default() });
    Ok(tokio::spawn(batch_and_send(shared, rx)))
}

/// Merges queued batches into requests; items settle (through delivery) once each request's
/// outcome is known.
async fn batch_and_send(shared: Arc<Shared>, mut rx: queue::Receiver) {
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
                let signal = batch.signal();
                let idle = pending[signal.index()].parts.is_empty() && senders.available_permits() > 0;
                if let Some(body) = shared.sent_as_is(&batch).filter(|_| idle) {
                    // The client sized and compressed it, nothing waits to be merged with it and
                    // a sender is free: it goes on alone, as it came, not compressed again. When
                    // requests queue for senders, batches are merged instead (fewer, larger
                    // requests keep a slow destination up), and compressed once.
                    let kept = if shared.keeps(&batch) { vec![batch.clone()] } else { Vec::new() };
                    let request = Request { body: Body::Compressed(body.clone()), items: batch.items(), kept };
                    send(&shared, &senders, signal, request).await;
                    continue;
                }
                let part = &mut pending[signal.index()];
                let size = batch.payload().len();
                if !part.parts.is_empty() && !limits.holds(part.items + batch.items(), part.bytes + size) {
                    send(&shared, &senders, signal, part.take()).await;
                }
                part.push(&batch, shared.joinable(&batch));
                if shared.keeps(&batch) {
                    part.kept.push(batch);
                }
                part.since.get_or_insert_with(Instant::now);
                if part.items >= limits.max_items || part.bytes >= limits.max_bytes.as_usize() {
                    send(&shared, &senders, signal, part.take()).await;
                }
            }
            _ = tokio::time::sleep_until(deadline.into()), if oldest.is_some() => {
                let now = Instant::now();
                for signal in Signal::ALL {
                    let part = &mut pending[signal.index()];
                    if part.since.is_some_and(|since| now >= since + limits.timeout.0) {
                        send(&shared, &senders, signal, part.take()).await;
                    }
                }
            }
        }
    }
    for signal in Signal::ALL {
        let part = &mut pending[signal.index()];
        if !part.parts.is_empty() {
            send(&shared, &senders, signal, part.take()).await;
        }
    }
    // Wait for every request in flight.
    let _ = senders.acquire_many(concurrency as u32).await;
    tracing::debug!(exporter = %shared.delivery.name(), "Exporter drained");
}

/// Waits for a free sender, then delivers in the background.
async fn send(shared: &Arc<Shared>, senders: &Arc<Semaphore>, signal: Signal, request: Request) {
    let Ok(permit) = senders.clone().acquire_owned().await else { return };
    let shared = shared.clone();
    tokio::spawn(async move {
        shared.deliver(signal, request).await;
        drop(permit);
    });
}

impl Shared {
    /// The client's compressed body of `batch`, when this exporter would compress the batch
    /// the same way and sends protobuf. Never for a batch read from a disk queue: those are
    /// merged up to `batch`'s sizes (their gzip bodies joined, nothing compressed again), as they
    /// always were — a queue's records are many small requests for a destination where fewer,
    /// larger ones matter (sent one by one, `forward.toml`'s bench host did 28% fewer spans per
    /// CPU-second, most of it in the extra HTTP requests).
    fn sent_as_is<'b>(&self, batch: &'b Batch) -> Option<&'b Bytes> {
        if batch.is_claimed() {
            return None;
        }
        batch.compressed_as(self.config.sends_client_bodies()?).map(Compressed::body)
    }

    /// The client's gzip body of `batch`, when this exporter sends gzip protobuf: merged with
    /// others of its kind, it is joined rather than compressed again.
    fn joinable<'b>(&self, batch: &'b Batch) -> Option<&'b Compressed> {
        batch
            .compressed_as(self.config.sends_client_bodies()?)
            .filter(|c| c.encoding() == CompressionConfig::Gzip)
    }

    /// Whether a request keeps `batch` until its outcome is known (see [`Pending::kept`]).
    fn keeps(&self, batch: &Batch) -> bool {
        batch.is_claimed() || self.handback.is_some()
    }

    /// Delivers `request` and counts the outcome; its kept batches are settled (dropped) only
    /// then, or handed back.
    async fn deliver(&self, signal: Signal, request: Request) {
        let Request { body, items, kept } = request;
        // The parts the body is built from go once it is: only the built body waits out retries.
        let Some((url, body, fixed, judge)) = self.prepare(signal, body, items) else { return };
        let Some(handback) = &self.handback else {
            return self.delivery.deliver(signal, items, &url, body, &fixed, judge).await;
        };
        let mut retired = handback.retired.clone();
        let stop = async move {
            // An error means the balancer is gone, and with it any reason to stop.
            if retired.wait_for(|retired| *retired).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let outgoing = Outgoing { method: &http::Method::POST, url: &url, headers: &fixed, body };
        match self.delivery.send_until(signal, items, outgoing, judge, stop).await {
            Ok(rejected) => self.delivery.delivered(signal, items, rejected),
            Err(Undelivered::Failed(reason)) => self.delivery.give_up(signal, items, &reason),
            Err(Undelivered::Stopped(reason)) => {
                tracing::info!(
                    exporter = %self.delivery.name(), %signal, items,
                    "Backend left the resolver's answer and failed ({reason}); its items are routed again"
                );
                self.delivery.settled(signal, items);
                for batch in kept {
                    // Closed only when the balancer is gone: then nobody is left to route them.
                    let _ = handback.to.send(batch);
                }
            }
        }
    }

    /// The URL, body, headers and judge of a request; `None` (counted as lost) when it can't be
    /// built.
    fn prepare(
        &self,
        signal: Signal,
        body: Body,
        items: u64,
    ) -> Option<(http::Uri, Bytes, HeaderMap, Judge)> {
        let Some(url) = self.urls.get(signal).clone() else {
            let reason = format!("no endpoint is configured for {signal}");
            self.delivery.give_up(signal, items, &reason);
            return None;
        };
        let built = match &body {
            Body::Parts(parts) => {
                wire::body(self.config.protocol, self.config.compression, signal, parts, &self.json)
            }
            Body::Compressed(body) => wire::compressed_body(self.config.protocol, body),
            Body::Joined { bodies, parts } => {
                // Maps deferred at receipt are found here, on the sending task, by inflating
                // each body once more; the batcher's task never waits for that.
                let members: Option<Vec<_>> =
                    bodies.iter().map(|b| Some((b.body(), b.gzip_member()?))).collect();
                match members {
                    Some(members) => wire::joined_body(self.config.protocol, &members),
                    // A body of several members has no map: the payloads are compressed as one.
                    None => {
                        wire::body(self.config.protocol, self.config.compression, signal, parts, &self.json)
                    }
                }
            }
        };
        let (body, content_type) = match built {
            Ok(body) => body,
            Err(reason) => {
                self.delivery.give_up(signal, items, &reason);
                return None;
            }
        };
        let mut fixed = HeaderMap::new();
        fixed.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        let encoding = wire::encoding_name(self.config.compression);
        if self.config.protocol == OtlpProtocol::Grpc {
            fixed.insert("te", HeaderValue::from_static("trailers"));
            fixed.insert("grpc-accept-encoding", HeaderValue::from_static("gzip,zstd,identity"));
            if let Some(encoding) = encoding {
                fixed.insert("grpc-encoding", HeaderValue::from_static(encoding));
            }
        } else if let Some(encoding) = encoding {
            fixed.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding));
        }
        let judge: Judge = match self.config.protocol {
            OtlpProtocol::Grpc => wire::grpc_verdict,
            OtlpProtocol::HttpProtobuf => |s, h, _, b| wire::http_verdict(s, h, b, false),
            OtlpProtocol::HttpJson => |s, h, _, b| wire::http_verdict(s, h, b, true),
        };
        Some((url, body, fixed, judge))
    }
}

impl ExporterType for OtlpExporterConfig {
    const SHARED: &'static [SharedKeys] = &[SharedKeys::Client];

    fn endpoints(&self) -> Vec<&Spanned<String>> {
        [&self.endpoint, &self.traces_endpoint, &self.metrics_endpoint, &self.logs_endpoint]
            .into_iter()
            .flatten()
            .collect()
    }

    fn sends_client_bodies(&self) -> Option<CompressionConfig> {
        let protobuf = self.protocol != OtlpProtocol::HttpJson;
        (protobuf && self.compression != CompressionConfig::None).then_some(self.compression)
    }

    fn merges_up_to(&self) -> Option<&BatchConfig> {
        Some(&self.batch)
    }

    fn check(&self) -> Vec<Problem> {
        if self.concurrency == 0 || self.batch.max_items == 0 {
            return vec![(None, "`concurrency` and `batch.max_items` must be at least 1".into())];
        }
        Vec::new()
    }

    async fn start(&self, start: Start<'_>) -> Result<JoinHandle<()>, BuildError> {
        let (name, client, delivery) = (start.name, start.client()?, start.delivery());
        spawn(name, self, client, start.queue, delivery, None)
            .map_err(|message| BuildError::client(name, message))
    }
}
