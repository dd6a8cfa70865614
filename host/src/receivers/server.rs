//! The HTTP server under every listener (OTLP/gRPC, OTLP/HTTP, the admin endpoints, the
//! Prometheus scrape endpoint): HTTP/1.1 and HTTP/2 on one port, with graceful shutdown.
//!
//! It is `axum::serve` with one change that `axum::serve` cannot make: HTTP/2 peers may send
//! DATA frames up to [`HTTP2_MAX_FRAME_SIZE`] instead of the protocol's default 16 KiB. A
//! 100-span export request is ~40 KiB; split into 16 KiB frames it reached the handler as several
//! chunks that had to be copied together (5% of a forwarding host's time). In one frame it
//! arrives in one piece, usually in an allocation of its own that is queued as it is (ingest
//! copies a body only when it shares its allocation with other data, so that a queued batch never
//! keeps a connection's read buffer alive).

use std::pin::pin;

use axum::serve::Listener;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The largest HTTP/2 frame a peer may send: a request of up to 1 MiB arrives in one frame.
/// Frames are buffered whole, but the flow-control window (hyper's default, 1 MiB per stream)
/// bounds a stream's unread data either way.
pub const HTTP2_MAX_FRAME_SIZE: u32 = 1 << 20;

/// Serves `router` on every connection `listener` accepts until `stop` is cancelled; then stops
/// accepting, asks each connection to finish what it has in flight, and returns once they have.
pub async fn run<L>(mut listener: L, router: axum::Router, stop: CancellationToken)
where
    L: Listener,
    L::Io: Send,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http2().max_frame_size(HTTP2_MAX_FRAME_SIZE);
    let connections = TaskTracker::new();
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let (builder, service, stop) =
            (builder.clone(), TowerToHyperService::new(router.clone()), stop.clone());
        connections.spawn(async move {
            let mut connection = pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), service));
            tokio::select! {
                // A connection that fails has nobody to tell but the peer, which saw it.
                _ = connection.as_mut() => return,
                () = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::post;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use tokio::net::TcpListener;

    use super::*;

    /// How many DATA frames the request body came in.
    async fn count_frames(mut body: Body) -> String {
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            frames += usize::from(frame.expect("a frame").is_data());
        }
        frames.to_string()
    }

    async fn frames_for(
        client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
        url: &str,
        len: usize,
    ) -> String {
        let request =
            axum::http::Request::post(url).body(Full::new(Bytes::from(vec![7u8; len]))).expect("request");
        let response = client.request(request).await.expect("answered");
        let body = response.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8(body.to_vec()).expect("text")
    }

    #[tokio::test]
    async fn an_http2_request_up_to_the_frame_limit_arrives_in_one_frame_and_shutdown_drains() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        let stop = CancellationToken::new();
        let server =
            tokio::spawn(run(listener, axum::Router::new().route("/", post(count_frames)), stop.clone()));

        let http2 = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
        // The first request on a connection is cut by the protocol's initial 64 KiB window
        // until the server's larger one reaches the client.
        frames_for(&http2, &url, 200_000).await;
        assert_eq!(frames_for(&http2, &url, 200_000).await, "1", "one frame, not 16 KiB ones");
        let frames: usize = frames_for(&http2, &url, 3 << 20).await.parse().expect("a count");
        assert!(frames >= 3, "a 3 MiB body in frames of at most 1 MiB, got {frames}");
        let http1 = Client::builder(TokioExecutor::new()).build_http();
        assert_ne!(frames_for(&http1, &url, 1000).await, "0", "HTTP/1.1 on the same port");

        stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .expect("drained")
            .expect("ran");
    }
}
