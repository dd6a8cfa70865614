//! `type = "debug"`: its table.

use serde::Deserialize;

/// How much the debug exporter prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    /// One line per batch: signal, `service.name`, item count.
    Summary,
    /// The whole batch as OTLP JSON.
    Detailed,
}

/// `type = "debug"`.
///
/// ```toml
/// [exporters.console]
/// type = "debug"
/// verbosity = "summary"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugExporterConfig {
    /// `verbosity = "summary" | "detailed"`.
    #[serde(default = "summary")]
    pub verbosity: Verbosity,
}

fn summary() -> Verbosity {
    Verbosity::Summary
}
