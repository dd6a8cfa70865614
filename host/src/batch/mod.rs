//! The batch: the OTLP payload that flows through pipelines, owned decoding for the stages that
//! need it, the OTLP/JSON mapping, and the export responses.
//!
//! A [`Batch`] carries the encoded protobuf request untouched. Stages that only route or count
//! never decode it; the first stage that needs owned messages decodes it once, and every later
//! reader of the same batch shares that result.

mod decoded;
mod encoded;
pub(crate) mod fields;
mod json;
mod response;

pub use decoded::{DecodeError, Decoded};
pub use encoded::{Batch, Compressed};
pub use json::{JsonRenderer, write_json};
pub use response::{
    ExportOutcome, ProtoAny, ProtoDuration, RetryInfo, RpcCode, RpcStatus, export_response, status_body,
};

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/x-protobuf` (and the gRPC transport).
    Protobuf,
    /// `application/json`, the OTLP/JSON mapping.
    Json,
}
