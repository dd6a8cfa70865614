//! The unit of work between stages.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::{DecodeError, Decoded};
use crate::config::{CompressionConfig, Signal};
use crate::gzip::splice::{Member, MemberMap};

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
    /// The batch gzipped by this host (when it has no client's gzip body), made once however
    /// many disk queues store it: see [`Batch::gzip`].
    gzipped: OnceLock<Option<Compressed>>,
    /// The claimed batch this one was split from, kept alive (and its record unsettled) until
    /// every part is dropped.
    whole: Option<Arc<Batch>>,
}

/// A request body as its client compressed it. An exporter that compresses the same way sends
/// it on untouched instead of compressing the payload again.
///
/// The body and its gzip map are only ever read together, so a map cannot be applied to a body
/// it was not made for.
#[derive(Debug, Clone)]
pub struct Compressed {
    /// How it is compressed (`gzip` or `zstd`).
    encoding: CompressionConfig,
    /// The compressed bytes.
    body: Bytes,
    /// Where the parts of a one-member gzip body lie, so that an exporter merging several such
    /// bodies can join them instead of compressing the merged payload again.
    member: MemberMap,
}

impl Compressed {
    /// `body`, compressed `encoding`'s way, with its gzip map (known or deferred; `known(None)`
    /// for a body that cannot be joined).
    pub fn new(encoding: CompressionConfig, body: Bytes, member: MemberMap) -> Self {
        Self { encoding, body, member }
    }

    /// How it is compressed.
    pub fn encoding(&self) -> CompressionConfig {
        self.encoding
    }

    /// The compressed bytes.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The same body in the allocation `move_body` gives it (a receiver moves it out of a
    /// larger buffer, so that the batch holds only its own bytes).
    pub fn map_body(self, move_body: impl FnOnce(Bytes) -> Bytes) -> Self {
        Self { body: move_body(self.body), ..self }
    }

    /// The body's map for [`crate::gzip::splice::join`], if it is one gzip member. A deferred
    /// map is found now, by inflating the body again, and kept for every clone of this body.
    pub fn gzip_member(&self) -> Option<Member> {
        (self.encoding == CompressionConfig::Gzip).then(|| self.member.get(&self.body)).flatten()
    }
}

impl Batch {
    /// A batch from an encoded `Export*ServiceRequest` holding `items` items.
    pub fn from_encoded(signal: Signal, payload: Bytes, items: u64) -> Self {
        let (decoded, gzipped) = (OnceLock::new(), OnceLock::new());
        Self { signal, payload, items, decoded, claim: None, compressed: None, gzipped, whole: None }
    }

    /// One batch of `signal` holding `parts` in order: their payloads concatenated, which is one
    /// request (an `Export*ServiceRequest`'s only field is repeated, and repeated fields
    /// concatenate). The parts' client bodies do not carry over.
    pub fn concatenated(signal: Signal, parts: &[&Batch]) -> Self {
        let mut payload = Vec::with_capacity(parts.iter().map(|part| part.payload.len()).sum());
        parts.iter().for_each(|part| payload.extend_from_slice(&part.payload));
        Self::from_encoded(signal, payload.into(), parts.iter().map(|part| part.items).sum())
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
    pub fn compressed_as(&self, encoding: CompressionConfig) -> Option<&Compressed> {
        self.compressed.as_deref().filter(|c| c.encoding == encoding)
    }

    /// The batch as one gzip member whose map for joining is known: its client's gzip body when
    /// it came as one, else the payload compressed now ([`crate::gzip::compress_joinable`]) —
    /// once, however many disk queues store it. `None` only if compressing failed.
    pub fn gzip(&self) -> Option<&Compressed> {
        if let Some(body) = self.compressed_as(CompressionConfig::Gzip) {
            return Some(body);
        }
        let made = self.gzipped.get_or_init(|| {
            let (body, member) = crate::gzip::compress_joinable(&self.payload).ok()?;
            Some(Compressed::new(CompressionConfig::Gzip, body.into(), MemberMap::known(Some(member))))
        });
        made.as_ref()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch is gzipped once however often it is asked (every disk queue storing it asks), and
    /// a client's gzip body is used as it came.
    #[test]
    fn a_batch_is_gzipped_once_or_keeps_its_clients_body() {
        let payload = Bytes::from(b"spans and more spans, spans again".repeat(100));
        let batch = Batch::from_encoded(Signal::Traces, payload.clone(), 1);
        let first = batch.gzip().expect("compresses").clone();
        let again = batch.gzip().expect("kept");
        assert_eq!(first.body().as_ptr(), again.body().as_ptr(), "compressed once");
        assert_eq!(crate::gzip::gunzip_limited(first.body(), usize::MAX - 1).expect("gzip"), payload);
        assert!(first.gzip_member().is_some(), "joinable");

        let client = Bytes::from(crate::gzip::compress(&payload).expect("in memory"));
        let body = Compressed::new(CompressionConfig::Gzip, client.clone(), MemberMap::deferred());
        let batch = Batch::from_encoded(Signal::Traces, payload, 1).with_compressed(body);
        assert_eq!(batch.gzip().expect("the client's").body(), &client);
    }

    /// Concatenated batches are one request holding every part's resources in order, counted
    /// as the sum of the parts.
    #[test]
    fn concatenated_batches_are_one_request_of_every_part_in_order() {
        use crate::plugins::testing::{names, spans};
        let (first, second) = (spans(&["a", "b"]), spans(&["c"]));
        let merged = Batch::concatenated(Signal::Traces, &[&first, &second]);
        assert_eq!(merged.items(), 3);
        assert_eq!(names(&merged), ["a", "b", "c"]);
        assert!(merged.decoded().is_ok(), "one well-formed request");
    }
}
