//! `type = "prometheus_remote_write"`: its table, beside the shared client keys
//! ([`ClientConfig`](crate::config::ClientConfig)) and series keys
//! ([`SeriesConfig`](crate::config::SeriesConfig)).

use serde::Deserialize;
use serde_spanned::Spanned;

/// `type = "prometheus_remote_write"`: pushes metrics with the remote write 1.0 protocol
/// (snappy-compressed protobuf), with the same credentials, TLS and retries as `otlp`.
///
/// ```toml
/// [exporters.mimir]
/// type = "prometheus_remote_write"
/// endpoint = "https://prometheus.example.com/api/v1/write"
/// auth = { basic = { username = { env = "PROM_USER" }, password = { file = "/run/secrets/prom" } } }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteExporterConfig {
    /// The remote write URL.
    pub endpoint: Spanned<String>,
}
