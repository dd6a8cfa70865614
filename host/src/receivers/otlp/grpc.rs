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
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Limited, StreamBody};
use prost::Message as _;

use super::compression::{self, DecompressError, Encoding};
use crate::batch::{ExportOutcome, Format, RpcCode, RpcStatus, export_response};
use crate::config::Signal;
use crate::receivers::ingest::{Ingest, Refusal, RefusalReason};

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
        let message = "expected content-type application/grpc";
        ingest.reject(None, RefusalReason::Unsupported, message);
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, message).into_response();
    }
    let Some(signal) = signal_for(request.uri().path()).filter(|s| ingest.accepts(*s)) else {
        let message = format!("unknown method {}", request.uri().path());
        ingest.reject(None, RefusalReason::Unsupported, &message);
        return status(RpcCode::Unimplemented, &message);
    };
    let refuse = |code: RpcCode, reason: RefusalReason, message: &str| {
        ingest.reject(Some(signal), reason, message);
        status(code, message)
    };
    if let Err(message) = ingest.authorize(request.headers()) {
        return refuse(RpcCode::Unauthenticated, RefusalReason::Unauthenticated, message);
    }
    if ingest.memory_refusing() {
        let message = Refusal::Memory.to_string();
        ingest.reject(Some(signal), RefusalReason::Memory, &message);
        return memory_refusal(&message);
    }
    if let Err(refusal) = ingest.refuse_if_full(signal) {
        return status(RpcCode::Unavailable, &refusal.to_string());
    }
    let encoding_header =
        request.headers().get("grpc-encoding").map(|v| v.to_str().unwrap_or("?").to_string());
    let limit = receiver.max_message_size;
    let too_large = |what: &str| {
        let message = format!("{what} exceeds the limit of {limit} bytes");
        refuse(RpcCode::ResourceExhausted, RefusalReason::TooLarge, &message)
    };
    // The frame header is 5 bytes; anything longer than header + limit is over the limit.
    let raw = match Limited::new(request.into_body(), limit + 5).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large("message"),
        Err(e) => {
            return refuse(
                RpcCode::InvalidArgument,
                RefusalReason::Malformed,
                &format!("cannot read request: {e}"),
            );
        }
    };
    let (compressed, message) = match parse_frame(raw) {
        Ok(frame) => frame,
        Err(e) => return refuse(RpcCode::Internal, RefusalReason::Malformed, &e),
    };
    let mut sent = None;
    let message = if compressed {
        let encoding = Encoding::from_header(encoding_header.as_deref()).filter(|e| *e != Encoding::Identity);
        let Some(encoding) = encoding else {
            let name = encoding_header.unwrap_or_else(|| "identity".into());
            let message = format!("unsupported grpc-encoding {name:?} for a compressed message");
            return refuse(RpcCode::Unimplemented, RefusalReason::Unsupported, &message);
        };
        let keep = ingest.keeps_client_bodies(signal, encoding.compression());
        match compression::decompress(encoding, message, limit, keep) {
            Ok((message, kept)) => {
                sent = kept;
                message
            }
            Err(DecompressError::TooLarge { .. }) => return too_large("decompressed message"),
            Err(e @ DecompressError::Corrupt(_)) => {
                return refuse(RpcCode::InvalidArgument, RefusalReason::Malformed, &e.to_string());
            }
        }
    } else {
        message
    };
    match ingest.accept(signal, Format::Protobuf, message, sent).await {
        Ok(outcome) => ok(signal, &outcome),
        Err(refusal @ Refusal::Malformed(_)) => status(RpcCode::InvalidArgument, &refusal.to_string()),
        Err(refusal @ (Refusal::Busy(_) | Refusal::NotStored(_))) => {
            status(RpcCode::Unavailable, &refusal.to_string())
        }
        Err(refusal @ Refusal::Memory) => memory_refusal(&refusal.to_string()),
    }
}

/// RESOURCE_EXHAUSTED with `RetryInfo` (one second): OTLP clients retry it only with that.
fn memory_refusal(message: &str) -> Response {
    let mut response = status(RpcCode::ResourceExhausted, message);
    let details = RpcStatus::retry_after(RpcCode::ResourceExhausted, message, 1).encode_to_vec();
    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(details);
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        response.headers_mut().insert("grpc-status-details-bin", value);
    }
    response
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
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message;
    use tower::ServiceExt;

    use super::*;
    use crate::config::ComponentId;
    use crate::metrics::{Metrics, PerSignal};
    use crate::pipeline;

    fn logs_request(records: usize) -> Vec<u8> {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(); records],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    async fn call(
        compressed: &[u8],
        encoding: &str,
    ) -> (Option<String>, crate::queue::Receiver<pipeline::Admitted>) {
        let metrics = Arc::new(Metrics::new());
        let (input, queue) = pipeline::queue(ComponentId::new("p").expect("id"), 4, false, &metrics);
        let context = crate::receivers::ingest::IngestContext {
            feeds: Arc::new(arc_swap::ArcSwap::from_pointee(PerSignal::new(|_| vec![input.clone()]))),
            memory: crate::memory::MemoryGuard::new(None, &metrics),
            metrics,
            auth: None,
        };
        let ingest = Ingest::new(&ComponentId::new("otlp").expect("id"), "grpc", context);
        let app = router(Arc::new(GrpcReceiver { ingest, max_message_size: 1 << 20 }));
        let mut frame = vec![1];
        frame.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
        frame.extend_from_slice(compressed);
        let request = http::Request::post("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
            .header("content-type", "application/grpc")
            .header("grpc-encoding", encoding)
            .body(Body::from(frame))
            .expect("request");
        let response = app.oneshot(request).await.expect("infallible");
        let header_status =
            response.headers().get("grpc-status").map(|v| v.to_str().expect("ascii").to_string());
        let collected = response.into_body().collect().await.expect("body");
        let trailer_status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.to_str().expect("ascii").to_string());
        (trailer_status.or(header_status), queue)
    }

    #[tokio::test]
    async fn accepts_zstd_and_gzip_messages() {
        let body = logs_request(3);
        let zstd = zstd::encode_all(&body[..], 3).expect("zstd");
        let (status, mut queue) = call(&zstd, "zstd").await;
        assert_eq!(status.as_deref(), Some("0"));
        assert_eq!(queue.try_recv().expect("queued").batch.items(), 3);

        let gzip = crate::gzip::compress(&body).expect("gzip");
        let (status, mut queue) = call(&gzip, "gzip").await;
        assert_eq!(status.as_deref(), Some("0"));
        assert_eq!(queue.try_recv().expect("queued").batch.items(), 3);
    }

    #[tokio::test]
    async fn refuses_unknown_encodings_and_zstd_bombs() {
        let (status, _) = call(b"whatever", "snappy").await;
        assert_eq!(status.as_deref(), Some("12"));
        let bomb = zstd::encode_all(&vec![0u8; 8 << 20][..], 3).expect("zstd");
        let (status, mut queue) = call(&bomb, "zstd").await;
        assert_eq!(status.as_deref(), Some("8"));
        assert!(queue.try_recv().is_err());
    }

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
