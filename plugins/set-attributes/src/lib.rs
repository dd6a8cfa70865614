//! `set-attributes`: insert, update, upsert, delete and rename resource and item attributes,
//! rename metrics, and redact attribute values by key pattern (masked or hashed).
//!
//! ```toml
//! [[pipelines.default.processors]]
//! plugin = "plugins/set-attributes.wasm"
//! [pipelines.default.processors.config]
//! resource = [
//!   { key = "system", value = "graphistry" },                 # upsert is the default action
//!   { key = "instance", value = "${GRAPHISTRY_INSTANCE:-dev}", action = "insert" },
//! ]
//! attributes = [{ key = "internal.debug", action = "delete" }, { key = "usr", action = "rename", new_key = "user.id" }]
//! rename_metrics = { "gpu_util" = "gpu.utilization" }
//! redact = [{ keys = "*password*", mode = "mask" }, { keys = "user.email", mode = "hash" }]
//! ```
//!
//! `attributes` and `redact` apply to spans and log records; on metrics `attributes` apply to
//! every data point. Hashing is SHA-256 (hex), so equal values stay joinable without being
//! readable.

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use sluice_sdk::prelude::*;
use sluice_sdk::transform::Value;

/// A value as written in TOML.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TomlValue {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
}

impl From<&TomlValue> for Value {
    fn from(value: &TomlValue) -> Self {
        match value {
            TomlValue::Bool(b) => Value::Bool(*b),
            TomlValue::Int(i) => Value::Int(*i),
            TomlValue::Float(f) => Value::Double(*f),
            TomlValue::Str(s) => Value::Str(s.clone()),
        }
    }
}

/// What to do with a key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Set if absent.
    Insert,
    /// Set if present.
    Update,
    /// Set either way.
    #[default]
    Upsert,
    /// Remove.
    Delete,
    /// Rename to `new_key`.
    Rename,
}

/// One attribute rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The attribute key.
    pub key: String,
    /// The value, for insert, update and upsert.
    #[serde(default)]
    pub value: Option<TomlValue>,
    /// The action.
    #[serde(default)]
    pub action: Action,
    /// The new key, for rename.
    #[serde(default)]
    pub new_key: Option<String>,
}

/// How to redact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedactMode {
    /// Replace the value with `***`.
    Mask,
    /// Replace the value with its SHA-256, hex-encoded.
    Hash,
}

/// One redaction rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redact {
    /// Keys to redact (`*` wildcards).
    pub keys: Pattern,
    /// How.
    pub mode: RedactMode,
}

/// The plugin's config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SetAttributes {
    /// Rules for resource attributes.
    pub resource: Vec<Rule>,
    /// Rules for span and log record attributes, and metric data-point attributes.
    pub attributes: Vec<Rule>,
    /// Old metric name → new metric name.
    pub rename_metrics: BTreeMap<String, String>,
    /// Redaction of span and log record attribute values.
    pub redact: Vec<Redact>,
}

fn check(rules: &[Rule], section: &str) -> Result<(), String> {
    for rule in rules {
        let needs_value = matches!(rule.action, Action::Insert | Action::Update | Action::Upsert);
        if needs_value && rule.value.is_none() {
            return Err(format!("{section}: `{}` needs a `value` for {:?}", rule.key, rule.action));
        }
        if rule.action == Action::Rename && rule.new_key.is_none() {
            return Err(format!("{section}: `{}` needs a `new_key` to rename to", rule.key));
        }
    }
    Ok(())
}

fn apply(rules: &[Rule], edits: &mut Edits) {
    for rule in rules {
        match (rule.action, &rule.value, &rule.new_key) {
            (Action::Insert, Some(value), _) => edits.insert(&rule.key, Value::from(value)),
            (Action::Update, Some(value), _) => edits.update(&rule.key, Value::from(value)),
            (Action::Upsert, Some(value), _) => edits.upsert(&rule.key, Value::from(value)),
            (Action::Delete, _, _) => edits.delete(&rule.key),
            (Action::Rename, _, Some(new_key)) => edits.rename(&rule.key, new_key),
            _ => {}
        }
    }
}

impl SetAttributes {
    fn redact<'a>(&self, attributes: impl Iterator<Item = (&'a [u8], AnyValue<'a>)>, edits: &mut Edits) {
        if self.redact.is_empty() {
            return;
        }
        for (key, value) in attributes {
            let Ok(key) = std::str::from_utf8(key) else { continue };
            let Some(rule) = self.redact.iter().find(|r| r.keys.matches(key)) else { continue };
            let replacement = match rule.mode {
                RedactMode::Mask => "***".to_string(),
                RedactMode::Hash => {
                    let text = match value {
                        AnyValue::String(b) | AnyValue::Bytes(b) => b.to_vec(),
                        AnyValue::Int(i) => i.to_string().into_bytes(),
                        AnyValue::Double(d) => d.to_string().into_bytes(),
                        AnyValue::Bool(b) => b.to_string().into_bytes(),
                        _ => Vec::new(),
                    };
                    Sha256::digest(&text).iter().map(|b| format!("{b:02x}")).collect()
                }
            };
            edits.upsert(key, replacement);
        }
    }
}

impl Transform for SetAttributes {
    fn init(config: &Config) -> Result<Self, String> {
        let plugin: Self = config.parse()?;
        check(&plugin.resource, "resource")?;
        check(&plugin.attributes, "attributes")?;
        Ok(plugin)
    }

    fn visits_items(&self) -> bool {
        !(self.attributes.is_empty() && self.redact.is_empty() && self.rename_metrics.is_empty())
    }

    fn resource(&self, _signal: Signal, _resource: &ResourceView<'_>, edits: &mut Edits) {
        apply(&self.resource, edits);
    }

    fn span(&self, span: &SpanView<'_>, _resource: &ResourceView<'_>, edits: &mut Edits) {
        apply(&self.attributes, edits);
        self.redact(span.attributes().map_while(Result::ok).map(|kv| (kv.key, kv.value)), edits);
    }

    fn metric(&self, metric: &MetricView<'_>, _resource: &ResourceView<'_>, edits: &mut Edits) {
        apply(&self.attributes, edits);
        if let Some(new_name) = self.rename_metrics.get(metric.name()) {
            edits.rename_metric(new_name);
        }
    }

    fn log(&self, log: &LogRecordView<'_>, _resource: &ResourceView<'_>, edits: &mut Edits) {
        apply(&self.attributes, edits);
        self.redact(log.attributes().map_while(Result::ok).map(|kv| (kv.key, kv.value)), edits);
    }
}

sluice_sdk::export_transform!(SetAttributes);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks_rules() {
        let ok = Config::from_json(r#"{"resource": [{"key": "system", "value": "graphistry"}], "redact": [{"keys": "*password*", "mode": "hash"}]}"#)
            .expect("json");
        assert!(SetAttributes::init(&ok).is_ok());
        let no_value =
            Config::from_json(r#"{"attributes": [{"key": "a", "action": "insert"}]}"#).expect("json");
        assert!(SetAttributes::init(&no_value).expect_err("missing value").contains("needs a `value`"));
        let no_new_key =
            Config::from_json(r#"{"attributes": [{"key": "a", "action": "rename"}]}"#).expect("json");
        assert!(SetAttributes::init(&no_new_key).is_err());
    }

    #[test]
    fn resource_rules_alone_leave_the_items_unread() {
        let plugin =
            |json: &str| SetAttributes::init(&Config::from_json(json).expect("json")).expect("valid");
        assert!(!plugin(r#"{"resource": [{"key": "system", "value": "graphistry"}]}"#).visits_items());
        assert!(plugin(r#"{"attributes": [{"key": "a", "value": "b"}]}"#).visits_items());
        assert!(plugin(r#"{"redact": [{"keys": "*password*", "mode": "mask"}]}"#).visits_items());
        assert!(plugin(r#"{"rename_metrics": {"a": "b"}}"#).visits_items());
    }
}
