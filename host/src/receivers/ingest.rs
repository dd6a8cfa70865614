//! What both OTLP transports do with a request body once it is unwrapped: check it, count it,
//! and hand it to every pipeline that takes its signal — all of them or none.

use std::sync::Arc;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;

use crate::batch::{Batch, Compressed, Decoded, ExportOutcome, Format};
use crate::config::{ComponentId, CompressionConfig, Signal};
use crate::log_throttle::LogThrottle;
use crate::memory::MemoryGuard;
use crate::metrics::{Metrics, PerSignal, ReceiverLabels, RefusalLabels};
use crate::pipeline::{Admitted, PipelineInput, Pledge, Receipt};
use crate::queue::Reserved;
use crate::secret::Secret;

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The body is not a valid request.
    #[error("{0}")]
    Malformed(String),
    /// A pipeline's queue is full (or the host is stopping): retry later.
    #[error("pipeline `{0}` is full; retry later")]
    Busy(ComponentId),
    /// The host's memory is near `service.memory_limit`: retry later.
    #[error("the host's memory is near its limit; retry later")]
    Memory,
    /// A disk queue could not store the batch (a disk error): retry later.
    #[error("the batch could not be stored: {0}; retry later")]
    NotStored(String),
}

/// Reasons a request is refused, as the `reason` label of the refusal counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// Not valid protobuf/JSON.
    Malformed,
    /// Larger than the configured limit.
    TooLarge,
    /// Unsupported content type, encoding or method.
    Unsupported,
    /// Backpressure.
    Busy,
    /// Memory near `service.memory_limit`.
    Memory,
    /// Missing or wrong credentials.
    Unauthenticated,
    /// A disk queue could not store the batch.
    NotStored,
}

impl RefusalReason {
    fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Malformed => "malformed",
            RefusalReason::TooLarge => "too_large",
            RefusalReason::Unsupported => "unsupported",
            RefusalReason::Busy => "busy",
            RefusalReason::Memory => "memory",
            RefusalReason::Unauthenticated => "unauthenticated",
            RefusalReason::NotStored => "not_stored",
        }
    }
}

/// `body` in an allocation holding little else: as it is when it already has one (a body
/// gathered from several reads, or decompressed, usually does; an eighth spare is let be), else
/// copied, because a slice of the transport's much larger read buffer would keep that whole
/// buffer alive while queued.
fn own_allocation(body: Bytes) -> Bytes {
    match body.try_into_mut() {
        Ok(own) if own.capacity() - own.len() <= own.len() / 8 => own.freeze(),
        Ok(own) => Bytes::copy_from_slice(&own),
        Err(shared) => Bytes::copy_from_slice(&shared),
    }
}

/// Whether a pipeline in `feeds` taking `signal` sends a client's body compressed `encoding`'s
/// way on as it came.
fn sent_on(feeds: &FeedTable, signal: Signal, encoding: CompressionConfig) -> bool {
    feeds.get(signal).iter().any(|pipeline| pipeline.sends_client_bodies(encoding))
}

/// Per signal, the pipelines a receiver feeds. ("Routes" are a router plugin's answer, inside a
/// pipeline; this is the wiring from receivers to pipelines.)
pub type FeedTable = PerSignal<Vec<PipelineInput>>;

/// A receiver's [`FeedTable`], shared by its transports and swapped as a whole on reload, so
/// every request sees one consistent set.
pub type Feeds = Arc<arc_swap::ArcSwap<FeedTable>>;

/// One receiver transport's entry into the pipelines.
#[derive(Debug)]
pub struct Ingest {
    receiver: ComponentId,
    transport: &'static str,
    feeds: Feeds,
    accepted: PerSignal<Counter>,
    invalid: PerSignal<Counter>,
    /// Backpressure refusals come thousands a second under overload: their counters are
    /// resolved once, not per refusal.
    busy: PerSignal<Counter>,
    metrics: Arc<Metrics>,
    memory: Arc<MemoryGuard>,
    bad_request_log: LogThrottle,
    auth: Option<Arc<Secret>>,
}

/// What every transport of a receiver shares: the pipelines it feeds, the host's metrics and
/// memory bound, and its credential.
#[derive(Debug, Clone)]
pub struct IngestContext {
    /// The pipelines it feeds, per signal.
    pub feeds: Feeds,
    /// The host's metrics.
    pub metrics: Arc<Metrics>,
    /// The host's memory bound.
    pub memory: Arc<MemoryGuard>,
    /// The bearer token clients must present, if any.
    pub auth: Option<Arc<Secret>>,
}

impl Ingest {
    /// Entry for `receiver`'s `transport` ("grpc" or "http").
    pub fn new(receiver: &ComponentId, transport: &'static str, context: IngestContext) -> Self {
        let IngestContext { feeds, metrics, memory, auth } = context;
        let labels = |signal: Signal| ReceiverLabels {
            receiver: receiver.to_string(),
            transport: transport.into(),
            signal: signal.as_str().into(),
        };
        let accepted = PerSignal::new(|s| metrics.receiver_accepted_items.get_or_create(&labels(s)).clone());
        let invalid = PerSignal::new(|s| {
            let labels = RefusalLabels {
                receiver: receiver.to_string(),
                transport: transport.into(),
                signal: s.as_str().into(),
                reason: "invalid_item".into(),
            };
            metrics.receiver_refused_items.get_or_create(&labels).clone()
        });
        let busy = PerSignal::new(|s| {
            let labels = RefusalLabels {
                receiver: receiver.to_string(),
                transport: transport.into(),
                signal: s.as_str().into(),
                reason: RefusalReason::Busy.as_str().into(),
            };
            metrics.receiver_refused_requests.get_or_create(&labels).clone()
        });
        Self {
            receiver: receiver.clone(),
            transport,
            feeds,
            accepted,
            invalid,
            busy,
            metrics,
            memory,
            bad_request_log: LogThrottle::default(),
            auth,
        }
    }

    /// The receiver's name.
    pub fn receiver(&self) -> &ComponentId {
        &self.receiver
    }

    /// Checks `Authorization: Bearer <token>` when the receiver requires a token. The error is
    /// what the client is told; neither the expected nor the offered token is ever logged.
    pub fn authorize(&self, headers: &http::HeaderMap) -> Result<(), &'static str> {
        let Some(expected) = &self.auth else { return Ok(()) };
        match crate::secret::check_bearer(expected, headers) {
            Ok(()) => Ok(()),
            Err(crate::secret::BearerRefusal::Unreadable) => {
                tracing::error!(receiver = %self.receiver, "The receiver's bearer token cannot be read; refusing requests");
                Err("the receiver cannot check credentials right now")
            }
            Err(refusal) => Err(refusal.as_str()),
        }
    }

    /// Whether new data is refused for memory right now: checked before a body is read, so a
    /// host near its limit doesn't read large bodies only to refuse them.
    pub fn memory_refusing(&self) -> bool {
        self.memory.refusing()
    }

    /// Refuses (and counts) a request for `signal` before its body is read when a pipeline it
    /// would enter is full: under backpressure most requests are refused, and reading,
    /// decompressing and checking each only to refuse it would take the time the queues need to
    /// drain. A request let through may still be refused when its slots are reserved.
    pub fn refuse_if_full(&self, signal: Signal) -> Result<(), Refusal> {
        let feeds = self.feeds.load();
        match feeds.get(signal).iter().find(|pipeline| pipeline.is_full()) {
            Some(full) => {
                let refusal = Refusal::Busy(full.name().clone());
                self.reject(Some(signal), RefusalReason::Busy, &refusal.to_string());
                Err(refusal)
            }
            None => Ok(()),
        }
    }

    /// Whether any pipeline takes `signal` from this receiver.
    pub fn accepts(&self, signal: Signal) -> bool {
        !self.feeds.load().get(signal).is_empty()
    }

    /// Counts a refused request and logs why — at most once per interval, since the client is
    /// told in its answer and the refusal counters count every one. Backpressure is not logged:
    /// it is the system working, and `sluice_queue_depth` shows it; nor is each memory refusal.
    pub fn reject(&self, signal: Option<Signal>, reason: RefusalReason, problem: &str) {
        if let (Some(signal), RefusalReason::Busy) = (signal, reason) {
            self.busy.get(signal).inc();
            return;
        }
        let labels = RefusalLabels {
            receiver: self.receiver.to_string(),
            transport: self.transport.into(),
            signal: signal.map_or("unknown", Signal::as_str).into(),
            reason: reason.as_str().into(),
        };
        self.metrics.receiver_refused_requests.get_or_create(&labels).inc();
        // Memory refusals are logged when refusing starts and stops (see `memory`).
        if !matches!(reason, RefusalReason::Busy | RefusalReason::Memory)
            && let Some(suppressed) = self.bad_request_log.check()
        {
            tracing::warn!(
                receiver = %self.receiver, transport = self.transport, signal = %labels.signal,
                reason = reason.as_str(), similar_requests_not_logged = suppressed, "Refused a request: {problem}"
            );
        }
    }

    /// Whether a pipeline taking `signal` has an exporter that sends a client's body on as it
    /// came, compressed `encoding`'s way (`None`: not compressed): only then is it worth keeping
    /// (and mapping).
    pub fn keeps_client_bodies(&self, signal: Signal, encoding: Option<CompressionConfig>) -> bool {
        encoding.is_some_and(|encoding| sent_on(&self.feeds.load(), signal, encoding))
    }

    /// Checks, counts and enqueues one request body (`sent`: the body as the client compressed
    /// it, if it did). When a pipeline it enters writes to a disk queue, returns only once the
    /// batch is stored there (or couldn't be).
    pub async fn accept(
        &self,
        signal: Signal,
        format: Format,
        body: Bytes,
        sent: Option<Compressed>,
    ) -> Result<ExportOutcome, Refusal> {
        let result = match self.enqueue(signal, format, body, sent) {
            Ok((outcome, items, Some(receipt))) => match receipt.await {
                Ok(Ok(())) => Ok((outcome, items)),
                Ok(Err(reason)) => Err(Refusal::NotStored(reason)),
                Err(_) => Err(Refusal::NotStored("the pipeline stopped".into())),
            },
            Ok((outcome, items, None)) => Ok((outcome, items)),
            Err(refusal) => Err(refusal),
        };
        match result {
            Ok((outcome, items)) => {
                self.accepted.get(signal).inc_by(items);
                Ok(outcome)
            }
            Err(refusal) => {
                let reason = match refusal {
                    Refusal::Malformed(_) => RefusalReason::Malformed,
                    Refusal::Busy(_) => RefusalReason::Busy,
                    Refusal::Memory => RefusalReason::Memory,
                    Refusal::NotStored(_) => RefusalReason::NotStored,
                };
                self.reject(Some(signal), reason, &refusal.to_string());
                Err(refusal)
            }
        }
    }

    /// Checks one request body and queues its batch in every pipeline that takes `signal`;
    /// returns what to tell the client, the items queued, and the receipt to wait for when a
    /// pipeline writes to a disk queue.
    fn enqueue(
        &self,
        signal: Signal,
        format: Format,
        body: Bytes,
        sent: Option<Compressed>,
    ) -> Result<(ExportOutcome, u64, Option<Receipt>), Refusal> {
        // Reserve first: when a pipeline is full, refusing costs nothing but this check, which
        // matters most exactly then (clients retrying against a saturated host).
        let feeds = self.feeds.load_full();
        // The client's compressed body is kept only where an exporter will send it on.
        let sent = sent.filter(|sent| sent_on(&feeds, signal, sent.encoding()));
        if !self.memory.admit(body.len() + sent.as_ref().map_or(0, |sent| sent.body().len())) {
            return Err(Refusal::Memory);
        }
        let slots = Self::reserve(&feeds, signal)?;
        let (batch, outcome) = self.prepare(signal, format, body, sent)?;
        let Some(batch) = batch else { return Ok((outcome, 0, None)) };
        let items = batch.items();
        let batch = Arc::new(batch);
        let (pledge, receipt) = if slots.iter().any(|(durable, _)| *durable) {
            let (pledge, receipt) = Pledge::new();
            (Some(pledge), Some(receipt))
        } else {
            (None, None)
        };
        for (durable, slot) in slots {
            let pledge = pledge.as_ref().filter(|_| durable).cloned();
            slot.send(Admitted { batch: batch.clone(), pledge });
        }
        Ok((outcome, items, receipt))
    }

    /// Turns a body into a batch of valid items, plus what to tell the client about the rest.
    fn prepare(
        &self,
        signal: Signal,
        format: Format,
        body: Bytes,
        sent: Option<Compressed>,
    ) -> Result<(Option<Batch>, ExportOutcome), Refusal> {
        let mut decoded = match format {
            Format::Protobuf => {
                let summary = sluice_wire::summarize(signal, &body)
                    .map_err(|e| Refusal::Malformed(format!("invalid protobuf {signal} request: {e}")))?;
                if summary.invalid_items == 0 {
                    // The common case: forward the bytes as they came, and the client's compressed
                    // body with them, for exporters that can send it on as it is.
                    if summary.items == 0 {
                        return Ok((None, ExportOutcome::default()));
                    }
                    let mut batch = Batch::from_encoded(signal, own_allocation(body), summary.items);
                    if let Some(sent) = sent {
                        batch = batch.with_compressed(sent.map_body(own_allocation));
                    }
                    return Ok((Some(batch), ExportOutcome::default()));
                }
                // Rare: some items must go. Decode once, drop them, re-encode.
                Decoded::from_protobuf(signal, &body).map_err(|e| Refusal::Malformed(e.to_string()))?
            }
            Format::Json => {
                Decoded::from_json(signal, &body).map_err(|e| Refusal::Malformed(e.to_string()))?
            }
        };
        let rejected = decoded.remove_invalid_items();
        let outcome = if rejected > 0 {
            self.invalid.get(signal).inc_by(rejected);
            ExportOutcome {
                rejected,
                message: match signal {
                    Signal::Traces => "spans need a 16-byte trace ID and an 8-byte span ID".into(),
                    Signal::Logs => "trace and span IDs must be 16 and 8 bytes when present".into(),
                    Signal::Metrics => "number data points need a value; histogram bucket counts must number one more than the bounds".into(),
                },
            }
        } else {
            ExportOutcome::default()
        };
        let items = decoded.items();
        Ok(((items > 0).then(|| Batch::from_decoded(decoded, items)), outcome))
    }

    /// Reserves a slot in every pipeline that takes `signal`: all or nothing, so a refusal never
    /// leaves a batch half delivered (which the client's retry would duplicate).
    fn reserve(
        feeds: &PerSignal<Vec<PipelineInput>>,
        signal: Signal,
    ) -> Result<Vec<(bool, Reserved<'_, Admitted>)>, Refusal> {
        let feeds = feeds.get(signal);
        let mut slots = Vec::with_capacity(feeds.len());
        for route in feeds {
            match route.try_reserve() {
                Some(slot) => slots.push((route.durable(), slot)),
                None => return Err(Refusal::Busy(route.name().clone())),
            }
        }
        Ok(slots)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    use super::*;
    use crate::pipeline;

    fn request(trace_id_lengths: &[usize]) -> Vec<u8> {
        let spans = trace_id_lengths
            .iter()
            .map(|&len| Span { trace_id: vec![7; len], span_id: vec![1; 8], ..Default::default() })
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn ingest(queues: usize, size: usize) -> (Ingest, Vec<crate::queue::Receiver<Admitted>>) {
        ingest_to(&vec![false; queues], size)
    }

    /// An ingest feeding one pipeline per entry of `durable` (whether it writes to disk).
    fn ingest_to(durable: &[bool], size: usize) -> (Ingest, Vec<crate::queue::Receiver<Admitted>>) {
        let metrics = Arc::new(Metrics::new());
        let (inputs, receivers): (Vec<_>, Vec<_>) = durable
            .iter()
            .enumerate()
            .map(|(i, &durable)| {
                pipeline::queue(ComponentId::new(&format!("p{i}")).expect("id"), size, durable, &metrics)
            })
            .unzip();
        (feeding(inputs, metrics), receivers)
    }

    /// An ingest feeding `inputs` with every signal.
    fn feeding(inputs: Vec<pipeline::PipelineInput>, metrics: Arc<Metrics>) -> Ingest {
        let feeds = Arc::new(arc_swap::ArcSwap::from_pointee(PerSignal::new(|_| inputs.clone())));
        let memory = MemoryGuard::new(None, &metrics);
        let context = IngestContext { feeds, metrics, memory, auth: None };
        Ingest::new(&ComponentId::new("otlp").expect("id"), "http", context)
    }

    #[tokio::test]
    async fn valid_protobuf_is_forwarded_without_decoding() {
        let (ingest, mut queues) = ingest(1, 4);
        let body = Bytes::from(request(&[16, 16, 16]));
        let outcome =
            ingest.accept(Signal::Traces, Format::Protobuf, body.clone(), None).await.expect("accepted");
        assert_eq!(outcome, ExportOutcome::default());
        let Admitted { batch, pledge } = queues[0].try_recv().expect("queued");
        assert!(pledge.is_none(), "nobody waits on a pipeline without a disk queue");
        assert_eq!(batch.items(), 3);
        assert!(!batch.is_decoded(), "the receive path must not decode");
        assert_eq!(batch.payload(), &body);
    }

    /// A client's gzip body rides along only to pipelines with an exporter that sends it on
    /// as it came; elsewhere it would be held for nothing.
    #[tokio::test]
    async fn a_compressed_body_is_kept_only_where_an_exporter_sends_it_on() {
        use crate::config::CompressionConfig::{Gzip, Zstd};
        let body = Bytes::from(request(&[16]));
        let gzip = Bytes::from(crate::gzip::zlib(&body).expect("in memory"));
        let sent = || {
            let member = crate::gzip::splice::MemberMap::known(None);
            Some(Compressed::new(Gzip, gzip.clone(), member))
        };
        for (takes, kept) in [(vec![Gzip], true), (vec![Zstd], false), (vec![], false)] {
            let metrics = Arc::new(Metrics::new());
            let (input, mut queue) = pipeline::queue(ComponentId::new("p").expect("id"), 4, false, &metrics);
            let ingest = feeding(vec![input.sending_client_bodies(takes.clone())], metrics);
            assert_eq!(
                ingest.keeps_client_bodies(Signal::Traces, Some(Gzip)),
                kept,
                "pipeline sending {takes:?}"
            );
            assert!(!ingest.keeps_client_bodies(Signal::Traces, None), "nothing to keep uncompressed");
            ingest.accept(Signal::Traces, Format::Protobuf, body.clone(), sent()).await.expect("accepted");
            let batch = queue.try_recv().expect("queued").batch;
            assert_eq!(
                batch.compressed_as(Gzip).map(Compressed::body),
                kept.then_some(&gzip),
                "pipeline sending {takes:?}"
            );
        }
    }

    /// A body in an allocation of its own is queued without a copy; one sharing a larger
    /// buffer (a transport's read buffer) is copied out of it.
    #[test]
    fn a_body_is_queued_in_an_allocation_of_its_own() {
        let own = Bytes::from(request(&[16]));
        let at = own.as_ptr();
        assert_eq!(own_allocation(own).as_ptr(), at, "not copied");
        // Decompressed into room the gzip trailer sized, a byte to spare: not copied either.
        let mut decompressed = Vec::with_capacity(request(&[16]).len() + 1);
        decompressed.extend_from_slice(&request(&[16]));
        let decompressed = Bytes::from(decompressed);
        let at = decompressed.as_ptr();
        assert_eq!(own_allocation(decompressed).as_ptr(), at, "not copied");
        let mut read_buffer = bytes::BytesMut::with_capacity(1 << 20);
        read_buffer.extend_from_slice(&request(&[16]));
        let body = read_buffer.split().freeze();
        let at = body.as_ptr();
        let queued = own_allocation(body);
        assert_ne!(queued.as_ptr(), at, "copied out of the shared buffer");
        assert_eq!(&queued[..], &request(&[16])[..]);
        drop(read_buffer);
    }

    #[tokio::test]
    async fn invalid_items_are_removed_and_reported() {
        let (ingest, mut queues) = ingest(1, 4);
        let outcome = ingest
            .accept(Signal::Traces, Format::Protobuf, request(&[16, 3, 16]).into(), None)
            .await
            .expect("ok");
        assert_eq!(outcome.rejected, 1);
        let batch = queues[0].try_recv().expect("queued").batch;
        assert_eq!(batch.items(), 2);
        assert_eq!(sluice_wire::summarize(Signal::Traces, batch.payload()).expect("valid").invalid_items, 0);
    }

    /// Points no exporter could represent — a number without a value, a histogram whose counts
    /// don't fit its bounds — are refused at the door through partial success, as bad spans are.
    #[tokio::test]
    async fn data_points_without_a_faithful_form_are_rejected_at_the_door() {
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        use opentelemetry_proto::tonic::metrics::v1::{
            Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
            metric, number_data_point,
        };
        let number = |value: Option<f64>| NumberDataPoint {
            value: value.map(number_data_point::Value::AsDouble),
            ..Default::default()
        };
        let histogram = |counts: usize, bounds: usize| HistogramDataPoint {
            bucket_counts: vec![1; counts],
            explicit_bounds: (0..bounds).map(|b| b as f64).collect(),
            ..Default::default()
        };
        let metrics = vec![
            Metric {
                data: Some(metric::Data::Gauge(Gauge { data_points: vec![number(Some(1.0)), number(None)] })),
                ..Default::default()
            },
            Metric {
                data: Some(metric::Data::Histogram(Histogram {
                    data_points: vec![histogram(3, 2), histogram(0, 2), histogram(2, 2)],
                    aggregation_temporality: 2,
                })),
                ..Default::default()
            },
        ];
        let scope_metrics = vec![ScopeMetrics { metrics, ..Default::default() }];
        let resource_metrics = vec![ResourceMetrics { scope_metrics, ..Default::default() }];
        let body = ExportMetricsServiceRequest { resource_metrics }.encode_to_vec();
        assert_eq!(sluice_wire::summarize(Signal::Metrics, &body).expect("valid").invalid_items, 2);

        let (ingest, mut queues) = ingest(1, 4);
        let outcome = ingest.accept(Signal::Metrics, Format::Protobuf, body.into(), None).await.expect("ok");
        assert_eq!(outcome.rejected, 2);
        let batch = queues[0].try_recv().expect("queued").batch;
        assert_eq!(batch.items(), 3);
        let summary = sluice_wire::summarize(Signal::Metrics, batch.payload()).expect("valid");
        assert_eq!((summary.items, summary.invalid_items), (3, 0));
    }

    #[tokio::test]
    async fn a_full_pipeline_refuses_without_delivering_to_any() {
        let (ingest, mut queues) = ingest(2, 1);
        // Fill the second pipeline only.
        let blocker = Arc::new(Batch::from_encoded(Signal::Traces, Bytes::from(request(&[16])), 1));
        let blocker = Admitted { batch: blocker, pledge: None };
        assert!(ingest.refuse_if_full(Signal::Traces).is_ok(), "room everywhere");
        ingest.feeds.load().get(Signal::Traces)[1].try_reserve().expect("free").send(blocker);
        // Refused before its body is read, and again if it got past that look.
        assert!(
            matches!(ingest.refuse_if_full(Signal::Traces), Err(Refusal::Busy(name)) if name.as_str() == "p1")
        );
        let refused = ingest.accept(Signal::Traces, Format::Protobuf, request(&[16]).into(), None).await;
        assert!(matches!(refused, Err(Refusal::Busy(name)) if name.as_str() == "p1"));
        assert!(queues[0].try_recv().is_err(), "nothing may reach the first pipeline either");
    }

    #[tokio::test]
    async fn garbage_is_malformed() {
        let (ingest, _queues) = ingest(1, 1);
        let refused =
            ingest.accept(Signal::Logs, Format::Protobuf, Bytes::from_static(b"\xff\xff"), None).await;
        assert!(matches!(refused, Err(Refusal::Malformed(_))));
        let refused = ingest.accept(Signal::Logs, Format::Json, Bytes::from_static(b"{"), None).await;
        assert!(matches!(refused, Err(Refusal::Malformed(_))));
    }

    /// A client is answered only once every pipeline writing to a disk queue has stored the
    /// batch, and told to retry when one could not.
    #[tokio::test]
    async fn a_durable_pipeline_answers_once_the_batch_is_stored() {
        let (ingest, mut queues) = ingest_to(&[true, false], 4);
        let ingest = Arc::new(ingest);
        let send = |ingest: &Arc<Ingest>| {
            let ingest = ingest.clone();
            tokio::spawn(async move {
                ingest.accept(Signal::Traces, Format::Protobuf, request(&[16]).into(), None).await
            })
        };
        let accepting = send(&ingest);
        let stored = loop {
            match queues[0].try_recv() {
                Ok(admitted) => break admitted,
                Err(_) => tokio::task::yield_now().await,
            }
        };
        let plain = queues[1].try_recv().expect("queued");
        assert!(plain.pledge.is_none(), "only the durable pipeline holds the pledge");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!accepting.is_finished(), "no answer before the batch is stored");
        drop(stored);
        assert!(accepting.await.expect("runs").is_ok());

        let refusing = send(&ingest);
        let unstored = loop {
            match queues[0].try_recv() {
                Ok(admitted) => break admitted,
                Err(_) => tokio::task::yield_now().await,
            }
        };
        unstored.pledge.as_ref().expect("a pledge").break_with("disk full".into());
        drop(unstored);
        let refused = refusing.await.expect("runs");
        assert!(matches!(&refused, Err(Refusal::NotStored(reason)) if reason == "disk full"), "{refused:?}");
    }
}
