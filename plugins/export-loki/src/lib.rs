//! `export-loki`: log records to Grafana Loki's push API (`POST /loki/api/v1/push`, JSON).
//!
//! Records are grouped into streams by their labels: the resource attributes named in `labels`
//! (dots and other characters Loki refuses in label names become `_`: `service.name` →
//! `service_name`), the `static_labels`, and `level` from the severity. Each line is the
//! record's body; its attributes, trace ID and span ID travel as Loki 3 structured metadata
//! (`structured_metadata = false` for older Loki).
//!
//! ```toml
//! [exporters.loki]
//! type = "plugin"
//! plugin = "../plugins/dist/export-loki.wasm"
//! endpoint = "http://loki:3100"
//! auth = { basic = { username = { env = "LOKI_USER" }, password = { env = "LOKI_TOKEN" } } }
//! config = { labels = ["service.name", "deployment.environment"], tenant = "graphistry" }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use sluice_sdk::prelude::*;

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LokiExporter {
    /// Resource attributes that become stream labels.
    pub labels: Vec<String>,
    /// Labels every stream gets.
    pub static_labels: BTreeMap<String, String>,
    /// Whether streams get a `level` label from the severity.
    pub level_label: bool,
    /// Whether attributes and trace context travel as structured metadata (Loki 3).
    pub structured_metadata: bool,
    /// The tenant (`X-Scope-OrgID`) for multi-tenant Loki.
    pub tenant: Option<String>,
    /// The push path, appended to the exporter's endpoint.
    pub path: String,
}

impl Default for LokiExporter {
    fn default() -> Self {
        Self {
            labels: vec!["service.name".into()],
            static_labels: BTreeMap::new(),
            level_label: true,
            structured_metadata: true,
            tenant: None,
            path: "/loki/api/v1/push".into(),
        }
    }
}

/// A label name Loki accepts: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn label_name(key: &str) -> String {
    let mut name: String =
        key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// The `level` label: the severity text as written, else the severity number's range name.
pub fn level(log: &LogRecordView<'_>) -> Option<String> {
    let text = log.severity_text();
    if !text.is_empty() {
        return Some(text.to_ascii_lowercase());
    }
    let name = match log.severity_number() {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => return None,
    };
    Some(name.into())
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl LokiExporter {
    fn stream_labels(
        &self,
        log: &LogRecordView<'_>,
        resource: &ResourceView<'_>,
    ) -> BTreeMap<String, String> {
        let mut labels = self.static_labels.clone();
        for key in &self.labels {
            if let Some(value) = resource.attribute(key) {
                labels.insert(label_name(key), json::text(value));
            }
        }
        if self.level_label
            && let Some(level) = level(log)
        {
            labels.insert("level".into(), level);
        }
        labels
    }

    fn metadata(&self, log: &LogRecordView<'_>) -> Map<String, Value> {
        let mut metadata: Map<String, Value> = log
            .attributes()
            .map_while(Result::ok)
            .map(|kv| (label_name(&String::from_utf8_lossy(kv.key)), Value::String(json::text(kv.value))))
            .collect();
        for (key, id) in [("trace_id", log.trace_id()), ("span_id", log.span_id())] {
            if !id.is_empty() {
                metadata.insert(key.into(), Value::String(json::hex(id)));
            }
        }
        metadata
    }
}

impl Exporter for LokiExporter {
    const SIGNALS: Signals = Signals::LOGS;

    fn init(config: &Config) -> Result<Self, String> {
        let plugin: Self = config.parse()?;
        if !plugin.path.starts_with('/') {
            return Err(format!("`path` must start with `/`, not `{}`", plugin.path));
        }
        Ok(plugin)
    }

    fn export(&self, batch: &Batch<'_>) -> Result<Vec<Request>, String> {
        let mut streams: BTreeMap<BTreeMap<String, String>, Vec<Value>> = BTreeMap::new();
        let fallback_time = now_nanos();
        for (log, resource) in batch.logs() {
            let time = match log.time_unix_nano() {
                0 => fallback_time,
                t => t,
            };
            let mut entry = vec![Value::String(time.to_string()), Value::String(json::text(log.body()))];
            if self.structured_metadata {
                let metadata = self.metadata(&log);
                if !metadata.is_empty() {
                    entry.push(Value::Object(metadata));
                }
            }
            streams.entry(self.stream_labels(&log, &resource)).or_default().push(Value::Array(entry));
        }
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let streams: Vec<Value> = streams
            .into_iter()
            .map(|(labels, values)| json!({ "stream": labels, "values": values }))
            .collect();
        let mut request = Request::post(self.path.clone()).json(&json!({ "streams": streams }))?;
        if let Some(tenant) = &self.tenant {
            request = request.header("x-scope-orgid", tenant.clone());
        }
        Ok(vec![request])
    }
}

sluice_sdk::export_exporter!(LokiExporter);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_follow_loki_rules() {
        assert_eq!(label_name("service.name"), "service_name");
        assert_eq!(label_name("k8s.pod-name"), "k8s_pod_name");
        assert_eq!(label_name("1st"), "_1st");
    }

    #[test]
    fn config_defaults_and_typos() {
        let plugin = LokiExporter::init(&Config::default()).expect("defaults are valid");
        assert_eq!(plugin.labels, ["service.name"]);
        assert_eq!(plugin.path, "/loki/api/v1/push");
        let typo = Config::from_json(r#"{"label": ["x"]}"#).expect("json");
        assert!(LokiExporter::init(&typo).is_err());
        let bad_path = Config::from_json(r#"{"path": "push"}"#).expect("json");
        assert!(LokiExporter::init(&bad_path).expect_err("relative").contains("must start with `/`"));
    }
}
