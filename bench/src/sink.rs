//! `sluice-sink`: the fastest OTLP destination a forwarder can be benchmarked against.
//!
//! It reads every request's body whole and answers success (an empty `Export*ServiceResponse`,
//! over gRPC with `grpc-status: 0`, or over OTLP/HTTP) without decompressing or decoding
//! anything. A forwarder measured against it pays for its own work only: a destination that
//! cannot keep up (a whole collector sharing the load generator's core) makes the forwarder
//! refuse requests, and reading those costs CPU that delivers no spans. Whether destinations
//! *can* read what a forwarder sends is for the end-to-end tests, which use real collectors.
//!
//! ```sh
//! sluice-sink 4317
//! ```

use std::convert::Infallible;

use anyhow::Context;
use bytes::Bytes;
use futures::stream::{self, Iter};
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;

/// The frames of a unary gRPC answer: the message, then the trailers.
type GrpcFrames = Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

/// A gRPC answer, or an OTLP/HTTP one.
type Answer = Either<StreamBody<GrpcFrames>, Full<Bytes>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args().nth(1).context("usage: sluice-sink PORT")?.parse().context("PORT")?;
    let listener =
        TcpListener::bind(("127.0.0.1", port)).await.with_context(|| format!("bind port {port}"))?;
    loop {
        let (socket, _) = listener.accept().await.context("accept")?;
        let _ = socket.set_nodelay(true);
        tokio::spawn(async move {
            let serve =
                service_fn(
                    |request: Request<Incoming>| async move { Ok::<_, Infallible>(answer(request).await) },
                );
            // A connection that fails ends; the forwarder sees it and reconnects.
            let _ = Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(socket), serve).await;
        });
    }
}

/// Reads the request's body and answers success in its protocol.
async fn answer(request: Request<Incoming>) -> Response<Answer> {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
    let read = request.into_body().collect().await.is_ok();
    if !grpc {
        let status = if read { http::StatusCode::OK } else { http::StatusCode::BAD_REQUEST };
        let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        return response;
    }
    let mut trailers = HeaderMap::new();
    // 0 OK; 13 INTERNAL when the body could not be read.
    trailers.insert("grpc-status", HeaderValue::from_static(if read { "0" } else { "13" }));
    // An uncompressed, empty message: flag 0, length 0.
    let frames = vec![Ok(Frame::data(Bytes::from_static(&[0; 5]))), Ok(Frame::trailers(trailers))];
    let mut response = Response::new(Either::Left(StreamBody::new(stream::iter(frames))));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}
