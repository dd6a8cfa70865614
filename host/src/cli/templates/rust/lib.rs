//! {{name}}: a Sluice filter plugin. It drops the spans whose name is in its config's
//! `span_names` (by default, health checks).

use sluice_sdk::prelude::*;

struct {{type}} {
    span_names: Vec<String>,
}

impl Filter for {{type}} {
    const SIGNALS: Signals = Signals::TRACES;

    fn init(config: &Config) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Settings {
            #[serde(default = "default_names")]
            span_names: Vec<String>,
        }
        fn default_names() -> Vec<String> {
            vec!["GET /healthz".into(), "GET /readyz".into()]
        }
        let settings: Settings = config.parse()?;
        Ok(Self { span_names: settings.span_names })
    }

    fn keep_span(&self, span: &SpanView<'_>, _resource: &ResourceView<'_>) -> bool {
        !self.span_names.iter().any(|name| name == span.name())
    }
}

sluice_sdk::export_filter!({{type}});
