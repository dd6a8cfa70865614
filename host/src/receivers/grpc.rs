//! OTLP/gRPC: the `Export` method of TraceService, MetricsService and LogsService.
//!
//! gRPC's unary framing is small enough to handle directly over HTTP/2, which lets the receiver
//! keep the message as bytes (no decode), enforce the size limit before buffering a body, and
//! answer an oversized message with RESOURCE_EXHAUSTED as OTLP asks.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Limited, StreamBody};

use super::compression::{self, DecompressError, Encoding};
use super::ingest::{Ingest, Refusal, RefusalReason};
use crate::config::Signal;
use crate::otlp::{ExportOutcome, Format, RpcCode, export_response};

/// The gRPC receiver's shared state.
#[derive(Debug)]
pub struct GrpcReceiver {
    /// Where requests go.
    pub ingest: Ingest,
    /// Largest message accepted, before and after decompression.
    pub max_message_size: usize,
}

const ACCEPT_ENCODING: &str = "gzip,zstd,identity";

/// The method path of each signal's `Export`.
fn signal_for(path: &str) -> Option<Signal> {
    match path {
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export" => Some(Signal::Traces),
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export" => Some(Signal::Metrics),
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export" => Some(Signal::Logs),
        _ => None,
    }
}

/// Serves every path; methods of signals no pipeline takes answer UNIMPLEMENTED.
pub fn router(receiver: Arc<GrpcReceiver>) -> Router {
    Router::new().fallback(handle).with_state(receiver)
}

/// A trailers-only answer: the status travels in the headers and there is no body.
fn status(code: RpcCode, message: &str) -> Response {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(code as i32));
    headers.insert("grpc-accept-encoding", HeaderValue::from_static(ACCEPT_ENCODING));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", value);
    }
    response
}

/// gRPC's percent-encoding of `grpc-message`: printable ASCII except `%` stays as is.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn ok(signal: Signal, outcome: &ExportOutcome) -> Response {
    let message = export_response(signal, outcome, Format::Protobuf);
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(&message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = [
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(frame.freeze())),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    let body = BoxBody::new(StreamBody::new(futures::stream::iter(frames)));
    let mut response = Response::new(Body::new(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-accept-encoding", HeaderValue::from_static(ACCEPT_ENCODING));
    response
}

async fn handle(State(receiver): State<Arc<GrpcReceiver>>, request: Request) -> Response {
    let ingest = &receiver.ingest;
    let is_grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !is_grpc {
        ingest.refused(None, RefusalReason::Unsupported, 0);
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected content-type application/grpc")
            .into_response();
    }
    let Some(signal) = signal_for(request.uri().path()).filter(|s| ingest.accepts(*s)) else {
        ingest.refused(None, RefusalReason::Unsupported, 0);
        return status(RpcCode::Unimplemented, &format!("unknown method {}", request.uri().path()));
    };
    let encoding_header =
        request.headers().get("grpc-encoding").map(|v| v.to_str().unwrap_or("?").to_string());
    let limit = receiver.max_message_size;
    let too_large = |what: &str| {
        ingest.refused(Some(signal), RefusalReason::TooLarge, 0);
        status(RpcCode::ResourceExhausted, &format!("{what} exceeds the limit of {limit} bytes"))
    };
    let malformed = |message: String| {
        ingest.refused(Some(signal), RefusalReason::Malformed, 0);
        status(RpcCode::InvalidArgument, &message)
    };
    // The frame header is 5 bytes; anything longer than header + limit is over the limit.
    let raw = match Limited::new(request.into_body(), limit + 5).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large("message"),
        Err(e) => return malformed(format!("cannot read request: {e}")),
    };
    let (compressed, message) = match parse_frame(raw) {
        Ok(frame) => frame,
        Err(e) => {
            ingest.refused(Some(signal), RefusalReason::Malformed, 0);
            return status(RpcCode::Internal, &e);
        }
    };
    let message = if compressed {
        let encoding = Encoding::from_header(encoding_header.as_deref()).filter(|e| *e != Encoding::Identity);
        let Some(encoding) = encoding else {
            ingest.refused(Some(signal), RefusalReason::Unsupported, 0);
            let name = encoding_header.unwrap_or_else(|| "identity".into());
            return status(
                RpcCode::Unimplemented,
                &format!("unsupported grpc-encoding {name:?} for a compressed message"),
            );
        };
        match compression::decompress(encoding, message, limit) {
            Ok(message) => message,
            Err(DecompressError::TooLarge { .. }) => return too_large("decompressed message"),
            Err(e @ DecompressError::Corrupt(_)) => return malformed(e.to_string()),
        }
    } else {
        message
    };
    match ingest.accept(signal, Format::Protobuf, message) {
        Ok(outcome) => ok(signal, &outcome),
        Err(refusal @ Refusal::Malformed(_)) => status(RpcCode::InvalidArgument, &refusal.to_string()),
        Err(refusal @ Refusal::Busy(_)) => status(RpcCode::Unavailable, &refusal.to_string()),
    }
}

/// Splits a unary request body into its compressed flag and message.
fn parse_frame(mut raw: Bytes) -> Result<(bool, Bytes), String> {
    if raw.len() < 5 {
        return Err("request has no complete gRPC message frame".into());
    }
    let compressed = match raw[0] {
        0 => false,
        1 => true,
        flag => return Err(format!("invalid gRPC compressed flag {flag}")),
    };
    let len = u32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]) as usize;
    let message = raw.split_off(5);
    if message.len() != len {
        return Err(format!("gRPC frame announces {len} bytes but carries {}", message.len()));
    }
    Ok((compressed, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let raw = Bytes::from_static(&[0, 0, 0, 0, 2, 8, 1]);
        assert_eq!(parse_frame(raw), Ok((false, Bytes::from_static(&[8, 1]))));
        assert!(parse_frame(Bytes::from_static(&[0, 0, 0, 0, 3, 8])).is_err());
        assert!(parse_frame(Bytes::from_static(&[2, 0, 0, 0, 0])).is_err());
        assert!(parse_frame(Bytes::from_static(&[0, 0])).is_err());
    }

    #[test]
    fn percent_encodes_messages() {
        assert_eq!(percent_encode("100% bad\n"), "100%25 bad%0A");
    }
}
