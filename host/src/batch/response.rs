//! Export responses and `google.rpc.Status` bodies, in protobuf or JSON.

use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;

use super::Format;
use crate::config::Signal;

/// What became of an accepted request's items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOutcome {
    /// Items rejected while the rest were accepted (`partial_success`).
    pub rejected: u64,
    /// Why they were rejected; empty when none were.
    pub message: String,
}

/// The gRPC status codes the receivers answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum RpcCode {
    /// The request was malformed.
    InvalidArgument = 3,
    /// The request exceeds a size limit.
    ResourceExhausted = 8,
    /// The method or encoding is not supported.
    Unimplemented = 12,
    /// A protocol error.
    Internal = 13,
    /// The host is busy or shutting down; retry later.
    Unavailable = 14,
    /// Missing or wrong credentials.
    Unauthenticated = 16,
}

/// `google.rpc.Status`: the body of every OTLP error answer, and what gRPC servers put in
/// `grpc-status-details-bin` (where exporters look for `RetryInfo`).
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    /// The gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// A message for people.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details, such as `google.rpc.RetryInfo`.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoAny {
    /// The type, e.g. `type.googleapis.com/google.rpc.RetryInfo`.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The encoded message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`: how long a client should wait before retrying.
#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    /// The delay.
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoDuration {
    /// Whole seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// The rest, in nanoseconds.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl RpcStatus {
    /// A status that tells the client to retry after `seconds` (`RetryInfo` in its details:
    /// OTLP clients retry RESOURCE_EXHAUSTED only when it is there).
    pub fn retry_after(code: RpcCode, message: &str, seconds: i64) -> Self {
        let info = RetryInfo { retry_delay: Some(ProtoDuration { seconds, nanos: 0 }) };
        let detail = ProtoAny {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: info.encode_to_vec(),
        };
        RpcStatus { code: code as i32, message: message.into(), details: vec![detail] }
    }
}

/// Encodes an `Export*ServiceResponse`, with `partial_success` set when items were rejected.
pub fn export_response(signal: Signal, outcome: &ExportOutcome, format: Format) -> Vec<u8> {
    if format == Format::Json {
        if outcome.rejected == 0 {
            return b"{}".to_vec();
        }
        let field = match signal {
            Signal::Traces => "rejectedSpans",
            Signal::Metrics => "rejectedDataPoints",
            Signal::Logs => "rejectedLogRecords",
        };
        let body = serde_json::json!({
            "partialSuccess": { field: outcome.rejected.to_string(), "errorMessage": outcome.message }
        });
        return body.to_string().into_bytes();
    }
    let rejected = i64::try_from(outcome.rejected).unwrap_or(i64::MAX);
    let error_message = outcome.message.clone();
    let partial = outcome.rejected > 0;
    match signal {
        Signal::Traces => ExportTraceServiceResponse {
            partial_success: partial
                .then_some(ExportTracePartialSuccess { rejected_spans: rejected, error_message }),
        }
        .encode_to_vec(),
        Signal::Metrics => ExportMetricsServiceResponse {
            partial_success: partial
                .then_some(ExportMetricsPartialSuccess { rejected_data_points: rejected, error_message }),
        }
        .encode_to_vec(),
        Signal::Logs => ExportLogsServiceResponse {
            partial_success: partial
                .then_some(ExportLogsPartialSuccess { rejected_log_records: rejected, error_message }),
        }
        .encode_to_vec(),
    }
}

/// Encodes a `google.rpc.Status` carrying `code` and `message`.
pub fn status_body(code: RpcCode, message: &str, format: Format) -> Vec<u8> {
    match format {
        Format::Json => {
            serde_json::json!({ "code": code as i32, "message": message }).to_string().into_bytes()
        }
        Format::Protobuf => {
            RpcStatus { code: code as i32, message: message.to_string(), details: Vec::new() }.encode_to_vec()
        }
    }
}
