//! `type = "plugin"`: its table, beside the shared client keys
//! ([`ClientConfig`](crate::config::ClientConfig)).

use std::path::PathBuf;

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::config::PluginLimits;

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
    /// The `.wasm` component, relative to the config file.
    pub plugin: Spanned<PathBuf>,
    /// The file's expected SHA-256 (hex); a different file is refused.
    #[serde(default)]
    pub sha256: Option<Spanned<String>>,
    /// The plugin's own settings, handed to its `init` as JSON. Filled from `config_file` when
    /// that is given.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// A TOML file (relative to this one) holding the plugin's settings instead of `config`.
    #[serde(default)]
    pub config_file: Option<Spanned<PathBuf>>,
    /// Memory and time limits of one plugin call.
    #[serde(default)]
    pub limits: PluginLimits,
    /// Environment variables the plugin may read; it sees no others.
    #[serde(default)]
    pub env: Vec<Spanned<String>>,
    /// The destination's base URL; each request's path is appended to it.
    pub endpoint: Spanned<String>,
}
