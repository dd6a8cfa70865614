//! How exporter types are known: each is a folder under `exporters/` — its config table in
//! `config.rs`, its code beside it — that implements [`ExporterType`], plus one line in the
//! `exporter_types!` list in `exporters/mod.rs`. From that list come the `type` names, the
//! parsing of each table, and the start of each exporter.

use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_spanned::Spanned;
use tokio::task::JoinHandle;

use super::{BuildError, ExportError, Exporter, Outcomes, Runner};
use crate::config::{
    BatchConfig, ClientConfig, ComponentId, CompressionConfig, Config, Credential, ListenAddress, PluginRef,
    Problem, SeriesConfig,
};
use crate::metrics::{DeliveryCounters, Metrics, PerSignal, PluginMetrics};
use crate::queue;

/// One exporter type: its config table and how it starts.
pub trait ExporterType:
    DeserializeOwned + Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static
{
    /// The groups of shared keys its table holds beside its own, each read into its struct.
    const SHARED: &'static [SharedKeys] = &[];

    /// Every URL it may send to: checked as URLs, and against this host's own receivers.
    fn endpoints(&self) -> Vec<&Spanned<String>> {
        Vec::new()
    }

    /// Whether its endpoints come from a resolver of its own (which checks its list in
    /// [`ExporterType::check`]) instead of `endpoint` keys.
    fn resolves_endpoints(&self) -> bool {
        false
    }

    /// Whether the endpoints its resolver finds are plain-text `http://` URLs.
    fn resolves_in_clear(&self) -> bool {
        false
    }

    /// The address it listens on, if it serves (checked against every other listener).
    fn listens_on(&self) -> Option<&Spanned<ListenAddress>> {
        None
    }

    /// Its own checks beyond what deserializing enforces.
    fn check(&self) -> Vec<Problem> {
        Vec::new()
    }

    /// The credentials of its own (beyond the client settings') it reads when it starts, each
    /// with what it is (`the SASL password`): validation checks that each variable or file is
    /// there.
    fn secrets(&self) -> Vec<(&'static str, &Spanned<Credential>)> {
        Vec::new()
    }

    /// The compression whose client bodies it sends on as they came (see
    /// [`Batch::compressed_as`](crate::batch::Batch::compressed_as)); receivers keep a client's
    /// compressed body on a batch only for exporters that do.
    fn sends_client_bodies(&self) -> Option<CompressionConfig> {
        None
    }

    /// The sizes it merges batches up to in one request, if it merges them: a pipeline then
    /// writes the batches a group routes to its disk queue as one record of up to these sizes.
    fn merges_up_to(&self) -> Option<&BatchConfig> {
        None
    }

    /// Starts draining `start.queue`.
    fn start(&self, start: Start<'_>) -> impl Future<Output = Result<JoinHandle<()>, BuildError>> + Send;
}

/// A group of keys several exporter types' tables share. Each is read into its own struct
/// (serde's `flatten` would lose the keys' places in the file) and kept beside the type's
/// config in [`ExporterConfig`](crate::config::ExporterConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedKeys {
    /// A network exporter's [`ClientConfig`]: `timeout`, `headers`, `auth`, `tls`, `retry`,
    /// `on_full`.
    Client,
    /// A plugin exporter's [`PluginRef`]: `plugin`, `sha256`, `config`, `config_file`, `limits`,
    /// `env`.
    Plugin,
    /// A Prometheus exporter's [`SeriesConfig`]: `resource_to_labels`, `const_labels`, `expiry`.
    Series,
}

/// The shared parts an exporter's table held (see [`SharedKeys`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shared {
    /// Its client settings, if it is a network exporter.
    pub client: Option<ClientConfig>,
    /// Its plugin, if it is a plugin exporter.
    pub plugin: Option<PluginRef>,
    /// Its series settings, if it serves or writes Prometheus series.
    pub series: Option<SeriesConfig>,
}

/// What an exporter starts with.
pub struct Start<'a> {
    /// Its name.
    pub name: &'a ComponentId,
    /// The config it belongs to (for paths relative to the file).
    pub config: &'a Config,
    /// During a reload, a plugin that can't be loaded fails the build instead of being retried.
    pub reloading: bool,
    /// The host's metrics.
    pub metrics: &'a Arc<Metrics>,
    /// The queue to drain.
    pub queue: queue::Receiver,
    /// Its shared parts ([`SharedKeys`]).
    pub shared: &'a Shared,
}

impl<'a> Start<'a> {
    /// Runs a blocking or in-task [`Exporter`] over the queue, counting what it sends and fails.
    pub fn run<E: Exporter>(self, exporter: E) -> JoinHandle<()> {
        let runner = Runner { rx: self.queue, outcomes: Outcomes::new(self.name, self.metrics) };
        runner.spawn(exporter)
    }

    /// A network exporter's delivery counters, per signal.
    pub fn delivery(&self) -> PerSignal<DeliveryCounters> {
        PerSignal::new(|signal| self.metrics.delivery(self.name.as_str(), signal))
    }

    /// An exporter plugin's call metrics (no pipeline label: it serves every pipeline naming it).
    pub fn plugin_metrics(&self) -> PluginMetrics {
        self.metrics.plugin("", self.name.as_str())
    }

    /// A network exporter's client settings (its table always has them; see
    /// [`ExporterType::SHARED`]).
    pub fn client(&self) -> Result<&'a ClientConfig, BuildError> {
        self.shared.client.as_ref().ok_or_else(|| self.missing("client settings"))
    }

    /// A plugin exporter's plugin.
    pub fn plugin(&self) -> Result<&'a PluginRef, BuildError> {
        self.shared.plugin.as_ref().ok_or_else(|| self.missing("plugin"))
    }

    /// A Prometheus exporter's series settings.
    pub fn series(&self) -> Result<&'a SeriesConfig, BuildError> {
        self.shared.series.as_ref().ok_or_else(|| self.missing("series settings"))
    }

    fn missing(&self, what: &str) -> BuildError {
        BuildError::client(self.name, format!("no {what} in its config"))
    }

    /// The build error for `source`.
    pub fn failed(&self, source: ExportError) -> BuildError {
        BuildError { name: self.name.clone(), source }
    }
}

/// Declares the exporter types: `Variant = "type name" => its config type,` each with its doc.
/// Generates [`ExporterKind`](super::ExporterKind) with its `TYPES`, parsing and dispatch.
macro_rules! exporter_types {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal => $config:ty, )*) => {
        /// The exporter types (see [`registry`](crate::exporters::registry)).
        #[derive(Debug, Clone, PartialEq)]
        pub enum ExporterKind {
            $( $(#[$doc])* $variant(Box<$config>), )*
        }

        impl ExporterKind {
            /// The `type` names exporters can have.
            pub const TYPES: &'static [&'static str] = &[$($name),*];

            /// Parses an exporter table of type `kind`, one of [`Self::TYPES`]: the type's own
            /// keys, and the shared ones it holds.
            pub(crate) fn parse(
                kind: &str,
                parser: &mut crate::config::TableParser,
                rest: toml_edit::Value,
                what: &str,
                header: Option<std::ops::Range<usize>>,
            ) -> Option<(Self, registry::Shared)> {
                match kind {
                    $( $name => parser
                        .exporter::<$config>(rest, what, header)
                        .map(|(c, shared)| (Self::$variant(Box::new(c)), shared)), )*
                    _ => None,
                }
            }

            /// Every URL it may send to.
            pub fn endpoints(&self) -> Vec<&serde_spanned::Spanned<String>> {
                match self { $( Self::$variant(c) => registry::ExporterType::endpoints(c.as_ref()), )* }
            }

            /// Whether it finds its endpoints at run time.
            pub fn resolves_endpoints(&self) -> bool {
                match self { $( Self::$variant(c) => registry::ExporterType::resolves_endpoints(c.as_ref()), )* }
            }

            /// Whether the endpoints its resolver finds are plain text.
            pub fn resolves_in_clear(&self) -> bool {
                match self { $( Self::$variant(c) => registry::ExporterType::resolves_in_clear(c.as_ref()), )* }
            }

            /// The address it listens on, if it serves.
            pub fn listens_on(&self) -> Option<&serde_spanned::Spanned<crate::config::ListenAddress>> {
                match self { $( Self::$variant(c) => registry::ExporterType::listens_on(c.as_ref()), )* }
            }

            /// Its type's own checks.
            pub fn check(&self) -> Vec<crate::config::Problem> {
                match self { $( Self::$variant(c) => registry::ExporterType::check(c.as_ref()), )* }
            }

            /// The credentials of its own it reads when it starts.
            pub fn secrets(&self) -> Vec<(&'static str, &serde_spanned::Spanned<crate::config::Credential>)> {
                match self { $( Self::$variant(c) => registry::ExporterType::secrets(c.as_ref()), )* }
            }

            /// The compression whose client bodies it sends on as they came, if any.
            pub fn sends_client_bodies(&self) -> Option<crate::config::CompressionConfig> {
                match self { $( Self::$variant(c) => registry::ExporterType::sends_client_bodies(c.as_ref()), )* }
            }

            /// The sizes it merges batches up to in one request, if it does.
            pub fn merges_up_to(&self) -> Option<&crate::config::BatchConfig> {
                match self { $( Self::$variant(c) => registry::ExporterType::merges_up_to(c.as_ref()), )* }
            }

            /// Starts it.
            pub(crate) async fn start(&self, start: registry::Start<'_>) -> Result<tokio::task::JoinHandle<()>, BuildError> {
                match self { $( Self::$variant(c) => registry::ExporterType::start(c.as_ref(), start).await, )* }
            }
        }
    };
}

pub(crate) use exporter_types;
