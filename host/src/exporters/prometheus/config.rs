//! `type = "prometheus"`: its table, and the series keys it shares with
//! `type = "prometheus_remote_write"`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::config::ListenAddress;
use crate::config::units::HumanDuration;

/// `type = "prometheus"`: serves the metrics it receives for Prometheus to scrape. Its table
/// also holds the [`SeriesConfig`] keys.
///
/// ```toml
/// [exporters.prometheus]
/// type = "prometheus"
/// address = "0.0.0.0:8889"
/// resource_to_labels = ["k8s.cluster.name"]
/// const_labels = { deployment = "graphistry" }
/// expiry = "5m"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusExporterConfig {
    /// Where `/metrics` is served.
    pub address: Spanned<ListenAddress>,
}

/// How OTLP metrics become Prometheus series: keys of both `prometheus` and
/// `prometheus_remote_write` tables.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesConfig {
    /// Resource attributes copied onto every series as labels.
    #[serde(default)]
    pub resource_to_labels: Vec<String>,
    /// Labels added to every series.
    #[serde(default)]
    pub const_labels: BTreeMap<String, String>,
    /// A series not updated for this long is forgotten: it leaves the scrape endpoint, and its
    /// accumulated (delta → cumulative) state is dropped.
    #[serde(default = "default_expiry")]
    pub expiry: HumanDuration,
}

fn default_expiry() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
