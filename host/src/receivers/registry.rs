//! How receiver types are known: each is a folder under `receivers/` — its config table in
//! `config.rs`, its code beside it — that implements [`ReceiverType`], plus one line in the
//! `receiver_types!` list in `receivers/mod.rs`. From that list come the `type` names, the
//! parsing of each table, the checks and the start of each receiver.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_spanned::Spanned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Listening;
use super::ingest::Feeds;
use crate::config::{ComponentId, Config, Credential, ListenAddress, Problem, Signal};
use crate::metrics::Metrics;

/// One receiver type: its config table and how it starts.
pub trait ReceiverType:
    DeserializeOwned + Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static
{
    /// The signals it produces: a pipeline may only take these from it.
    fn signals(&self) -> Vec<Signal>;

    /// Its listeners' addresses, each with its transport (`grpc`, `http`).
    fn listens_on(&self) -> Vec<(&'static str, &Spanned<ListenAddress>)> {
        Vec::new()
    }

    /// Its own checks; `what` names it (`receiver \`otlp\``), `base_dir` is the config's folder.
    fn check(&self, _what: &str, _base_dir: &Path) -> Vec<Problem> {
        Vec::new()
    }

    /// The credentials it reads when it starts, each with what it is (`the SASL password`):
    /// validation checks that each variable or file is there.
    fn secrets(&self) -> Vec<(&'static str, &Spanned<Credential>)> {
        Vec::new()
    }

    /// Starts it, feeding `start.feeds`.
    fn start(&self, start: Start<'_>) -> impl Future<Output = anyhow::Result<Started>> + Send;
}

/// What a receiver starts with.
pub struct Start<'a> {
    /// Its name.
    pub id: &'a ComponentId,
    /// The config it belongs to (for paths relative to the file).
    pub config: &'a Config,
    /// The pipelines it feeds, per signal (swapped on reload).
    pub feeds: &'a Feeds,
    /// The host's metrics.
    pub metrics: &'a Arc<Metrics>,
    /// The host's memory bound, which receivers consult before taking data.
    pub memory: &'a Arc<crate::memory::MemoryGuard>,
    /// Cancelled when it must stop.
    pub stop: &'a CancellationToken,
}

/// A started receiver: its listeners, or the task that samples.
#[derive(Debug, Default)]
pub struct Started {
    /// Bound and serving.
    pub listeners: Vec<Listening>,
    /// A sampling receiver's task.
    pub sampler: Option<JoinHandle<()>>,
}

/// Declares the receiver types: `Variant = "type name" => its config type,` each with its doc.
/// Generates `ReceiverConfig` with its `TYPES`, parsing, checks and start.
macro_rules! receiver_types {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal => $config:ty, )*) => {
        /// `[receivers.NAME]`: a source of telemetry, chosen by `type` (see
        /// [`registry`](crate::receivers::registry)).
        #[derive(Debug, Clone, PartialEq)]
        pub enum ReceiverConfig {
            $( $(#[$doc])* $variant(Box<$config>), )*
        }

        impl ReceiverConfig {
            /// The `type` names receivers can have.
            pub const TYPES: &'static [&'static str] = &[$($name),*];

            /// Parses a receiver table of type `kind`, one of [`Self::TYPES`].
            pub(crate) fn parse(
                kind: &str,
                parser: &mut $crate::config::TableParser,
                rest: toml_edit::Value,
                what: &str,
                header: Option<std::ops::Range<usize>>,
            ) -> Option<Self> {
                match kind {
                    $( $name => parser.table::<$config>(rest, what, header).map(|c| Self::$variant(Box::new(c))), )*
                    _ => None,
                }
            }

            /// The signals it produces.
            pub fn signals(&self) -> Vec<$crate::config::Signal> {
                match self { $( Self::$variant(c) => $crate::receivers::registry::ReceiverType::signals(c.as_ref()), )* }
            }

            /// Its listeners' addresses, each with its transport.
            pub fn listens_on(&self) -> Vec<(&'static str, &serde_spanned::Spanned<$crate::config::ListenAddress>)> {
                match self { $( Self::$variant(c) => $crate::receivers::registry::ReceiverType::listens_on(c.as_ref()), )* }
            }

            /// Its type's own checks.
            pub fn check(&self, what: &str, base_dir: &std::path::Path) -> Vec<$crate::config::Problem> {
                match self { $( Self::$variant(c) => $crate::receivers::registry::ReceiverType::check(c.as_ref(), what, base_dir), )* }
            }

            /// The credentials it reads when it starts.
            pub fn secrets(&self) -> Vec<(&'static str, &serde_spanned::Spanned<$crate::config::Credential>)> {
                match self { $( Self::$variant(c) => $crate::receivers::registry::ReceiverType::secrets(c.as_ref()), )* }
            }

            /// Starts it.
            pub(crate) async fn start(
                &self,
                start: $crate::receivers::registry::Start<'_>,
            ) -> anyhow::Result<$crate::receivers::registry::Started> {
                match self { $( Self::$variant(c) => $crate::receivers::registry::ReceiverType::start(c.as_ref(), start).await, )* }
            }
        }
    };
}

pub(crate) use receiver_types;
