//! The unit of work between stages.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::{DecodeError, Decoded};
use crate::config::{CompressionConfig, Signal};

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
    /// The disk queue record this batch was read from, settled when the batch is dropped.
    claim: Option<crate::disk_queue::Claim>,
    /// The body as the client compressed it, when `payload` is exactly what it decompresses to.
    /// Boxed: most batches have none, and the others pay one allocation to keep every batch
    /// small.
    compressed: Option<Box<Compressed>>,
    /// The claimed batch this one was split from, kept alive (and its record unsettled) until
    /// every part is dropped.
    whole: Option<Arc<Batch>>,
}

/// A request body as its client compressed it. An exporter that compresses the same way sends
/// it on untouched instead of compressing the payload again.
#[derive(Debug, Clone)]
pub struct Compressed {
    /// How it is compressed (`gzip` or `zstd`).
    pub encoding: CompressionConfig,
    /// The compressed bytes, in an allocation of their own.
    pub body: Bytes,
    /// Where the parts of a one-member gzip body lie, so that an exporter merging several such
    /// bodies can join them instead of compressing the merged payload again.
    pub member: crate::gzip::splice::MemberMap,
}

impl Batch {
    /// A batch from an encoded `Export*ServiceRequest` holding `items` items.
    pub fn from_encoded(signal: Signal, payload: Bytes, items: u64) -> Self {
        Self { signal, payload, items, decoded: OnceLock::new(), claim: None, compressed: None, whole: None }
    }

    /// A batch whose owned form already exists (it arrived as JSON, say), so nobody decodes again.
    pub fn from_decoded(decoded: Decoded, items: u64) -> Self {
        let payload = Bytes::from(decoded.encode());
        let batch = Self::from_encoded(decoded.signal(), payload, items);
        let _ = batch.decoded.set(Ok(decoded));
        batch
    }

    /// The batch read back from a disk queue's record, which is settled once this batch is
    /// dropped: an exporter keeps a batch until its outcome is known.
    pub fn with_claim(self, claim: crate::disk_queue::Claim) -> Self {
        Self { claim: Some(claim), ..self }
    }

    /// A part split from `whole`: when `whole` settles a disk queue record on drop, the record
    /// stays unsettled until this part (and every other) is done with.
    pub fn part_of(self, whole: &Arc<Batch>) -> Self {
        Self { whole: whole.is_claimed().then(|| whole.clone()), ..self }
    }

    /// The batch, also carrying the body its client sent, which decompresses to exactly its
    /// payload (a stage that changes the payload makes a new batch, without it).
    pub fn with_compressed(self, compressed: Compressed) -> Self {
        Self { compressed: Some(Box::new(compressed)), ..self }
    }

    /// The body as its client compressed it, if it came compressed `encoding`'s way and
    /// nothing has changed it since.
    pub fn compressed_as(&self, encoding: CompressionConfig) -> Option<&Bytes> {
        self.compressed.as_ref().filter(|c| c.encoding == encoding).map(|c| &c.body)
    }

    /// The body as its client gzipped it, with its map for [`crate::gzip::splice::join`], if it
    /// came as one gzip member and nothing has changed it since. The map may be found only now,
    /// by inflating the body again (see [`crate::gzip::splice::MemberMap`]).
    pub fn gzip_member(&self) -> Option<(&Bytes, crate::gzip::splice::Member)> {
        let compressed = self.compressed.as_ref().filter(|c| c.encoding == CompressionConfig::Gzip)?;
        Some((&compressed.body, compressed.member.get(&compressed.body)?))
    }

    /// Whether it was read from a disk queue, or split from a batch that was (and settles its
    /// record when dropped).
    pub fn is_claimed(&self) -> bool {
        self.claim.is_some() || self.whole.is_some()
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
