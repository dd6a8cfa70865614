//! `type = "prometheus_remote_write"`: its table, beside the shared client keys
//! ([`ClientConfig`](crate::config::ClientConfig)).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::config::default_expiry;
use crate::config::units::HumanDuration;

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
    /// Resource attributes copied onto every series as labels.
    #[serde(default)]
    pub resource_to_labels: Vec<String>,
    /// Labels added to every series.
    #[serde(default)]
    pub const_labels: BTreeMap<String, String>,
    /// How long accumulated (delta → cumulative) state is kept for a series that stops.
    #[serde(default = "default_expiry")]
    pub expiry: HumanDuration,
}
