//! The unit of work between stages.

use std::sync::OnceLock;

use bytes::Bytes;

use super::{DecodeError, Decoded};
use crate::config::Signal;

/// One export request on its way through the host: encoded bytes, counted, decoded on demand.
///
/// Batches travel as `Arc<Batch>`, so fanning out to several exporters copies no bytes and a
/// decode done for one exporter serves the others.
#[derive(Debug)]
pub struct Batch {
    signal: Signal,
    payload: Bytes,
    items: u64,
    decoded: OnceLock<Result<Decoded, DecodeError>>,
}

impl Batch {
    /// A batch from an encoded `Export*ServiceRequest` holding `items` items.
    pub fn from_encoded(signal: Signal, payload: Bytes, items: u64) -> Self {
        Self { signal, payload, items, decoded: OnceLock::new() }
    }

    /// A batch whose owned form already exists (it arrived as JSON, say), so nobody decodes again.
    pub fn from_decoded(decoded: Decoded, items: u64) -> Self {
        let payload = Bytes::from(decoded.encode());
        let batch = Self::from_encoded(decoded.signal(), payload, items);
        let _ = batch.decoded.set(Ok(decoded));
        batch
    }

    /// The signal.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// Spans, metric data points or log records in the batch.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// The encoded request.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Whether anything has decoded this batch yet (receivers must not).
    pub fn is_decoded(&self) -> bool {
        self.decoded.get().is_some()
    }

    /// The owned request, decoded on first use and shared afterwards.
    pub fn decoded(&self) -> Result<&Decoded, &DecodeError> {
        self.decoded.get_or_init(|| Decoded::from_protobuf(self.signal, &self.payload)).as_ref()
    }
}
