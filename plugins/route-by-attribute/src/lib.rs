//! `route-by-attribute`: sends each item to the route named for the value of one attribute
//! (a tenant, say), looking at the item's attributes first and then its resource's.
//!
//! ```toml
//! [[pipelines.default.processors]]
//! plugin = "plugins/route-by-attribute.wasm"
//! config = { attribute = "tenant", routes = { acme = "acme", globex = "globex-cloud" } }
//!
//! [pipelines.default.routes]
//! acme = ["acme-otlp"]
//! globex-cloud = ["globex-otlp"]
//! ```
//!
//! Items whose value has no route (or that lack the attribute) take `default`, or the
//! pipeline's own exporters when `default` is not set.

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_sdk::prelude::*;

/// Where to look for the attribute.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The item's attributes, then its resource's.
    #[default]
    Either,
    /// Only the item's attributes.
    Item,
    /// Only the resource's attributes.
    Resource,
}

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteByAttribute {
    /// The attribute to read.
    pub attribute: String,
    /// Where to read it.
    #[serde(default)]
    pub source: Source,
    /// Attribute value → route name.
    pub routes: BTreeMap<String, String>,
    /// The route for values not in `routes`; the pipeline's exporters when absent.
    #[serde(default)]
    pub default: Option<String>,
}

impl RouteByAttribute {
    fn pick<'a>(&'a self, item: Option<&str>, resource: &ResourceView<'_>) -> Option<&'a str> {
        let value = match self.source {
            Source::Item => item,
            Source::Resource => resource.str_attribute(&self.attribute),
            Source::Either => item.or_else(|| resource.str_attribute(&self.attribute)),
        };
        value.and_then(|v| self.routes.get(v)).or(self.default.as_ref()).map(String::as_str)
    }
}

impl Router for RouteByAttribute {
    fn init(config: &Config) -> Result<Self, String> {
        let plugin: Self = config.parse()?;
        if plugin.attribute.is_empty() {
            return Err("`attribute` must name an attribute".into());
        }
        Ok(plugin)
    }

    fn route_span(&self, span: &SpanView<'_>, resource: &ResourceView<'_>) -> Option<&str> {
        self.pick(span.str_attribute(&self.attribute), resource)
    }

    fn route_metric(&self, _metric: &MetricView<'_>, resource: &ResourceView<'_>) -> Option<&str> {
        // Data-point attributes differ per point; a metric routes by its resource.
        self.pick(None, resource)
    }

    fn route_log(&self, log: &LogRecordView<'_>, resource: &ResourceView<'_>) -> Option<&str> {
        self.pick(log.str_attribute(&self.attribute), resource)
    }
}

sluice_sdk::export_router!(RouteByAttribute);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config() {
        let config =
            Config::from_json(r#"{"attribute": "tenant", "routes": {"acme": "a"}, "source": "resource"}"#)
                .expect("json");
        let plugin = RouteByAttribute::init(&config).expect("valid");
        assert_eq!(plugin.source, Source::Resource);
        assert_eq!(plugin.pick(None, &ResourceView::new(&[])), None);
        let empty = Config::from_json(r#"{"attribute": "", "routes": {}}"#).expect("json");
        assert!(RouteByAttribute::init(&empty).is_err());
    }
}
