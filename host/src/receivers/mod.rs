//! Receivers: where telemetry enters the host. Each receiver type is a folder with its config
//! table beside its code, listed once in [`registry`].
//!
//! # Layout
//! - [`otlp`]: OTLP over gRPC and HTTP.
//! - [`gpu`]: NVIDIA GPUs sampled through NVML, as OTLP metrics.
//! - [`kafka`]: OTLP requests read from Kafka topics in a consumer group.
//! - [`ingest`]: what every receiver does with a batch — validate, count, enqueue to every
//!   pipeline it feeds or none.
//! - [`registry`]: how receiver types are known — the [`ReceiverType`](registry::ReceiverType)
//!   trait and the list that names them.
//! - [`server`]: the HTTP server under every listener.

pub mod gpu;
pub mod ingest;
pub mod kafka;
pub mod otlp;
pub mod registry;
pub mod server;

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

registry::receiver_types! {
    /// `type = "otlp"`: OTLP over gRPC and HTTP.
    Otlp = "otlp" => otlp::config::OtlpReceiverConfig,
    /// `type = "gpu"`: samples NVIDIA GPUs as OTLP metrics.
    Gpu = "gpu" => gpu::config::GpuReceiverConfig,
    /// `type = "kafka"`: OTLP requests from Kafka topics, as one member of a consumer group.
    Kafka = "kafka" => kafka::config::KafkaReceiverConfig,
}

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

pub(crate) fn spawn_server<L>(
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
    let task = tokio::spawn(server::run(listener, router, shutdown.clone()));
    Ok(Listening { label, address, task })
}
