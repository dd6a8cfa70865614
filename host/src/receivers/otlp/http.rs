//! OTLP/HTTP: `POST /v1/traces`, `/v1/metrics` and `/v1/logs`, protobuf or JSON, optionally
//! gzip- or zstd-compressed, answered in the request's own encoding.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::{BodyExt, Limited};

use super::compression::{self, DecompressError, Encoding};
use crate::batch::{Format, RpcCode, export_response, status_body};
use crate::config::Signal;
use crate::receivers::ingest::{Ingest, Refusal, RefusalReason};

/// The HTTP receiver's shared state.
#[derive(Debug)]
pub struct HttpReceiver {
    /// Where requests go.
    pub ingest: Ingest,
    /// Largest body accepted, after decompression.
    pub max_body_size: usize,
}

/// A route per signal; a signal no pipeline takes (checked per request, since a reload can
/// change it) answers 404 like an unknown path.
pub fn router(receiver: Arc<HttpReceiver>) -> Router {
    let mut router = Router::new();
    for signal in Signal::ALL {
        let path = format!("/v1/{signal}");
        router = router.route(
            &path,
            post(move |state: State<Arc<HttpReceiver>>, headers: HeaderMap, body: Body| async move {
                if !state.ingest.accepts(signal) {
                    return error(
                        StatusCode::NOT_FOUND,
                        RpcCode::Unimplemented,
                        "no pipeline takes this signal",
                        Format::Json,
                    );
                }
                export(state, signal, headers, body).await
            }),
        );
    }
    router
        .fallback(|| async {
            error(StatusCode::NOT_FOUND, RpcCode::Unimplemented, "unknown path", Format::Json)
        })
        .with_state(receiver)
}

fn content_type(format: Format) -> HeaderValue {
    HeaderValue::from_static(match format {
        Format::Protobuf => "application/x-protobuf",
        Format::Json => "application/json",
    })
}

fn error(status: StatusCode, code: RpcCode, message: &str, format: Format) -> Response {
    (status, [(header::CONTENT_TYPE, content_type(format))], status_body(code, message, format))
        .into_response()
}

async fn export(
    State(receiver): State<Arc<HttpReceiver>>,
    signal: Signal,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ingest = &receiver.ingest;
    let refuse = |status: StatusCode, code: RpcCode, reason: RefusalReason, message: &str, format: Format| {
        ingest.reject(Some(signal), reason, message);
        error(status, code, message, format)
    };
    if let Err(message) = ingest.authorize(&headers) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            RpcCode::Unauthenticated,
            RefusalReason::Unauthenticated,
            message,
            Format::Json,
        );
    }
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let format = match media_type.as_deref() {
        Some("application/x-protobuf" | "application/protobuf") => Format::Protobuf,
        Some("application/json") => Format::Json,
        other => {
            let message = format!(
                "unsupported content type {:?}: use application/x-protobuf or application/json",
                other.unwrap_or("")
            );
            let status = StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return refuse(
                status,
                RpcCode::InvalidArgument,
                RefusalReason::Unsupported,
                &message,
                Format::Json,
            );
        }
    };
    let encoding_header = headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?"));
    let Some(encoding) = Encoding::from_header(encoding_header) else {
        let message = format!(
            "unsupported content encoding {:?}: use gzip, zstd or none",
            encoding_header.unwrap_or("")
        );
        let status = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return refuse(status, RpcCode::InvalidArgument, RefusalReason::Unsupported, &message, format);
    };
    let limit = receiver.max_body_size;
    let too_large = || {
        let message = format!("request body exceeds the limit of {limit} bytes");
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            RpcCode::ResourceExhausted,
            RefusalReason::TooLarge,
            &message,
            format,
        )
    };
    let malformed = |message: &str| {
        refuse(StatusCode::BAD_REQUEST, RpcCode::InvalidArgument, RefusalReason::Malformed, message, format)
    };
    if ingest.memory_refusing() {
        // Read the body and throw it away, holding none of it: a client still sending gets
        // its 503 rather than a broken pipe.
        discard(body, limit).await;
        let message = Refusal::Memory.to_string();
        ingest.reject(Some(signal), RefusalReason::Memory, &message);
        return retry_later(&message, format);
    }
    if let Err(refusal) = ingest.refuse_if_full(signal) {
        discard(body, limit).await;
        return retry_later(&refusal.to_string(), format);
    }
    let raw = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(e) => return malformed(&format!("cannot read body: {e}")),
    };
    // A JSON body is decoded and encoded again; only protobuf can go on as the client sent it.
    let keep = format == Format::Protobuf && ingest.keeps_client_bodies(signal, encoding.compression());
    let (body, sent) = match compression::decompress(encoding, raw, limit, keep) {
        Ok(decompressed) => decompressed,
        Err(DecompressError::TooLarge { .. }) => return too_large(),
        Err(e @ DecompressError::Corrupt(_)) => return malformed(&e.to_string()),
    };
    match ingest.accept(signal, format, body, sent).await {
        Ok(outcome) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, content_type(format))],
            export_response(signal, &outcome, format),
        )
            .into_response(),
        Err(refusal @ Refusal::Malformed(_)) => {
            error(StatusCode::BAD_REQUEST, RpcCode::InvalidArgument, &refusal.to_string(), format)
        }
        Err(refusal @ (Refusal::Busy(_) | Refusal::Memory | Refusal::NotStored(_))) => {
            retry_later(&refusal.to_string(), format)
        }
    }
}

/// Reads up to `limit` bytes of `body`, keeping none.
async fn discard(mut body: Body, limit: usize) {
    let mut read = 0;
    while read <= limit {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |data| data.len()),
            _ => break,
        }
    }
}

/// 503 with `Retry-After: 1`: the answer to backpressure and to memory near its limit.
fn retry_later(message: &str, format: Format) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, RpcCode::Unavailable, message, format);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
