//! Building OTLP requests and reading their answers, for gRPC and HTTP.

use std::io::Write;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use prost::Message;

use crate::batch::{Decoded, RetryInfo, RpcStatus};
use crate::config::{CompressionConfig, OtlpProtocol, Signal};
use crate::exporters::http::verdict::{Verdict, retry_after};

/// The gRPC method path of each signal's `Export`.
pub fn grpc_path(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    }
}

/// Compresses `data`.
pub fn compress(compression: CompressionConfig, data: Bytes) -> std::io::Result<Bytes> {
    match compression {
        // Uncompressed bodies go out as the bytes they are, without a copy.
        CompressionConfig::None => Ok(data),
        CompressionConfig::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 4),
                flate2::Compression::fast(),
            );
            encoder.write_all(&data)?;
            encoder.finish().map(Bytes::from)
        }
        CompressionConfig::Zstd => zstd::bulk::compress(&data, 1).map(Bytes::from),
    }
}

/// The encoding name for headers, if compressed.
pub fn encoding_name(compression: CompressionConfig) -> Option<&'static str> {
    match compression {
        CompressionConfig::None => None,
        CompressionConfig::Gzip => Some("gzip"),
        CompressionConfig::Zstd => Some("zstd"),
    }
}

/// The body to send for `payload` (an encoded request) and its content type.
pub fn body(
    protocol: OtlpProtocol,
    compression: CompressionConfig,
    signal: Signal,
    payload: &Bytes,
) -> Result<(Bytes, &'static str), String> {
    let message = if protocol == OtlpProtocol::HttpJson {
        let decoded = Decoded::from_protobuf(signal, payload).map_err(|e| e.to_string())?;
        let mut json = Vec::with_capacity(payload.len() * 2);
        decoded.write_json(&mut json, false).map_err(|e| e.to_string())?;
        Bytes::from(json)
    } else {
        payload.clone()
    };
    let compressed = compress(compression, message).map_err(|e| format!("cannot compress: {e}"))?;
    Ok(match protocol {
        OtlpProtocol::Grpc => {
            let mut frame = BytesMut::with_capacity(compressed.len() + 5);
            frame.put_u8(u8::from(compression != CompressionConfig::None));
            frame.put_u32(compressed.len() as u32);
            frame.put_slice(&compressed);
            (frame.freeze(), "application/grpc")
        }
        OtlpProtocol::HttpProtobuf => (compressed, "application/x-protobuf"),
        OtlpProtocol::HttpJson => (compressed, "application/json"),
    })
}

/// `partial_success.rejected_*` (field 1 of field 1) of any export response, read in place.
fn rejected_in(response: &[u8]) -> u64 {
    use sluice_wire::wire::Fields;
    let partial = Fields::new(response).map_while(Result::ok).find(|f| f.number == 1);
    partial
        .and_then(|f| f.bytes().ok())
        .and_then(|p| Fields::new(p).map_while(Result::ok).find(|f| f.number == 1))
        .and_then(|f| f.varint().ok())
        .unwrap_or(0)
}

/// Reads an OTLP/HTTP answer.
pub fn http_verdict(status: StatusCode, headers: &HeaderMap, body: &[u8], json: bool) -> Verdict {
    if status.is_success() {
        let rejected = if json {
            serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| {
                    let partial = v.get("partialSuccess")?.as_object()?.clone();
                    partial
                        .iter()
                        .find(|(k, _)| k.starts_with("rejected"))
                        .and_then(|(_, v)| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
                })
                .unwrap_or(0)
        } else {
            rejected_in(body)
        };
        return Verdict::Delivered { rejected };
    }
    let detail = String::from_utf8_lossy(&body[..body.len().min(200)]).to_string();
    let reason = format!("HTTP {status}: {detail}");
    match status.as_u16() {
        429 | 502 | 503 | 504 => Verdict::Retry { reason, after: retry_after(headers) },
        _ => Verdict::Permanent { reason },
    }
}

/// gRPC `-bin` metadata is base64, with or without padding.
fn decode_binary_header(value: &[u8]) -> Option<Vec<u8>> {
    let unpadded = value
        .trim_ascii()
        .strip_suffix(b"==")
        .or_else(|| value.trim_ascii().strip_suffix(b"="))
        .unwrap_or(value.trim_ascii());
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD_NO_PAD, unpadded).ok()
}

/// Reads an OTLP/gRPC answer from its headers, trailers and body.
pub fn grpc_verdict(
    status: StatusCode,
    headers: &HeaderMap,
    trailers: Option<&HeaderMap>,
    body: &[u8],
) -> Verdict {
    let get = |name: &str| trailers.and_then(|t| t.get(name)).or_else(|| headers.get(name));
    let Some(code) = get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok())
    else {
        let reason = format!("HTTP {status} without a grpc-status");
        return if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Verdict::Retry { reason, after: None }
        } else {
            Verdict::Permanent { reason }
        };
    };
    if code == 0 {
        let message = if body.len() >= 5 { &body[5..] } else { &[][..] };
        return Verdict::Delivered { rejected: rejected_in(message) };
    }
    let message = get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or("");
    let reason = format!("gRPC status {code}: {message}");
    let retry_info = get("grpc-status-details-bin")
        .and_then(|v| decode_binary_header(v.as_bytes()))
        .and_then(|bytes| RpcStatus::decode(&bytes[..]).ok())
        .and_then(|status| {
            status
                .details
                .iter()
                .find(|d| d.type_url.ends_with("google.rpc.RetryInfo"))
                .and_then(|d| RetryInfo::decode(&d.value[..]).ok())
        });
    let delay = retry_info
        .as_ref()
        .and_then(|info| info.retry_delay.as_ref())
        .map(|d| Duration::from_secs(d.seconds.max(0) as u64) + Duration::from_nanos(d.nanos.max(0) as u64));
    match code {
        // CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS.
        1 | 4 | 10 | 11 | 14 | 15 => Verdict::Retry { reason, after: delay },
        // RESOURCE_EXHAUSTED only when the server says when to come back.
        8 if retry_info.is_some() => Verdict::Retry { reason, after: delay },
        _ => Verdict::Permanent { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers() {
        let headers = HeaderMap::new();
        assert_eq!(http_verdict(StatusCode::OK, &headers, b"", false), Verdict::Delivered { rejected: 0 });
        let mut retry = HeaderMap::new();
        retry.insert(http::header::RETRY_AFTER, "7".parse().expect("header"));
        assert_eq!(
            http_verdict(StatusCode::SERVICE_UNAVAILABLE, &retry, b"busy", false),
            Verdict::Retry {
                reason: "HTTP 503 Service Unavailable: busy".into(),
                after: Some(Duration::from_secs(7))
            }
        );
        assert!(matches!(
            http_verdict(StatusCode::BAD_REQUEST, &headers, b"", false),
            Verdict::Permanent { .. }
        ));
        assert!(matches!(
            http_verdict(StatusCode::INTERNAL_SERVER_ERROR, &headers, b"", false),
            Verdict::Permanent { .. }
        ));
        let partial = br#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":"x"}}"#;
        assert_eq!(http_verdict(StatusCode::OK, &headers, partial, true), Verdict::Delivered { rejected: 3 });
    }

    #[test]
    fn grpc_answers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "14".parse().expect("header"));
        assert!(matches!(
            grpc_verdict(StatusCode::OK, &HeaderMap::new(), Some(&trailers), b""),
            Verdict::Retry { .. }
        ));
        trailers.insert("grpc-status", "8".parse().expect("header"));
        assert!(matches!(
            grpc_verdict(StatusCode::OK, &HeaderMap::new(), Some(&trailers), b""),
            Verdict::Permanent { .. }
        ));
        trailers.insert("grpc-status", "3".parse().expect("header"));
        assert!(matches!(
            grpc_verdict(StatusCode::OK, &HeaderMap::new(), Some(&trailers), b""),
            Verdict::Permanent { .. }
        ));
    }
}
