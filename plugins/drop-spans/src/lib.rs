//! `drop-spans`: a filter that drops spans by name and attribute, log records by severity, and
//! metrics by name.
//!
//! ```toml
//! [[pipelines.default.processors]]
//! plugin = "plugins/drop-spans.wasm"
//! config = { span_names = ["GET /healthz", "*.list"], span_attributes = { "http.route" = ["/healthz"] }, min_log_severity = 9, metric_names = ["go_*"] }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_sdk::pattern::PatternSet;
use sluice_sdk::prelude::*;

/// The plugin's config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DropSpans {
    /// Drop spans whose name matches any of these patterns (compiled into one matcher).
    pub span_names: PatternSet,
    /// Drop spans with an attribute (key) whose string value matches any of the patterns.
    pub span_attributes: BTreeMap<String, PatternSet>,
    /// Drop log records whose severity number is set and below this (9 = INFO).
    pub min_log_severity: u64,
    /// Drop metrics whose name matches any of these patterns.
    pub metric_names: PatternSet,
}

impl Filter for DropSpans {
    fn init(config: &Config) -> Result<Self, String> {
        config.parse()
    }

    fn keep_span(&self, span: &SpanView<'_>, _resource: &ResourceView<'_>) -> bool {
        if self.span_names.matches(span.name()) {
            return false;
        }
        !self
            .span_attributes
            .iter()
            .any(|(key, patterns)| span.str_attribute(key).is_some_and(|value| patterns.matches(value)))
    }

    fn keep_metric(&self, metric: &MetricView<'_>, _resource: &ResourceView<'_>) -> bool {
        !self.metric_names.matches(metric.name())
    }

    fn keep_log(&self, log: &LogRecordView<'_>, _resource: &ResourceView<'_>) -> bool {
        let severity = log.severity_number();
        severity == 0 || severity >= self.min_log_severity
    }
}

sluice_sdk::export_filter!(DropSpans);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_and_rejects_typos() {
        let config =
            Config::from_json(r#"{"span_names": ["GET /healthz"], "min_log_severity": 9}"#).expect("json");
        let plugin = DropSpans::init(&config).expect("valid");
        assert_eq!(plugin.min_log_severity, 9);
        let typo = Config::from_json(r#"{"span_name": ["x"]}"#).expect("json");
        assert!(DropSpans::init(&typo).expect_err("typo").contains("unknown field `span_name`"));
    }
}
