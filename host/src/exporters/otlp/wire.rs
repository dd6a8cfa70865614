//! Building OTLP requests and reading their answers, for gRPC and HTTP.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use prost::Message;

use crate::batch::{JsonRenderer, RetryInfo, RpcStatus};
use crate::config::{CompressionConfig, OtlpProtocol, Signal};
use crate::exporters::http::verdict::{Verdict, retry_after};
use crate::gzip::splice::Member;

/// The gRPC method path of each signal's `Export`.
pub fn grpc_path(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
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

/// The body to send for a request a client already compressed the way this exporter would,
/// and its content type: the bytes as they are over HTTP, behind a compressed-flagged message
/// prefix over gRPC.
pub fn compressed_body(protocol: OtlpProtocol, compressed: &Bytes) -> Result<(Bytes, &'static str), String> {
    if protocol == OtlpProtocol::HttpProtobuf {
        return Ok((compressed.clone(), "application/x-protobuf"));
    }
    compressed_request(protocol, |out| out.extend_from_slice(compressed))
}

/// The body to send for several requests their clients gzipped (each mapped as it was
/// inflated), joined into one gzip member, and its content type.
pub fn joined_body<B: AsRef<[u8]>>(
    protocol: OtlpProtocol,
    members: &[(B, Member)],
) -> Result<(Bytes, &'static str), String> {
    compressed_request(protocol, |out| crate::gzip::splice::join(members, out))
}

/// A compressed protobuf body written by `write`, behind a compressed-flagged message prefix over
/// gRPC, and its content type.
fn compressed_request(
    protocol: OtlpProtocol,
    write: impl FnOnce(&mut Vec<u8>),
) -> Result<(Bytes, &'static str), String> {
    let (prefix, content_type) = match protocol {
        OtlpProtocol::Grpc => (5, "application/grpc"),
        OtlpProtocol::HttpProtobuf => (0, "application/x-protobuf"),
        OtlpProtocol::HttpJson => return Err("a compressed protobuf body cannot be sent as JSON".into()),
    };
    let mut out = vec![0u8; prefix];
    write(&mut out);
    if prefix != 0 {
        fill_grpc_prefix(&mut out, true)?;
    }
    Ok((Bytes::from(out), content_type))
}

/// The body to send for `parts` (encoded requests that together make one: protobuf's repeated
/// fields concatenate) and its content type. A gRPC message's 5-byte prefix is written first and
/// filled in once its length is known, and gzip reads the parts where they are, so a merged
/// request is copied only into its compressed form.
pub fn body(
    protocol: OtlpProtocol,
    compression: CompressionConfig,
    signal: Signal,
    parts: &[Bytes],
    renderer: &JsonRenderer,
) -> Result<(Bytes, &'static str), String> {
    let content_type = match protocol {
        OtlpProtocol::Grpc => "application/grpc",
        OtlpProtocol::HttpProtobuf => "application/x-protobuf",
        OtlpProtocol::HttpJson => "application/json",
    };
    let json;
    let parts: Vec<&[u8]> = if protocol == OtlpProtocol::HttpJson {
        let slices: Vec<&[u8]> = parts.iter().map(|part| &part[..]).collect();
        let out = renderer.render(signal, &slices).map_err(|e| e.to_string())?;
        if compression == CompressionConfig::None {
            return Ok((Bytes::from(out), content_type));
        }
        json = out;
        vec![&json]
    } else {
        // An uncompressed HTTP body of one request goes out as the bytes it is, without a copy.
        if let ([part], CompressionConfig::None, OtlpProtocol::HttpProtobuf) = (parts, compression, protocol)
        {
            return Ok((part.clone(), content_type));
        }
        parts.iter().map(|part| &part[..]).collect()
    };
    let prefix = if protocol == OtlpProtocol::Grpc { 5 } else { 0 };
    let mut out = vec![0u8; prefix];
    let cannot = |e: std::io::Error| format!("cannot compress: {e}");
    match compression {
        CompressionConfig::None => parts.iter().for_each(|part| out.extend_from_slice(part)),
        CompressionConfig::Gzip => crate::gzip::compress_parts(&parts, &mut out).map_err(cannot)?,
        CompressionConfig::Zstd => {
            use std::io::Write;
            let mut encoder = zstd::stream::Encoder::new(&mut out, 1).map_err(cannot)?;
            parts.iter().try_for_each(|part| encoder.write_all(part)).map_err(cannot)?;
            encoder.finish().map_err(cannot)?;
        }
    }
    if prefix != 0 {
        fill_grpc_prefix(&mut out, compression != CompressionConfig::None)?;
    }
    Ok((Bytes::from(out), content_type))
}

/// Fills in the 5-byte prefix a gRPC message in `framed` was written behind: the compressed flag
/// and the message's length.
fn fill_grpc_prefix(framed: &mut [u8], compressed: bool) -> Result<(), String> {
    let length = u32::try_from(framed.len() - 5).map_err(|_| "a gRPC message over 4 GiB".to_string())?;
    framed[0] = u8::from(compressed);
    framed[1..5].copy_from_slice(&length.to_be_bytes());
    Ok(())
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
    use crate::gzip::gunzip;

    #[test]
    fn bodies_frame_and_compress_merged_parts() {
        let parts = [Bytes::from_static(b"\x0a\x02\x0a\x00"), Bytes::from_static(b"\x0a\x00")];
        let concatenated = parts.concat();
        let renderer = JsonRenderer::default();
        let build = |protocol, compression, parts: &[Bytes]| {
            body(protocol, compression, Signal::Traces, parts, &renderer).expect("body")
        };
        let (grpc, kind) = build(OtlpProtocol::Grpc, CompressionConfig::Gzip, &parts);
        assert_eq!(kind, "application/grpc");
        assert_eq!(grpc[0], 1, "compressed flag");
        assert_eq!(u32::from_be_bytes(grpc[1..5].try_into().expect("4 bytes")) as usize, grpc.len() - 5);
        assert_eq!(gunzip(&grpc[5..]), concatenated);
        let (zstd, _) = build(OtlpProtocol::Grpc, CompressionConfig::Zstd, &parts);
        assert_eq!(zstd::decode_all(&zstd[5..]).expect("valid zstd"), concatenated);
        let (plain, _) = build(OtlpProtocol::Grpc, CompressionConfig::None, &parts);
        assert_eq!(&plain[..], [&[0, 0, 0, 0, 6][..], &concatenated].concat());
        let (http, kind) = build(OtlpProtocol::HttpProtobuf, CompressionConfig::Gzip, &parts);
        assert_eq!((gunzip(&http), kind), (concatenated.clone(), "application/x-protobuf"));
        let one = &parts[..1];
        let (same, _) = build(OtlpProtocol::HttpProtobuf, CompressionConfig::None, one);
        assert_eq!(same.as_ptr(), parts[0].as_ptr(), "sent as it is");
        let (json, kind) = build(OtlpProtocol::HttpJson, CompressionConfig::Gzip, &parts);
        assert_eq!(kind, "application/json");
        let json: serde_json::Value = serde_json::from_slice(&gunzip(&json)).expect("JSON");
        assert_eq!(json["resourceSpans"].as_array().map(Vec::len), Some(2), "{json}");
    }

    #[test]
    fn a_clients_compressed_body_is_framed_but_not_touched() {
        let compressed = Bytes::from(crate::gzip::zlib(b"\x0a\x00").expect("in memory"));
        let (grpc, kind) = compressed_body(OtlpProtocol::Grpc, &compressed).expect("framed");
        assert_eq!(kind, "application/grpc");
        assert_eq!(grpc[0], 1, "flagged compressed");
        assert_eq!(u32::from_be_bytes(grpc[1..5].try_into().expect("4 bytes")) as usize, compressed.len());
        assert_eq!(&grpc[5..], &compressed[..]);
        let (http, kind) = compressed_body(OtlpProtocol::HttpProtobuf, &compressed).expect("as is");
        assert_eq!((http, kind), (compressed.clone(), "application/x-protobuf"));
        assert!(compressed_body(OtlpProtocol::HttpJson, &compressed).is_err());
    }

    #[test]
    fn clients_gzip_bodies_are_joined_into_one_framed_member() {
        let parts: [&[u8]; 2] = [b"\x0a\x00", b"\x0a\x02\x0a\x00"];
        let members: Vec<(Bytes, Member)> = parts
            .iter()
            .map(|part| {
                let body = Bytes::from(crate::gzip::zlib(part).expect("in memory"));
                let member = crate::gzip::splice::gunzip_mapped(&body, 1000).expect("valid").1;
                let member = member.get(&body).expect("one member");
                (body, member)
            })
            .collect();
        let (grpc, kind) = joined_body(OtlpProtocol::Grpc, &members).expect("framed");
        assert_eq!(kind, "application/grpc");
        assert_eq!(grpc[0], 1, "flagged compressed");
        assert_eq!(u32::from_be_bytes(grpc[1..5].try_into().expect("4 bytes")) as usize, grpc.len() - 5);
        assert_eq!(crate::gzip::gunzip(&grpc[5..]), parts.concat());
        let (http, kind) = joined_body(OtlpProtocol::HttpProtobuf, &members).expect("as is");
        assert_eq!((&http[..], kind), (&grpc[5..], "application/x-protobuf"));
        assert!(joined_body(OtlpProtocol::HttpJson, &members).is_err());
    }

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
