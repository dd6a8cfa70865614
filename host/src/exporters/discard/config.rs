//! `type = "discard"`: its table (empty).

use serde::Deserialize;

/// `type = "discard"`: takes no settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscardExporterConfig {}
