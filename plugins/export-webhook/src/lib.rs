//! `export-webhook`: each batch as a JSON document to any URL — alert hooks, automation, a
//! service that wants telemetry without speaking OTLP.
//!
//! One request per `max_items` items:
//!
//! ```json
//! {"signal": "logs", "part": 1, "parts": 1, "items": [
//!   {"time_unix_nano": "1700000000000000000", "severity_text": "ERROR", "body": "disk full",
//!    "attributes": {"host": "a"}, "resource": {"service.name": "api"}}]}
//! ```
//!
//! Spans carry name, IDs (hex), kind, times, status code and attributes; metrics their name,
//! description, unit and number of data points; log records their time, severity, body, IDs and
//! attributes. Times are strings of Unix nanoseconds, as in OTLP/JSON.
//!
//! ```toml
//! [exporters.alerts]
//! type = "plugin"
//! plugin = "../plugins/dist/export-webhook.wasm"
//! endpoint = "https://hooks.example.com"
//! headers = { "x-hook-token" = { env = "HOOK_TOKEN" } }
//! config = { path = "/sluice/alerts", max_items = 100 }
//! ```

use serde::{Deserialize, Serialize};
use sluice_sdk::json::Attributes;
use sluice_sdk::prelude::*;

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookExporter {
    /// Path (and query) appended to the exporter's endpoint.
    pub path: String,
    /// `POST` (the default), `PUT` or `PATCH`.
    pub method: Method,
    /// Items per document; a larger batch becomes several requests.
    pub max_items: usize,
    /// Whether each item carries its resource's attributes.
    pub include_resource: bool,
}

impl Default for WebhookExporter {
    fn default() -> Self {
        Self { path: "/".into(), method: Method::Post, max_items: 1000, include_resource: true }
    }
}

/// One document: a batch, or one `max_items` part of it. Serialized straight from the batch's
/// bytes (no intermediate JSON tree).
#[derive(Serialize)]
struct Document<'a> {
    signal: &'static str,
    part: usize,
    parts: usize,
    items: &'a [Record<'a>],
}

#[derive(Serialize)]
#[serde(untagged)]
enum Record<'a> {
    Span {
        name: &'a str,
        trace_id: Option<String>,
        span_id: Option<String>,
        parent_span_id: Option<String>,
        kind: u64,
        start_time_unix_nano: String,
        end_time_unix_nano: String,
        status_code: u64,
        attributes: Attributes<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        resource: Option<Attributes<'a>>,
    },
    Metric {
        name: &'a str,
        description: &'a str,
        unit: &'a str,
        data_points: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        resource: Option<Attributes<'a>>,
    },
    Log {
        time_unix_nano: String,
        severity_number: u64,
        severity_text: &'a str,
        body: json::Value<'a>,
        trace_id: Option<String>,
        span_id: Option<String>,
        attributes: Attributes<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        resource: Option<Attributes<'a>>,
    },
}

fn id(bytes: &[u8]) -> Option<String> {
    (!bytes.is_empty()).then(|| json::hex(bytes))
}

fn record<'a>(signal: Signal, bytes: &'a [u8], resource: Option<Attributes<'a>>) -> Record<'a> {
    match signal {
        Signal::Traces => {
            let span = SpanView::new(bytes);
            let (start, end) = span.times();
            Record::Span {
                name: span.name(),
                trace_id: id(span.trace_id()),
                span_id: id(span.span_id()),
                parent_span_id: id(span.parent_span_id()),
                kind: span.kind(),
                start_time_unix_nano: start.to_string(),
                end_time_unix_nano: end.to_string(),
                status_code: span.status_code(),
                attributes: Attributes(span.attributes()),
                resource,
            }
        }
        Signal::Metrics => {
            let metric = MetricView::new(bytes);
            Record::Metric {
                name: metric.name(),
                description: metric.description(),
                unit: metric.unit(),
                data_points: metric.data_points(),
                resource,
            }
        }
        Signal::Logs => {
            let log = LogRecordView::new(bytes);
            Record::Log {
                time_unix_nano: log.time_unix_nano().to_string(),
                severity_number: log.severity_number(),
                severity_text: log.severity_text(),
                body: json::Value(log.body()),
                trace_id: id(log.trace_id()),
                span_id: id(log.span_id()),
                attributes: Attributes(log.attributes()),
                resource,
            }
        }
    }
}

impl Exporter for WebhookExporter {
    fn init(config: &Config) -> Result<Self, String> {
        let plugin: Self = config.parse()?;
        if !plugin.path.starts_with('/') {
            return Err(format!("`path` must start with `/`, not `{}`", plugin.path));
        }
        if plugin.max_items == 0 {
            return Err("`max_items` must be at least 1".into());
        }
        if matches!(plugin.method, Method::Get | Method::Delete) {
            return Err("`method` must be POST, PUT or PATCH: the document is the body".into());
        }
        Ok(plugin)
    }

    fn export(&self, batch: &Batch<'_>) -> Result<Vec<Request>, String> {
        let signal = batch.signal();
        let items: Vec<Record<'_>> = batch
            .items()
            .map(|i| {
                record(signal, i.bytes, self.include_resource.then(|| Attributes(i.resource.attributes())))
            })
            .collect();
        let parts = items.len().div_ceil(self.max_items);
        items
            .chunks(self.max_items)
            .enumerate()
            .map(|(n, chunk)| {
                let document = Document { signal: signal.as_str(), part: n + 1, parts, items: chunk };
                Request::new(self.method, self.path.clone()).json(&document)
            })
            .collect()
    }
}

sluice_sdk::export_exporter!(WebhookExporter);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked() {
        let plugin = WebhookExporter::init(&Config::default()).expect("defaults are valid");
        assert_eq!((plugin.path.as_str(), plugin.method, plugin.max_items), ("/", Method::Post, 1000));
        for (config, message) in [
            (r#"{"max_items": 0}"#, "at least 1"),
            (r#"{"method": "GET"}"#, "POST, PUT or PATCH"),
            (r#"{"path": "hook"}"#, "must start with `/`"),
        ] {
            let config = Config::from_json(config).expect("json");
            assert!(WebhookExporter::init(&config).expect_err(message).contains(message));
        }
    }

    #[test]
    fn empty_batch_sends_nothing() {
        let plugin = WebhookExporter::init(&Config::default()).expect("valid");
        assert!(plugin.export(&Batch::new(Signal::Logs, &[])).expect("renders").is_empty());
    }
}
