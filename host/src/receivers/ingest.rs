//! What both OTLP transports do with a request body once it is unwrapped: check it, count it,
//! and hand it to every pipeline that takes its signal — all of them or none.

use std::sync::Arc;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;

use crate::config::{ComponentId, Signal};
use crate::metrics::{Metrics, PerSignal, ReceiverLabels, RefusalLabels};
use crate::otlp::{Batch, Decoded, ExportOutcome, Format};
use crate::pipeline::PipelineInput;

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The body is not a valid request.
    #[error("{0}")]
    Malformed(String),
    /// A pipeline's queue is full (or the host is stopping): retry later.
    #[error("pipeline `{0}` is full; retry later")]
    Busy(ComponentId),
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
}

impl RefusalReason {
    fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Malformed => "malformed",
            RefusalReason::TooLarge => "too_large",
            RefusalReason::Unsupported => "unsupported",
            RefusalReason::Busy => "busy",
        }
    }
}

/// One receiver transport's entry into the pipelines.
#[derive(Debug)]
pub struct Ingest {
    receiver: ComponentId,
    transport: &'static str,
    routes: PerSignal<Vec<PipelineInput>>,
    accepted: PerSignal<Counter>,
    invalid: PerSignal<Counter>,
    metrics: Arc<Metrics>,
}

impl Ingest {
    /// Entry for `receiver`'s `transport` ("grpc" or "http"), feeding `routes` per signal.
    pub fn new(
        receiver: &ComponentId,
        transport: &'static str,
        routes: PerSignal<Vec<PipelineInput>>,
        metrics: Arc<Metrics>,
    ) -> Self {
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
        Self { receiver: receiver.clone(), transport, routes, accepted, invalid, metrics }
    }

    /// The receiver's name.
    pub fn receiver(&self) -> &ComponentId {
        &self.receiver
    }

    /// Whether any pipeline takes `signal` from this receiver.
    pub fn accepts(&self, signal: Signal) -> bool {
        !self.routes.get(signal).is_empty()
    }

    /// Counts a refused request (and its items, when known).
    pub fn refused(&self, signal: Option<Signal>, reason: RefusalReason, items: u64) {
        let labels = RefusalLabels {
            receiver: self.receiver.to_string(),
            transport: self.transport.into(),
            signal: signal.map_or("unknown", Signal::as_str).into(),
            reason: reason.as_str().into(),
        };
        self.metrics.receiver_refused_requests.get_or_create(&labels).inc();
        if items > 0 {
            self.metrics.receiver_refused_items.get_or_create(&labels).inc_by(items);
        }
    }

    /// Checks, counts and enqueues one request body.
    pub fn accept(&self, signal: Signal, format: Format, body: Bytes) -> Result<ExportOutcome, Refusal> {
        let result = self.prepare(signal, format, body).and_then(|(batch, outcome)| {
            self.enqueue(batch)?;
            Ok(outcome)
        });
        if let Err(refusal) = &result {
            let reason = match refusal {
                Refusal::Malformed(_) => RefusalReason::Malformed,
                Refusal::Busy(_) => RefusalReason::Busy,
            };
            self.refused(Some(signal), reason, 0);
        }
        result
    }

    /// Turns a body into a batch of valid items, plus what to tell the client about the rest.
    fn prepare(
        &self,
        signal: Signal,
        format: Format,
        body: Bytes,
    ) -> Result<(Option<Batch>, ExportOutcome), Refusal> {
        let mut decoded = match format {
            Format::Protobuf => {
                let summary = sluice_wire::summarize(signal, &body)
                    .map_err(|e| Refusal::Malformed(format!("invalid protobuf {signal} request: {e}")))?;
                if summary.invalid_items == 0 {
                    // The common case: forward the bytes as they came. They are copied once into
                    // an allocation of their own, because `body` may be a slice of the transport's
                    // much larger read buffer, which a queued batch would otherwise keep alive.
                    let payload = Bytes::copy_from_slice(&body);
                    let batch =
                        (summary.items > 0).then(|| Batch::from_encoded(signal, payload, summary.items));
                    return Ok((batch, ExportOutcome::default()));
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
                    _ => "trace and span IDs must be 16 and 8 bytes when present".into(),
                },
            }
        } else {
            ExportOutcome::default()
        };
        let items = decoded.items();
        Ok(((items > 0).then(|| Batch::from_decoded(decoded, items)), outcome))
    }

    fn enqueue(&self, batch: Option<Batch>) -> Result<(), Refusal> {
        let Some(batch) = batch else { return Ok(()) };
        let signal = batch.signal();
        let routes = self.routes.get(signal);
        // All or nothing: reserve a slot in every pipeline before sending to any, so a refusal
        // never leaves a batch half delivered (which the client's retry would duplicate).
        let mut slots = Vec::with_capacity(routes.len());
        for route in routes {
            match route.try_reserve() {
                Some(slot) => slots.push(slot),
                None => return Err(Refusal::Busy(route.name().clone())),
            }
        }
        let items = batch.items();
        let batch = Arc::new(batch);
        for slot in slots {
            slot.send(batch.clone());
        }
        self.accepted.get(signal).inc_by(items);
        Ok(())
    }
}
