//! What parsing a config file produced, before and after validation: each component's typed
//! table (or `None` where its table had errors, already reported) with the places needed to
//! report on it. Parsing fills it; validation reads it.

use std::collections::BTreeMap;
use std::ops::Range;

use super::schema::*;

/// A component whose table parsed, with the places needed to report on it later.
#[derive(Debug)]
pub(super) struct Component<T> {
    /// Span of its `[section.name]` header or inline key.
    pub header: Option<Range<usize>>,
    /// The typed config; `None` when the table had errors (already reported).
    pub config: Option<T>,
}

/// What parsing produced, including components whose tables had errors.
pub(super) struct Parsed<'a> {
    pub service: ServiceConfig,
    pub receivers: BTreeMap<ComponentId, Component<ReceiverConfig>>,
    pub exporters: BTreeMap<ComponentId, Component<ExporterConfig>>,
    pub pipelines: BTreeMap<ComponentId, Component<PipelineConfig>>,
    /// Every name in `[receivers]`, valid or not, so a bad table isn't also reported as missing.
    pub declared_receivers: Vec<String>,
    /// Every name in `[exporters]`, likewise.
    pub declared_exporters: Vec<String>,
    /// The folder of the config file.
    pub base_dir: std::path::PathBuf,
    /// The environment, as substitution saw it: where secrets given as `{ env = .. }` are read.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Parsed<'_> {
    /// The config, once [`check`] found no errors (so every component parsed).
    pub fn into_config(self) -> Config {
        fn typed<T>(map: BTreeMap<ComponentId, Component<T>>) -> BTreeMap<ComponentId, T> {
            map.into_iter().filter_map(|(id, c)| Some((id, c.config?))).collect()
        }
        Config {
            service: self.service,
            receivers: typed(self.receivers),
            exporters: typed(self.exporters),
            pipelines: typed(self.pipelines),
            base_dir: self.base_dir,
        }
    }
}
