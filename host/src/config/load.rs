//! Reads a config file and turns it into a [`Config`] or every reason it can't be one.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml_edit::{Document, Item, Table, Value};

use super::diagnostic::{Diagnostic, Diagnostics};
use super::env::{self, OffsetMap};
use super::schema::*;
use super::validate;

/// A config that passed validation, with the warnings worth logging about it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// Things that are allowed but probably unintended (an unused exporter, say).
    pub warnings: Vec<String>,
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

/// Reads and validates the config at `path`, substituting variables from the process environment.
pub fn load_file(path: &Path) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
    parse(path, &text, &|name| std::env::var(name).ok()).map_err(LoadError::Invalid)
}

const SECTIONS: [&str; 4] = ["service", "receivers", "exporters", "pipelines"];

/// Validates config `text` (named `path` in messages), looking variables up with `lookup`.
pub fn parse(
    path: &Path,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, Diagnostics> {
    let fail = |items: Vec<Diagnostic>| Diagnostics::new(path, text, items);
    let (expanded, map) = env::expand(text, lookup).map_err(|errors| {
        fail(errors.into_iter().map(|e| Diagnostic::at(Some(e.span), e.message)).collect())
    })?;
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

    let declared = |section: &str| -> Vec<String> {
        let table = root.get(section).and_then(Item::as_table_like);
        table.map(|t| t.iter().map(|(name, _)| name.to_string()).collect()).unwrap_or_default()
    };
    let parsed = validate::Parsed {
        service,
        receivers,
        exporters,
        pipelines,
        declared_receivers: declared("receivers"),
        declared_exporters: declared("exporters"),
        base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    let outcome = validate::check(&parsed);
    let mut errors = parser.errors;
    errors.extend(
        outcome.errors.into_iter().map(|d| Diagnostic {
            span: d.span.map(|s| parser.map.range_to_original(s)),
            message: d.message,
        }),
    );
    if !errors.is_empty() {
        return Err(fail(errors));
    }
    Ok(Loaded { config: parsed.into_config(), warnings: outcome.warnings })
}

/// A component whose table parsed, with the places needed to report on it later.
#[derive(Debug)]
pub(super) struct Component<T> {
    /// Span of its `[section.name]` header or inline key.
    pub header: Option<Range<usize>>,
    /// The typed config; `None` when the table had errors (already reported).
    pub config: Option<T>,
}

type TypedParser<T> = fn(&mut Parser, &str, Value, &str, Option<Range<usize>>) -> Option<T>;

pub(super) struct Parser {
    map: OffsetMap,
    errors: Vec<Diagnostic>,
}

impl Parser {
    fn error(&mut self, span: Option<Range<usize>>, message: String) {
        self.errors.push(Diagnostic::at(span.map(|s| self.map.range_to_original(s)), message));
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
            let config = self.typed::<PipelineConfig>(item, &format!("pipeline `{name}`"), header.clone());
            out.insert(id, Component { header, config });
        }
        out
    }
}

fn parse_receiver(
    parser: &mut Parser,
    kind: &str,
    rest: Value,
    what: &str,
    header: Option<Range<usize>>,
) -> Option<ReceiverConfig> {
    match kind {
        "otlp" => parser.typed_value(rest, what, header).map(|c| ReceiverConfig::Otlp(Box::new(c))),
        "gpu" => parser.typed_value(rest, what, header).map(ReceiverConfig::Gpu),
        _ => None,
    }
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
    let kind = match kind {
        "debug" => parser.typed_value(rest, what, header).map(ExporterKind::Debug),
        "file" => parser.typed_value(rest, what, header).map(ExporterKind::File),
        "discard" => parser.typed_value(rest, what, header).map(ExporterKind::Discard),
        "otlp" => parser.typed_value(rest, what, header).map(|c| ExporterKind::Otlp(Box::new(c))),
        "prometheus" => parser.typed_value(rest, what, header).map(ExporterKind::Prometheus),
        "prometheus_remote_write" => {
            parser.typed_value(rest, what, header).map(|c| ExporterKind::RemoteWrite(Box::new(c)))
        }
        "plugin" => parser.typed_value(rest, what, header).map(|c| ExporterKind::Plugin(Box::new(c))),
        _ => None,
    }?;
    Some(ExporterConfig { queue_size: queue_size?, kind })
}
