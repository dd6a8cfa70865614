//! The plugin's `config` table from the pipeline TOML.
//!
//! ```toml
//! [[pipelines.default.processors]]
//! plugin = "plugins/drop-spans.wasm"
//! config = { span_names = ["GET /healthz"], min_severity = 9 }
//! ```
//!
//! The host hands it over as JSON; [`Config::parse`] turns it into a typed struct with serde,
//! and a type or field mistake becomes the message the host shows when it refuses the plugin.

use serde::de::DeserializeOwned;

/// The `config` table, as given in the TOML.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    value: serde_json::Value,
}

impl Config {
    /// Reads the JSON text the host passes to `init`.
    pub fn from_json(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_str(text)
            .map(|value| Self { value })
            .map_err(|e| format!("config is not valid JSON: {e}"))
    }

    /// Deserializes the table into `T` (use `#[serde(deny_unknown_fields)]` to catch typos).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        let value = if self.value.is_null() {
            serde_json::Value::Object(Default::default())
        } else {
            self.value.clone()
        };
        serde_json::from_value(value).map_err(|e| format!("invalid plugin config: {e}"))
    }

    /// The raw JSON value.
    pub fn json(&self) -> &serde_json::Value {
        &self.value
    }
}
