//! Receivers: where telemetry enters the host.
//!
//! # Layout
//! - [`grpc`] and [`http`]: the two OTLP transports.
//! - [`ingest`]: what both do with a body — validate, count, enqueue to every pipeline or none.
//! - [`compression`]: gzip and zstd with a hard output limit.
//! - [`gpu`]: NVIDIA GPUs sampled through NVML, as OTLP metrics.

pub mod compression;
pub mod gpu;
pub mod grpc;
pub mod http;
pub mod ingest;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{ComponentId, OtlpReceiverConfig};
use crate::metrics::Metrics;
use ingest::Ingest;

/// A listener that is bound and serving.
#[derive(Debug)]
pub struct Listening {
    /// `receiver `name` (transport)`, for logs.
    pub label: String,
    /// The bound address (the real port when the config said 0).
    pub address: SocketAddr,
    /// Ends once the server has stopped accepting and finished its in-flight requests.
    pub task: JoinHandle<()>,
}

/// Why a receiver could not start.
#[derive(Debug, thiserror::Error)]
#[error("{label}: cannot listen on {address}: {source}")]
pub struct StartError {
    label: String,
    address: SocketAddr,
    source: std::io::Error,
}

/// Binds every enabled transport of OTLP receiver `id` and starts serving. `feeds` holds, per signal,
/// the pipelines this receiver feeds. Servers stop accepting when `shutdown` is cancelled.
pub async fn start(
    id: &ComponentId,
    otlp: &OtlpReceiverConfig,
    feeds: &ingest::Feeds,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> Result<Vec<Listening>, StartError> {
    let auth = otlp.auth.as_ref().map(|crate::config::ReceiverAuthConfig::Bearer { token }| {
        Arc::new(crate::secret::Secret::new(token.get_ref().clone()))
    });
    let mut listening = Vec::new();
    if otlp.grpc.enabled {
        let receiver = grpc::GrpcReceiver {
            ingest: Ingest::new(id, "grpc", feeds.clone(), metrics.clone(), auth.clone()),
            max_message_size: otlp.grpc.max_message_size.as_usize(),
        };
        let label = format!("receiver `{id}` (grpc)");
        let router = grpc::router(Arc::new(receiver));
        listening.push(
            serve_maybe_tls(label, otlp.grpc.address.get_ref().0, router, otlp.grpc.tls.as_ref(), shutdown)
                .await?,
        );
    }
    if otlp.http.enabled {
        let receiver = http::HttpReceiver {
            ingest: Ingest::new(id, "http", feeds.clone(), metrics.clone(), auth.clone()),
            max_body_size: otlp.http.max_body_size.as_usize(),
        };
        let label = format!("receiver `{id}` (http)");
        let router = http::router(Arc::new(receiver));
        listening.push(
            serve_maybe_tls(label, otlp.http.address.get_ref().0, router, otlp.http.tls.as_ref(), shutdown)
                .await?,
        );
    }
    Ok(listening)
}

/// Like [`serve`], over TLS when `tls` is set.
async fn serve_maybe_tls(
    label: String,
    address: SocketAddr,
    router: axum::Router,
    tls: Option<&crate::config::ServerTlsConfig>,
    shutdown: &CancellationToken,
) -> Result<Listening, StartError> {
    let Some(tls) = tls else { return serve(label, address, router, shutdown).await };
    let fail = |source| StartError { label: label.clone(), address, source };
    let acceptor = crate::tls::acceptor(tls).map_err(|e| fail(std::io::Error::other(e)))?;
    let tcp = TcpListener::bind(address).await.map_err(fail)?;
    let listener = crate::tls::TlsListener::new(tcp, acceptor, label.clone()).map_err(fail)?;
    spawn_server(label.clone(), listener, router, shutdown).map_err(fail)
}

/// Binds `address` and serves `router` until `shutdown`, then drains in-flight requests.
pub async fn serve(
    label: String,
    address: SocketAddr,
    router: axum::Router,
    shutdown: &CancellationToken,
) -> Result<Listening, StartError> {
    let fail = |source| StartError { label: label.clone(), address, source };
    let listener = TcpListener::bind(address).await.map_err(fail)?;
    // Small OTLP answers must not wait for Nagle's algorithm and the peer's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    spawn_server(label.clone(), listener, router, shutdown).map_err(fail)
}

fn spawn_server<L>(
    label: String,
    listener: L,
    router: axum::Router,
    shutdown: &CancellationToken,
) -> std::io::Result<Listening>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: Send,
{
    let address = listener.local_addr()?;
    let stop = shutdown.clone().cancelled_owned();
    let task_label = label.clone();
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
            tracing::error!(component = %task_label, %error, "Server failed");
        }
    });
    Ok(Listening { label, address, task })
}
