//! `type = "plugin"`: its table, beside the shared client keys
//! ([`ClientConfig`](crate::config::ClientConfig)) and plugin keys
//! ([`PluginRef`](crate::config::PluginRef)).

use serde::Deserialize;
use serde_spanned::Spanned;

/// `type = "plugin"`: a custom destination. The plugin (the `exporter` world) turns each batch
/// into HTTP requests; the host sends them to `endpoint` with the credentials, TLS, retries and
/// queue configured here, exactly as for the built-in network exporters.
///
/// ```toml
/// [exporters.loki]
/// type = "plugin"
/// plugin = "../plugins/dist/export-loki.wasm"      # relative to this TOML file
/// endpoint = "https://logs.example.com"
/// auth = { bearer = { token = { env = "LOKI_TOKEN" } } }
/// config = { labels = ["service.name"] }
/// limits = { memory = "32MiB", timeout = "100ms" }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginExporterConfig {
    /// The destination's base URL; each request's path is appended to it.
    pub endpoint: Spanned<String>,
}
