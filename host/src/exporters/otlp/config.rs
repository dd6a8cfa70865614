//! `type = "otlp"`: its table, beside the shared client keys
//! ([`ClientConfig`](crate::config::ClientConfig)).

use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::config::Signal;
use crate::config::units::{ByteSize, HumanDuration};

/// `type = "otlp"`.
///
/// ```toml
/// [exporters.grafana]
/// type = "otlp"
/// protocol = "http/protobuf"
/// endpoint = "${SLUICE_OTLP_ENDPOINT}"          # /v1/traces etc. are appended for HTTP
/// auth = { basic = { username = { env = "SLUICE_OTLP_USERNAME" }, password = { file = "/run/secrets/otlp" } } }
/// headers = { "x-scope-orgid" = "graphistry" }
/// compression = "gzip"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporterConfig {
    /// `grpc`, `http/protobuf` or `http/json`.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Base URL: for gRPC the server; for HTTP the base to which `/v1/traces`, `/v1/metrics`
    /// and `/v1/logs` are appended.
    #[serde(default)]
    pub endpoint: Option<Spanned<String>>,
    /// Full URL for traces (HTTP), overriding `endpoint`.
    #[serde(default)]
    pub traces_endpoint: Option<Spanned<String>>,
    /// Full URL for metrics (HTTP), overriding `endpoint`.
    #[serde(default)]
    pub metrics_endpoint: Option<Spanned<String>>,
    /// Full URL for logs (HTTP), overriding `endpoint`.
    #[serde(default)]
    pub logs_endpoint: Option<Spanned<String>>,
    /// `gzip` (default), `zstd` or `none`.
    #[serde(default)]
    pub compression: CompressionConfig,
    /// Merging batches into requests.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_concurrency() -> usize {
    4
}

impl OtlpExporterConfig {
    /// The URL for `signal`: its own endpoint, else the base endpoint (+ `/v1/<signal>` for HTTP).
    pub fn url_for(&self, signal: Signal) -> Option<String> {
        let own = match signal {
            Signal::Traces => &self.traces_endpoint,
            Signal::Metrics => &self.metrics_endpoint,
            Signal::Logs => &self.logs_endpoint,
        };
        if let Some(url) = own {
            return Some(url.get_ref().clone());
        }
        let base = self.endpoint.as_ref()?.get_ref().trim_end_matches('/');
        Some(match self.protocol {
            OtlpProtocol::Grpc => base.to_string(),
            OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => format!("{base}/v1/{signal}"),
        })
    }
}

/// The OTLP transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies.
    #[serde(rename = "http/json")]
    HttpJson,
}

/// Request compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionConfig {
    /// gzip (the default; every OTLP receiver accepts it).
    #[default]
    Gzip,
    /// zstd.
    Zstd,
    /// None.
    None,
}

/// `batch = { ... }`: requests are merged up to these sizes, or sent when `timeout` passes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Items per request.
    pub max_items: u64,
    /// Bytes per request (before compression).
    pub max_bytes: ByteSize,
    /// How long a partial request may wait for more.
    pub timeout: HumanDuration,
}

impl BatchConfig {
    /// Whether a request of `items` items and `bytes` encoded bytes is within these sizes: the
    /// one rule for merging batches, in the exporter and in a pipeline's disk-queue records.
    pub fn holds(&self, items: u64, bytes: usize) -> bool {
        items <= self.max_items && bytes <= self.max_bytes.as_usize()
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_items: 8192,
            max_bytes: ByteSize::mib(4),
            timeout: HumanDuration(Duration::from_millis(200)),
        }
    }
}
