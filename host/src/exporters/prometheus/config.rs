//! `type = "prometheus"`: its table.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::config::units::HumanDuration;
use crate::config::{ListenAddress, default_expiry};

/// `type = "prometheus"`: serves the metrics it receives for Prometheus to scrape.
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
    /// Resource attributes copied onto every series as labels.
    #[serde(default)]
    pub resource_to_labels: Vec<String>,
    /// Labels added to every series.
    #[serde(default)]
    pub const_labels: BTreeMap<String, String>,
    /// A series not updated for this long disappears from the endpoint.
    #[serde(default = "default_expiry")]
    pub expiry: HumanDuration,
}
