//! `type = "loadbalancing"`: its table, beside the shared client keys
//! ([`ClientConfig`](crate::config::ClientConfig)) that every backend uses.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::config::units::HumanDuration;
use crate::exporters::otlp::config::{BatchConfig, CompressionConfig, OtlpExporterConfig, OtlpProtocol};

/// `type = "loadbalancing"`: each item goes to the backend that owns its routing key.
///
/// ```toml
/// [exporters.gateways]
/// type = "loadbalancing"
/// routing_key = "trace_id"
/// resolver = { dns = { hostname = "sluice-gateway-headless", port = 4317 } }
/// protocol = "grpc"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancingExporterConfig {
    /// What decides an item's backend.
    #[serde(default)]
    pub routing_key: RoutingKey,
    /// Where the backends' addresses come from.
    pub resolver: ResolverConfig,
    /// `grpc`, `http/protobuf` or `http/json`, for every backend.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// `gzip` (default), `zstd` or `none`.
    #[serde(default)]
    pub compression: CompressionConfig,
    /// Merging batches into requests, per backend.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Requests in flight at once, per backend.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_concurrency() -> usize {
    4
}

/// What an item's backend is chosen by. `trace_id` and `metric` are the fine-grained keys, and
/// each stands in for the other where it does not apply: with either, spans and log records go
/// by trace ID and metric data points by stream, so one exporter serves an agent's every signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutingKey {
    /// A span's or log record's trace ID: a trace's items meet on one backend (tail sampling,
    /// per-trace rules). Log records without one go by `service`; metrics as with `metric`.
    #[default]
    TraceId,
    /// The resource's `service.name`: a service's items meet on one backend.
    Service,
    /// A metric's name and its data point's attributes: each metric stream is accumulated and
    /// served by one backend (delta to cumulative, Prometheus). Spans and logs as with
    /// `trace_id`.
    Metric,
    /// All of the resource's attributes.
    Resource,
}

/// `resolver = { static = [...] }` or `resolver = { dns = { ... } }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum ResolverConfig {
    /// A fixed list of backend URLs.
    Static(Vec<Spanned<String>>),
    /// The addresses a DNS name resolves to (a headless Kubernetes Service), looked up again
    /// every `interval`.
    Dns(DnsResolverConfig),
}

/// `resolver = { dns = { hostname = "...", port = 4317 } }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsResolverConfig {
    /// The name to look up (A and AAAA records).
    pub hostname: Spanned<String>,
    /// The backends' port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// `http` (default) or `https` (then `tls` applies, and the certificates must name the
    /// addresses, or `tls.server_name` the name they carry).
    #[serde(default)]
    pub scheme: Scheme,
    /// How often the name is looked up again.
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// How long one lookup may take.
    #[serde(default = "default_lookup_timeout")]
    pub timeout: HumanDuration,
    /// The DNS server to ask (`ip:port`); by default the system's (`/etc/resolv.conf`, with its
    /// search domains).
    #[serde(default)]
    pub server: Option<Spanned<String>>,
}

fn default_port() -> u16 {
    4317
}

fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

fn default_lookup_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

/// The scheme of the backend URLs a DNS resolver makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain text.
    #[default]
    Http,
    /// TLS.
    Https,
}

impl DnsResolverConfig {
    /// The DNS server to ask, if one is set and valid.
    pub fn server_address(&self) -> Result<Option<SocketAddr>, String> {
        let Some(server) = &self.server else { return Ok(None) };
        server.get_ref().parse().map(Some).map_err(|_| {
            format!(
                "`server = \"{}\"` is not an `ip:port` address (e.g. \"10.96.0.10:53\")",
                server.get_ref()
            )
        })
    }

    /// The backend URL for one resolved address.
    pub fn url(&self, address: std::net::IpAddr) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}", SocketAddr::new(address, self.port))
    }
}

impl LoadBalancingExporterConfig {
    /// The OTLP exporter config of one backend: these settings, with its URL as the endpoint.
    pub fn backend(&self, url: &str) -> OtlpExporterConfig {
        OtlpExporterConfig {
            protocol: self.protocol,
            endpoint: Some(Spanned::new(0..0, url.to_string())),
            traces_endpoint: None,
            metrics_endpoint: None,
            logs_endpoint: None,
            compression: self.compression,
            batch: self.batch.clone(),
            concurrency: self.concurrency,
        }
    }
}
