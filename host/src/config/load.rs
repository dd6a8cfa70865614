//! Reads a config file and turns it into a [`Config`] or every reason it can't be one.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml_edit::{Document, Item, Table, Value};

use super::diagnostic::{Diagnostic, Diagnostics};
use super::env::{self, OffsetMap};
use super::parsed::{Component, Parsed};
use super::schema::*;
use super::validate;
use crate::exporters::registry::ExporterType;

/// A config that passed validation, with the warnings worth logging about it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// Things that are allowed but probably unintended (an unused exporter, say).
    pub warnings: Vec<String>,
    /// SHA-256 of the file's text as it was read, to tell which version is serving.
    pub sha256: String,
}

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// The checks that need the plugin runtime: loading a plugin and calling its `init` with its
/// settings. The config module stays free of the runtime, so the caller supplies it.
pub trait PluginCheck {
    /// Loads `plugin` and initializes it as `config` would run it; the error is the plugin's
    /// own message (or why it cannot be loaded).
    fn check(&self, config: &Config, plugin: &PluginUse<'_>) -> Result<(), String>;
}

/// Reads and validates the config at `path`, substituting variables from the process
/// environment; with `plugins`, each plugin is also started with its settings and a refusal
/// is an error at its `config`.
pub fn load_file(path: &Path, plugins: Option<&dyn PluginCheck>) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
    parse_with(path, &text, &|name| std::env::var(name).ok(), plugins).map_err(LoadError::Invalid)
}

const SECTIONS: [&str; 4] = ["service", "receivers", "exporters", "pipelines"];

/// Validates config `text` (named `path` in messages), looking variables up with `lookup`.
/// Plugins are not started (see [`parse_with`]).
pub fn parse(
    path: &Path,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, Diagnostics> {
    parse_with(path, text, lookup, None)
}

/// [`parse`], and then with `plugins`, each plugin started with its settings.
pub fn parse_with(
    path: &Path,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    plugins: Option<&dyn PluginCheck>,
) -> Result<Loaded, Diagnostics> {
    let expansion = env::expand(text, lookup);
    // Every unset variable is reported; errors it causes further on are not reported again.
    let fail = |later: Vec<Diagnostic>| {
        let mut items: Vec<Diagnostic> = expansion
            .errors
            .iter()
            .map(|e| Diagnostic::at(Some(e.span.clone()), e.message.clone()))
            .collect();
        items.extend(later.into_iter().filter(|d| !d.span.as_ref().is_some_and(|s| expansion.explains(s))));
        Diagnostics::new(path, text, items)
    };
    let (expanded, map) = (expansion.text.clone(), expansion.map.clone());
    let doc = Document::parse(expanded.clone()).map_err(|e| {
        let mut message = e.message().trim_end().to_string();
        if let (Some(span), "duplicate key") = (e.span(), message.as_str()) {
            let key = expanded.get(span).unwrap_or("?").trim_matches('"');
            message = format!("`{key}` is defined twice; names must be unique within a section");
        }
        fail(vec![Diagnostic::at(e.span().map(|s| map.range_to_original(s)), message)])
    })?;

    let mut parser = Parser { map, errors: Vec::new() };
    let root = doc.as_table();
    for (key, _) in root.iter() {
        if !SECTIONS.contains(&key) {
            parser.error(
                root.key(key).and_then(|k| k.span()),
                format!("unknown section `{key}`: expected one of `service`, `receivers`, `exporters`, `pipelines`"),
            );
        }
    }
    let service = match root.get("service") {
        Some(item) => parser.typed::<ServiceConfig>(item, "`[service]`", item.span()).unwrap_or_default(),
        None => ServiceConfig::default(),
    };
    let receivers = parser.components(root, "receivers", "receiver", ReceiverConfig::TYPES, parse_receiver);
    let exporters = parser.components(root, "exporters", "exporter", ExporterKind::TYPES, parse_exporter);
    let pipelines = parser.pipelines(root);

    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut pipelines = pipelines;
    let mut exporters = exporters;
    for (id, pipeline) in pipelines.iter_mut().filter_map(|(id, c)| Some((id, c.config.as_mut()?))) {
        for processor in &mut pipeline.processors {
            let what = format!("pipeline `{id}`: processor `{}`", processor.display_name());
            parser.read_config_file(&what, &base_dir, &mut processor.plugin, lookup);
        }
    }
    for (id, exporter) in exporters.iter_mut().filter_map(|(id, c)| Some((id, c.config.as_mut()?))) {
        if let Some(plugin) = &mut exporter.shared.plugin {
            parser.read_config_file(&format!("exporter `{id}`"), &base_dir, plugin, lookup);
        }
    }

    let declared = |section: &str| -> Vec<String> {
        let table = root.get(section).and_then(Item::as_table_like);
        table.map(|t| t.iter().map(|(name, _)| name.to_string()).collect()).unwrap_or_default()
    };
    let parsed = Parsed {
        service,
        receivers,
        exporters,
        pipelines,
        declared_receivers: declared("receivers"),
        declared_exporters: declared("exporters"),
        base_dir,
        env: lookup,
    };
    let outcome = validate::check(&parsed);
    let mut errors = parser.errors;
    errors.extend(
        outcome.errors.into_iter().map(|d| Diagnostic {
            span: d.span.map(|s| parser.map.range_to_original(s)),
            message: d.message,
        }),
    );
    if !errors.is_empty() || !expansion.errors.is_empty() {
        return Err(fail(errors));
    }
    let config = parsed.into_config();
    if let Some(plugins) = plugins {
        for plugin in config.plugin_uses() {
            if let Err(message) = plugins.check(&config, &plugin) {
                // The settings are what a plugin usually refuses: point at them.
                let span = settings_span(root, &plugin.place)
                    .or_else(|| plugin.reference.config_file.as_ref().map(|f| f.span()))
                    .unwrap_or_else(|| plugin.reference.plugin.span());
                errors.push(Diagnostic {
                    span: Some(parser.map.range_to_original(span)),
                    message: format!("{}: {message}", plugin.describe()),
                });
            }
        }
        if !errors.is_empty() {
            return Err(fail(errors));
        }
    }
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
    Ok(Loaded { config, warnings: outcome.warnings, sha256 })
}

/// Where a plugin's `config` key stands in the document, if it has one.
fn settings_span(root: &Table, place: &PluginPlace) -> Option<Range<usize>> {
    let table = |item: &Item| -> Option<Range<usize>> {
        let table = item.as_table_like()?;
        table.key("config").and_then(|k| k.span())
    };
    match place {
        PluginPlace::Processor { pipeline, index } => {
            let processors = root.get("pipelines")?.get(pipeline.as_str())?.get("processors")?;
            match processors {
                Item::ArrayOfTables(array) => array.get(*index).and_then(|t| t.key("config")?.span()),
                Item::Value(Value::Array(array)) => {
                    let inline = array.get(*index)?.as_inline_table()?;
                    inline.key("config").and_then(|k| k.span())
                }
                _ => None,
            }
        }
        PluginPlace::Exporter(id) => table(root.get("exporters")?.get(id.as_str())?),
    }
}

type TypedParser<T> = fn(&mut Parser, &str, Value, &str, Option<Range<usize>>) -> Option<T>;

/// Parses a config's tables, collecting every problem with its place.
pub(crate) struct Parser {
    map: OffsetMap,
    errors: Vec<Diagnostic>,
}

impl Parser {
    fn error(&mut self, span: Option<Range<usize>>, message: String) {
        self.errors.push(Diagnostic::at(span.map(|s| self.map.range_to_original(s)), message));
    }

    /// A component table of type `T`.
    pub(crate) fn table<T: DeserializeOwned>(
        &mut self,
        rest: Value,
        what: &str,
        header: Option<Range<usize>>,
    ) -> Option<T> {
        self.typed_value(rest, what, header)
    }

    /// An exporter table of type `T`: its own keys, and the shared ones its type holds.
    pub(crate) fn exporter<T: ExporterType>(
        &mut self,
        rest: Value,
        what: &str,
        header: Option<Range<usize>>,
    ) -> Option<(T, Shared)> {
        let mut groups = vec![fields_of::<T>()];
        groups.extend(T::SHARED.iter().map(|part| match part {
            SharedKeys::Client => fields_of::<ClientConfig>(),
            SharedKeys::Plugin => fields_of::<PluginRef>(),
            SharedKeys::Series => fields_of::<SeriesConfig>(),
        }));
        let (mut parts, mut complete) = self.split(rest, what, header.clone(), &groups)?;
        let own = self.typed_value::<T>(parts.remove(0), what, header.clone());
        let mut shared = Shared::default();
        for (part, value) in T::SHARED.iter().zip(parts) {
            let header = header.clone();
            complete &= match part {
                SharedKeys::Client => {
                    shared.client = self.typed_value(value, what, header);
                    shared.client.is_some()
                }
                SharedKeys::Plugin => {
                    shared.plugin = self.typed_value(value, what, header);
                    shared.plugin.is_some()
                }
                SharedKeys::Series => {
                    shared.series = self.typed_value(value, what, header);
                    shared.series.is_some()
                }
            };
        }
        (complete).then_some((own?, shared))
    }

    /// A processor's table: its own keys beside a [`PluginRef`]'s.
    fn processor(
        &mut self,
        value: Value,
        what: &str,
        header: Option<Range<usize>>,
    ) -> Option<ProcessorConfig> {
        let groups = [fields_of::<ProcessorKeys>(), fields_of::<PluginRef>()];
        let (mut parts, complete) = self.split(value, what, header.clone(), &groups)?;
        let plugin = self.typed_value::<PluginRef>(parts.pop()?, what, header.clone());
        let own = self.typed_value::<ProcessorKeys>(parts.pop()?, what, header);
        let (own, plugin) = (own?, plugin?);
        complete.then_some(ProcessorConfig { name: own.name, on_error: own.on_error, plugin })
    }

    /// Shares one table's keys out among several structs, each of which denies unknown keys:
    /// one table per group of `groups`, the first keeping the table itself (and its place).
    /// A key no group knows is reported once, at its place, with every key the table may have;
    /// then the returned flag is false.
    fn split(
        &mut self,
        mut value: Value,
        what: &str,
        header: Option<Range<usize>>,
        groups: &[&'static [&'static str]],
    ) -> Option<(Vec<Value>, bool)> {
        let Some(table) = value.as_inline_table_mut() else {
            self.error(header, format!("{what} must be a table"));
            return None;
        };
        let mut others = vec![toml_edit::InlineTable::new(); groups.len().saturating_sub(1)];
        let mut complete = true;
        let keys: Vec<String> = table.iter().map(|(key, _)| key.to_string()).collect();
        for key in keys {
            match groups.iter().position(|group| group.contains(&key.as_str())) {
                Some(0) => {}
                Some(group) => {
                    if let Some(moved) = table.remove(&key) {
                        others[group - 1].insert(&key, moved);
                    }
                }
                None => {
                    let span = table.key(&key).and_then(|k| k.span()).or_else(|| header.clone());
                    let expected = groups.iter().flat_map(|g| g.iter()).map(|f| format!("`{f}`"));
                    let expected = expected.collect::<Vec<_>>().join(", ");
                    self.error(span, format!("{what}: unknown field `{key}`, expected one of {expected}"));
                    // Reported here, once: no part's own parse must see it again.
                    table.remove(&key);
                    complete = false;
                }
            }
        }
        let parts = std::iter::once(value).chain(others.into_iter().map(Value::InlineTable)).collect();
        Some((parts, complete))
    }

    /// Fills a plugin's `config` from its `config_file`: a TOML file, relative to the config,
    /// with the same `${VAR}` substitution. Its problems are reported at `config_file`, each
    /// with the line and column in that file.
    fn read_config_file(
        &mut self,
        what: &str,
        base_dir: &Path,
        plugin: &mut PluginRef,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) {
        let (config, Some(file)) = (&mut plugin.config, &plugin.config_file) else { return };
        let span = Some(file.span());
        if config.is_some() {
            self.error(
                span,
                format!("{what}: give the plugin's settings as `config` or `config_file`, not both"),
            );
            return;
        }
        let resolved = base_dir.join(file.get_ref());
        let text = match std::fs::read_to_string(&resolved) {
            Ok(text) => text,
            Err(error) => {
                self.error(
                    span,
                    format!("{what}: cannot read `config_file` {}: {error}", resolved.display()),
                );
                return;
            }
        };
        let at = |offset: usize| {
            let (line, col, _) = super::diagnostic::line_col(&text, offset);
            format!("{what}: `config_file` {}:{line}:{col}", resolved.display())
        };
        let expansion = env::expand(&text, lookup);
        if !expansion.errors.is_empty() {
            for error in &expansion.errors {
                self.error(span.clone(), format!("{}: {}", at(error.span.start), error.message));
            }
            return;
        }
        match toml_edit::de::from_str::<serde_json::Value>(&expansion.text) {
            Ok(value) => *config = Some(value),
            Err(error) => {
                let offset = error.span().map_or(0, |s| expansion.map.to_original(s.start));
                self.error(span, format!("{}: {}", at(offset), error.message().trim_end()));
            }
        }
    }

    /// Deserializes `item` into `T`, reporting a failure against `what` (e.g. "receiver `otlp`").
    fn typed<T: DeserializeOwned>(
        &mut self,
        item: &Item,
        what: &str,
        fallback: Option<Range<usize>>,
    ) -> Option<T> {
        let Ok(value) = item.clone().into_value() else {
            self.error(fallback, format!("{what} must be a table"));
            return None;
        };
        self.typed_value(value, what, fallback)
    }

    fn typed_value<T: DeserializeOwned>(
        &mut self,
        value: Value,
        what: &str,
        fallback: Option<Range<usize>>,
    ) -> Option<T> {
        match T::deserialize(value.into_deserializer()) {
            Ok(config) => Some(config),
            Err(e) => {
                self.error(e.span().or(fallback), format!("{what}: {}", e.message().trim_end()));
                None
            }
        }
    }

    fn section<'t>(
        &mut self,
        root: &'t Table,
        section: &str,
    ) -> Vec<(&'t str, Option<Range<usize>>, &'t Item)> {
        let Some(item) = root.get(section) else { return Vec::new() };
        let Some(table) = item.as_table_like() else {
            self.error(item.span(), format!("`{section}` must be a table of named {section}"));
            return Vec::new();
        };
        table
            .iter()
            .map(|(name, item)| {
                let header = table.key(name).and_then(|k| k.span()).or_else(|| item.span());
                (name, header, item)
            })
            .collect()
    }

    fn id(&mut self, name: &str, header: Option<Range<usize>>) -> Option<ComponentId> {
        ComponentId::new(name).map_err(|message| self.error(header, message)).ok()
    }

    /// Parses a section of components whose kind is chosen by a `type` key.
    fn components<T>(
        &mut self,
        root: &Table,
        section: &str,
        label: &str,
        types: &[&str],
        typed: TypedParser<T>,
    ) -> BTreeMap<ComponentId, Component<T>> {
        let mut out = BTreeMap::new();
        for (name, header, item) in self.section(root, section) {
            let Some(id) = self.id(name, header.clone()) else { continue };
            let what = format!("{label} `{name}`");
            let config = self
                .split_type(item, &what, types, header.clone())
                .and_then(|(kind, rest)| typed(self, &kind, rest, &what, header.clone()));
            out.insert(id, Component { header, config });
        }
        out
    }

    /// Takes the `type` key out of a component table, checking it names a known kind.
    fn split_type(
        &mut self,
        item: &Item,
        what: &str,
        types: &[&str],
        header: Option<Range<usize>>,
    ) -> Option<(String, Value)> {
        let expected = types.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ");
        let Ok(mut value) = item.clone().into_value() else {
            self.error(header, format!("{what} must be a table"));
            return None;
        };
        let Some(table) = value.as_inline_table_mut() else {
            self.error(header, format!("{what} must be a table"));
            return None;
        };
        let Some(kind) = table.remove("type") else {
            self.error(header, format!("{what} has no `type`; expected one of {expected}"));
            return None;
        };
        let Some(kind_name) = kind.as_str().map(str::to_string) else {
            self.error(kind.span(), format!("{what}: `type` must be a string, one of {expected}"));
            return None;
        };
        if !types.contains(&kind_name.as_str()) {
            self.error(
                kind.span(),
                format!("{what}: unknown type `{kind_name}`; expected one of {expected}"),
            );
            return None;
        }
        Some((kind_name, value))
    }

    fn pipelines(&mut self, root: &Table) -> BTreeMap<ComponentId, Component<PipelineConfig>> {
        let mut out = BTreeMap::new();
        for (name, header, item) in self.section(root, "pipelines") {
            let Some(id) = self.id(name, header.clone()) else { continue };
            let what = format!("pipeline `{name}`");
            let config = self.pipeline(item, &what, header.clone());
            out.insert(id, Component { header, config });
        }
        out
    }

    /// A pipeline's table; its `processors` are read one by one (see [`Self::processor`]).
    fn pipeline(&mut self, item: &Item, what: &str, header: Option<Range<usize>>) -> Option<PipelineConfig> {
        let Some(mut value) = item.clone().into_value().ok().filter(Value::is_inline_table) else {
            self.error(header, format!("{what} must be a table"));
            return None;
        };
        let processors = value.as_inline_table_mut().and_then(|table| table.remove("processors"));
        let pipeline = self.typed_value::<PipelineConfig>(value, what, header.clone());
        let processors = match processors {
            None => Some(Vec::new()),
            Some(Value::Array(array)) => {
                let read: Vec<Option<ProcessorConfig>> = array
                    .into_iter()
                    .enumerate()
                    .map(|(index, table)| {
                        let at = table.span().or_else(|| header.clone());
                        self.processor(table, &format!("{what}: processor {}", index + 1), at)
                    })
                    .collect();
                read.into_iter().collect()
            }
            Some(other) => {
                let message = format!(
                    "{what}: `processors` must be a list of tables (`[[pipelines.NAME.processors]]`)"
                );
                self.error(other.span().or(header), message);
                None
            }
        };
        let mut pipeline = pipeline?;
        pipeline.processors = processors?;
        Some(pipeline)
    }
}

fn parse_receiver(
    parser: &mut Parser,
    kind: &str,
    rest: Value,
    what: &str,
    header: Option<Range<usize>>,
) -> Option<ReceiverConfig> {
    ReceiverConfig::parse(kind, parser, rest, what, header)
}

fn parse_exporter(
    parser: &mut Parser,
    kind: &str,
    mut rest: Value,
    what: &str,
    header: Option<Range<usize>>,
) -> Option<ExporterConfig> {
    // `queue_size` is common to every exporter, so it is read here rather than in each type.
    let queue = rest.as_inline_table_mut().and_then(|t| t.remove("queue_size"));
    let queue_size = match queue {
        None => Some(DEFAULT_EXPORTER_QUEUE),
        Some(value) => {
            let span = value.span();
            match value.as_integer().and_then(|n| usize::try_from(n).ok()).filter(|&n| n > 0) {
                Some(n) => Some(n),
                None => {
                    parser.error(span, format!("{what}: `queue_size` must be a positive integer (batches)"));
                    None
                }
            }
        }
    };
    let queue = match rest.as_inline_table_mut().and_then(|t| t.remove("queue")) {
        None => Some(QueueConfig::default()),
        Some(value) => parse_queue(parser, value, &format!("{what}: `queue`"), header.clone()),
    };
    let (kind, shared) = ExporterKind::parse(kind, parser, rest, what, header)?;
    Some(ExporterConfig { queue_size: queue_size?, queue: queue?, shared, kind })
}

/// An exporter's `queue` table: `type` picks the kind, the other keys are that kind's.
fn parse_queue(
    parser: &mut Parser,
    mut value: Value,
    what: &str,
    header: Option<Range<usize>>,
) -> Option<QueueConfig> {
    let at = value.span().or(header.clone());
    let Some(table) = value.as_inline_table_mut() else {
        parser.error(at, format!("{what} must be a table such as {{ type = \"disk\", directory = \"…\" }}"));
        return None;
    };
    let kind = table.remove("type");
    match kind.as_ref().map(|kind| (kind.as_str(), kind.span())) {
        Some((Some("disk"), _)) => {
            parser.typed_value::<DiskQueueConfig>(value, what, at).map(QueueConfig::Disk)
        }
        Some((Some("memory"), _)) if table.is_empty() => Some(QueueConfig::Memory),
        Some((Some("memory"), span)) => {
            let keys: Vec<&str> = table.iter().map(|(key, _)| key).collect();
            let message =
                format!("{what}: a memory queue takes no other keys (found `{}`)", keys.join("`, `"));
            parser.error(span.or(at), message);
            None
        }
        Some((_, span)) => {
            parser.error(span.or(at), format!("{what}: `type` must be \"memory\" or \"disk\""));
            None
        }
        None => {
            parser.error(at, format!("{what} needs a `type`: \"memory\" or \"disk\""));
            None
        }
    }
}

/// The fields a `Deserialize` struct declares, as serde hands them to `deserialize_struct`.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    struct Capture(&'static [&'static str]);

    #[derive(Debug)]
    struct Captured;

    impl std::fmt::Display for Captured {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("fields captured")
        }
    }

    impl std::error::Error for Captured {}

    impl de::Error for Captured {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Captured
        }
    }

    impl<'de> de::Deserializer<'de> for &mut Capture {
        type Error = Captured;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Captured> {
            Err(Captured)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Captured> {
            self.0 = fields;
            Err(Captured)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    let mut capture = Capture(&[]);
    let _ = T::deserialize(&mut capture);
    capture.0
}
