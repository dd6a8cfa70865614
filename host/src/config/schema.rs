//! The typed pipeline TOML. Every table denies unknown fields, so a typo is an error with its
//! place in the file rather than a silently ignored setting.
//!
//! ```toml
//! [service]
//! admin_address = "127.0.0.1:8888"
//!
//! [receivers.otlp]
//! type = "otlp"
//!
//! [exporters.out]
//! type = "file"
//! directory = "${SLUICE_DATA_DIR:-./data}"
//!
//! [pipelines.all]
//! signals = ["traces", "metrics", "logs"]
//! receivers = ["otlp"]
//! exporters = ["out"]
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};
use serde_spanned::Spanned;
pub use sluice_wire::Signal;

use super::units::{ByteSize, HumanDuration};
// Each exporter type's table lives beside its code; the typed config names them from here.
pub use crate::exporters::ExporterKind;
pub use crate::exporters::debug::config::{DebugExporterConfig, Verbosity};
pub use crate::exporters::discard::config::DiscardExporterConfig;
pub use crate::exporters::file::config::FileExporterConfig;
pub use crate::exporters::otlp::config::{BatchConfig, CompressionConfig, OtlpExporterConfig, OtlpProtocol};
pub use crate::exporters::plugin::config::PluginExporterConfig;
pub use crate::exporters::prometheus::config::{PrometheusExporterConfig, SeriesConfig};
pub use crate::exporters::registry::{Shared, SharedKeys};
pub use crate::exporters::remote_write::config::RemoteWriteExporterConfig;
pub use crate::receivers::ReceiverConfig;
pub use crate::receivers::gpu::config::{GpuNaming, GpuReceiverConfig, GpuSource};
pub use crate::receivers::otlp::config::{
    GrpcConfig, HttpConfig, OtlpReceiverConfig, ReceiverAuthConfig, ServerTlsConfig,
};

/// A validated config: every reference resolves and every value is in range.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Host-wide settings.
    pub service: ServiceConfig,
    /// Receivers by name.
    pub receivers: BTreeMap<ComponentId, ReceiverConfig>,
    /// Exporters by name.
    pub exporters: BTreeMap<ComponentId, ExporterConfig>,
    /// Pipelines by name.
    pub pipelines: BTreeMap<ComponentId, PipelineConfig>,
    /// The folder of the config file; relative plugin paths are resolved against it.
    pub base_dir: PathBuf,
}

impl Config {
    /// Resolves a path from the config against the config file's folder.
    pub fn resolve(&self, path: &std::path::Path) -> PathBuf {
        // `join` keeps an absolute path as it is.
        self.base_dir.join(path)
    }

    /// Every plugin the config runs: each pipeline's processors in order, then each plugin
    /// exporter.
    pub fn plugin_uses(&self) -> Vec<PluginUse<'_>> {
        let processors = self.pipelines.iter().flat_map(|(pipeline, config)| {
            config.processors.iter().enumerate().map(move |(index, p)| PluginUse {
                place: PluginPlace::Processor { pipeline: pipeline.clone(), index },
                name: p.display_name(),
                reference: &p.plugin,
                on_error: p.on_error,
            })
        });
        let exporters = self.exporters.iter().filter_map(|(id, exporter)| {
            Some(PluginUse {
                place: PluginPlace::Exporter(id.clone()),
                name: id.to_string(),
                reference: exporter.shared.plugin.as_ref()?,
                // A failed render loses nothing silently: the items are counted as failed.
                on_error: OnError::Drop,
            })
        });
        processors.chain(exporters).collect()
    }

    /// Every file the running host depends on besides the config itself: plugin components
    /// and plugin config files, resolved, sorted and without repeats.
    pub fn plugin_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .plugin_uses()
            .iter()
            .flat_map(|u| {
                let reference = u.reference;
                std::iter::once(reference.plugin.get_ref())
                    .chain(reference.config_file.as_ref().map(Spanned::get_ref))
            })
            .map(|path| self.resolve(path))
            .collect();
        files.sort();
        files.dedup();
        files
    }
}

/// Where a plugin is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginPlace {
    /// The `index`th processor of a pipeline.
    Processor {
        /// The pipeline.
        pipeline: ComponentId,
        /// Its position in `processors`, from 0.
        index: usize,
    },
    /// A `type = "plugin"` exporter.
    Exporter(ComponentId),
}

/// A problem a component's own check found: where (a span of the config text; `None` stands for
/// the component's header) and the message.
pub type Problem = (Option<std::ops::Range<usize>>, String);

/// One plugin as the config uses it: where, under which name and fault policy, and which
/// plugin with which settings.
#[derive(Debug, Clone)]
pub struct PluginUse<'a> {
    /// Where it is used.
    pub place: PluginPlace,
    /// Its name in logs and metrics.
    pub name: String,
    /// The plugin, its settings and its limits, as the config names them.
    pub reference: &'a PluginRef,
    /// What a fault does to the batch.
    pub on_error: OnError,
}

impl PluginUse<'_> {
    /// The settings as the JSON text handed to the plugin's `init`.
    pub fn config_json(&self) -> String {
        self.reference.config.as_ref().map_or_else(|| "{}".into(), ToString::to_string)
    }

    /// How messages name it: "pipeline `p`: processor `n`" or "exporter `e`".
    pub fn describe(&self) -> String {
        match &self.place {
            PluginPlace::Processor { pipeline, .. } => {
                format!("pipeline `{pipeline}`: processor `{}`", self.name)
            }
            PluginPlace::Exporter(id) => format!("exporter `{id}`"),
        }
    }
}

/// A component's name: letters, digits, `_`, `-` and `/`, as in `otlp` or `traces/tenant-a`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComponentId(String);

impl ComponentId {
    /// Checks `name` and wraps it.
    pub fn new(name: &str) -> Result<Self, String> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/'));
        if valid {
            Ok(Self(name.to_string()))
        } else {
            Err(format!(
                "invalid name `{name}`: use 1 to 64 letters, digits, `_`, `-` or `/` (e.g. `otlp` or `traces/tenant-a`)"
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ComponentId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An address to listen on, written `IP:PORT` (`"0.0.0.0:4317"`, `"[::1]:4318"`) or
/// `localhost:PORT`. Port 0 picks a free port, which the host logs once bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenAddress(pub SocketAddr);

impl FromStr for ListenAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(port) = text.strip_prefix("localhost:")
            && let Ok(port) = port.parse::<u16>()
        {
            return Ok(Self(SocketAddr::from((Ipv4Addr::LOCALHOST, port))));
        }
        text.parse::<SocketAddr>().map(Self).map_err(|_| {
            format!("invalid listen address `{text}`: expected IP:PORT, e.g. \"127.0.0.1:4317\" or \"0.0.0.0:4318\"")
        })
    }
}

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(de::Error::custom)
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The minimum level of the host's own log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything, including per-batch detail.
    Trace,
    /// Diagnostic detail.
    Debug,
    /// Lifecycle events and problems (the default).
    Info,
    /// Problems only.
    Warn,
    /// Data loss and failures an operator must act on.
    Error,
}

impl LogLevel {
    /// The `tracing` filter directive for this level.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// `[service]`: settings of the host itself.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Where `/healthz`, `/readyz` and `/metrics` are served: `admin_address = "127.0.0.1:8888"`.
    pub admin_address: Spanned<ListenAddress>,
    /// `log_level = "info"`; the `SLUICE_LOG` or `RUST_LOG` environment variable overrides it.
    pub log_level: LogLevel,
    /// How long a shutdown may take to drain queues and flush exporters: `shutdown_grace = "30s"`.
    pub shutdown_grace: HumanDuration,
    /// The most memory the host may use: `memory_limit = "512MiB"`. Above 80% of it the
    /// receivers refuse new data (503 / RESOURCE_EXHAUSTED, retryable) until usage falls below
    /// 70%. Set it a little under the container's limit. None by default.
    pub memory_limit: Option<Spanned<ByteSize>>,
    /// The token the admin endpoints that change state or show data (`POST /reload`) require:
    /// `admin_auth = { bearer = { token = { file = "/run/secrets/admin-token" } } }`. Without
    /// one they are open on a loopback `admin_address` and off on any other.
    pub admin_auth: Option<ReceiverAuthConfig>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            admin_address: Spanned::new(0..0, ListenAddress(SocketAddr::from((Ipv4Addr::LOCALHOST, 8888)))),
            log_level: LogLevel::Info,
            shutdown_grace: HumanDuration(Duration::from_secs(30)),
            memory_limit: None,
            admin_auth: None,
        }
    }
}

/// `[exporters.NAME]`: a destination, chosen by `type`, with its queue.
#[derive(Debug, Clone, PartialEq)]
pub struct ExporterConfig {
    /// Batches that may wait for this exporter before it pushes back on its pipelines.
    pub queue_size: usize,
    /// Where what it has not delivered waits: memory (the default) or disk.
    pub queue: QueueConfig,
    /// The groups of keys its table shares with other types' (client settings, plugin,
    /// series settings), each present where its type holds it.
    pub shared: Shared,
    /// What the exporter is.
    pub kind: ExporterKind,
}

/// `queue = { .. }` on an exporter: where what it has not delivered yet waits.
///
/// ```toml
/// queue = { type = "disk", directory = "/var/lib/sluice/vendor", max_size = "1GiB" }
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub enum QueueConfig {
    /// In memory, `queue_size` batches: lost if the host is killed.
    #[default]
    Memory,
    /// In files that survive the host being killed (see [`crate::disk_queue`]).
    Disk(DiskQueueConfig),
}

/// `queue = { type = "disk", .. }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskQueueConfig {
    /// The directory the queue's files go in (created if missing), relative to the working
    /// directory like the file exporter's; one exporter per directory.
    pub directory: Spanned<PathBuf>,
    /// The most bytes its files may take: `max_size = "1GiB"`.
    #[serde(default = "default_disk_queue_size")]
    pub max_size: Spanned<ByteSize>,
    /// What a full queue does: hold the pipeline back (the default) or drop, counted.
    #[serde(default)]
    pub on_full: OnFull,
    /// When a write reaches the device: before the client is answered (the default), or within
    /// a second.
    #[serde(default)]
    pub sync: SyncPolicy,
}

/// `sync` of a disk queue: when what it wrote is forced to the device (`fdatasync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// Before the client is answered: an acknowledged batch survives the machine crashing or
    /// losing power, not only the process being killed.
    #[default]
    Always,
    /// At most a second later: an acknowledged batch survives the process being killed (the
    /// kernel holds what was written) but a crash of the machine may lose the last second. Far
    /// less CPU and latency per request.
    Periodic,
}

fn default_disk_queue_size() -> Spanned<ByteSize> {
    Spanned::new(0..0, ByteSize::mib(1024))
}

/// The smallest `max_size` a disk queue may have.
pub const MIN_DISK_QUEUE_SIZE: ByteSize = ByteSize::mib(1);

/// A secret: never written in the TOML, but named there — `{ env = "NAME" }` or
/// `{ file = "/run/secrets/name" }` — and read when used. A file is re-read whenever it changes,
/// so a rotated Kubernetes secret takes effect on the next request.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file (its content, trailing newline removed).
    File(PathBuf),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Where a secret comes from is fine to show; the secret itself never is.
        match self {
            SecretSource::Env(name) => write!(f, "env:{name}"),
            SecretSource::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

/// A header value: plain text, or a secret source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A literal, for values that are not secret (`x-scope-orgid = "tenant-1"`).
    Literal(String),
    /// A secret.
    Secret(SecretSource),
}

impl<'de> Deserialize<'de> for Credential {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Credential;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, { env = \"NAME\" } or { file = \"/path\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Credential, E> {
                Ok(Credential::Literal(v.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Credential, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom("expected { env = \"NAME\" } or { file = \"/path\" }"));
                };
                let source = match key.as_str() {
                    "env" => SecretSource::Env(map.next_value()?),
                    "file" => SecretSource::File(map.next_value()?),
                    other => return Err(de::Error::unknown_field(other, &["env", "file"])),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "unexpected `{extra}`: give either `env` or `file`"
                    )));
                }
                Ok(Credential::Secret(source))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `auth = { ... }`: credentials sent with every request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum AuthConfig {
    /// HTTP basic auth (Grafana Cloud: instance ID and API token).
    Basic {
        /// The user name (or instance ID).
        username: Spanned<Credential>,
        /// The password (or token); must be `{ env = .. }` or `{ file = .. }`.
        password: Spanned<Credential>,
    },
    /// `Authorization: Bearer <token>`; the token must be `{ env = .. }` or `{ file = .. }`.
    Bearer {
        /// The token.
        token: Spanned<Credential>,
    },
}

/// `tls = { ... }` of a client: how to trust the server and, for mTLS, who we are.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTlsConfig {
    /// PEM file of CA certificates to trust instead of the system roots.
    pub ca_file: Option<Spanned<PathBuf>>,
    /// PEM client certificate chain, for mTLS.
    pub cert_file: Option<Spanned<PathBuf>>,
    /// PEM private key of the client certificate.
    pub key_file: Option<Spanned<PathBuf>>,
}

/// `retry = { ... }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// `enabled = false` makes every failure final.
    pub enabled: bool,
    /// The first wait: `initial_backoff = "1s"`; it doubles, with jitter, up to `max_backoff`.
    pub initial_backoff: HumanDuration,
    /// The longest wait between attempts.
    pub max_backoff: HumanDuration,
    /// After this long, a batch is given up on, logged and counted: `max_elapsed = "5m"`.
    pub max_elapsed: HumanDuration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_backoff: HumanDuration(Duration::from_secs(1)),
            max_backoff: HumanDuration(Duration::from_secs(30)),
            max_elapsed: HumanDuration(Duration::from_secs(300)),
        }
    }
}

/// How a network exporter (`otlp`, `loadbalancing`, `prometheus_remote_write`, `plugin`) reaches its
/// destination. The keys sit in the exporter's own table, beside its type's keys:
///
/// ```toml
/// [exporters.vendor]
/// type = "otlp"
/// endpoint = "https://otlp.example.com"
/// timeout = "10s"                                             # one attempt
/// headers = { "x-scope-orgid" = "graphistry", "x-api-key" = { env = "API_KEY" } }
/// auth = { basic = { username = "instance-1", password = { file = "/run/secrets/otlp" } } }
/// tls = { ca_file = "/etc/ssl/private-ca.pem" }
/// retry = { initial_backoff = "1s", max_backoff = "30s", max_elapsed = "5m" }
/// on_full = "backpressure"                                    # or "drop"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// How long one attempt may take.
    #[serde(default = "default_otlp_timeout")]
    pub timeout: HumanDuration,
    /// Headers added to every request (gRPC metadata for gRPC); secret values as
    /// `{ env = .. }` / `{ file = .. }`.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<Credential>>,
    /// Basic or bearer authentication.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// TLS settings for `https://` endpoints.
    #[serde(default)]
    pub tls: ClientTlsConfig,
    /// Retries.
    #[serde(default)]
    pub retry: RetryConfig,
    /// What a full queue does.
    #[serde(default)]
    pub on_full: OnFull,
    /// Let credentials go to a plain-text `http://` endpoint that is not on loopback (a private
    /// link: a sidecar, a VPN). Refused by default; one WARN at start when set.
    #[serde(default)]
    pub allow_plaintext_credentials: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeout: default_otlp_timeout(),
            headers: BTreeMap::new(),
            auth: None,
            tls: ClientTlsConfig::default(),
            retry: RetryConfig::default(),
            on_full: OnFull::default(),
            allow_plaintext_credentials: false,
        }
    }
}

/// What a full exporter queue does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFull {
    /// Hold the pipeline back, so receivers answer "retry later" (the default: nothing lost).
    #[default]
    Backpressure,
    /// Drop the batch and count it (for destinations that must never slow the others).
    Drop,
}

/// One attempt's default timeout.
pub(crate) fn default_otlp_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// `[pipelines.NAME]`: which receivers feed which exporters, per signal, through which plugins.
///
/// ```toml
/// [pipelines.default]
/// signals = ["traces", "metrics", "logs"]
/// receivers = ["otlp"]
/// exporters = ["console", "archive"]
///
/// [[pipelines.default.processors]]
/// plugin = "../plugins/dist/drop-spans.wasm"
/// config = { span_names = ["GET /healthz"] }
///
/// [pipelines.default.routes]
/// tenant-a = ["vendor-a"]
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The signals this pipeline carries.
    #[serde(default = "all_signals")]
    pub signals: Vec<Spanned<Signal>>,
    /// Receivers that feed it.
    pub receivers: Spanned<Vec<Spanned<String>>>,
    /// Exporters it feeds; every batch goes to each of them.
    pub exporters: Spanned<Vec<Spanned<String>>>,
    /// Batches that may wait for the pipeline before receivers answer "try later".
    #[serde(default = "default_pipeline_queue")]
    pub queue_size: Spanned<usize>,
    /// The plugins every batch passes through, in order, before it reaches the exporters.
    /// Read by the loader, each as its own keys beside a [`PluginRef`].
    #[serde(skip)]
    pub processors: Vec<ProcessorConfig>,
    /// Route name (as a router plugin answers it) → the exporters that route goes to. Items a
    /// router leaves unrouted, or routes to a name not listed here, go to `exporters`.
    #[serde(default)]
    pub routes: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
}

/// What happens to a batch when a plugin fails on it (trap, deadline, memory, error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Pass the batch on as the plugin received it (the default: a broken rule loses no data).
    #[default]
    Pass,
    /// Drop the batch (for rules whose failure must not let data through, e.g. redaction).
    Drop,
}

impl OnError {
    /// The policy's name, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Pass => "pass",
            OnError::Drop => "drop",
        }
    }
}

/// `limits = { ... }` of a processor: what one call may use.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// Linear memory an instance may grow to: `memory = "64MiB"`.
    pub memory: Spanned<ByteSize>,
    /// Wall-clock time one call may take: `timeout = "100ms"` (rounded up to 5 ms ticks).
    pub timeout: Spanned<HumanDuration>,
    /// Wall-clock time starting an instance may take — creating it and its `init` — once per
    /// instance (at load, on a reload, after a fault): `init_timeout = "1s"`. Longer than a
    /// call's: a Python guest sets up its interpreter there.
    pub init_timeout: Spanned<HumanDuration>,
    /// The longest attribute key an answer may set or rename to: `key_size = "1KiB"`.
    pub key_size: Spanned<ByteSize>,
    /// The longest string value an answer may set: `value_size = "64KiB"`.
    pub value_size: Spanned<ByteSize>,
    /// How much larger an answer may make a batch: `growth` times its size, plus 64 KiB so a
    /// small batch can still take a few attributes (`growth = 4`).
    pub growth: Spanned<f64>,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            memory: Spanned::new(0..0, ByteSize::mib(64)),
            timeout: Spanned::new(0..0, HumanDuration(Duration::from_millis(100))),
            init_timeout: Spanned::new(0..0, HumanDuration(Duration::from_secs(1))),
            key_size: Spanned::new(0..0, ByteSize::kib(1)),
            value_size: Spanned::new(0..0, ByteSize::kib(64)),
            growth: Spanned::new(0..0, 4.0),
        }
    }
}

/// `[[pipelines.NAME.processors]]`: one WebAssembly plugin in a pipeline's chain — its own
/// keys (`name`, `on_error`) beside the plugin reference's ([`PluginRef`]).
///
/// ```toml
/// [[pipelines.default.processors]]
/// plugin = "../plugins/dist/set-attributes.wasm"   # relative to this TOML file
/// sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"  # optional pin
/// config = { resource = [{ key = "system", value = "graphistry" }] }
/// limits = { memory = "32MiB", timeout = "50ms" }
/// on_error = "pass"
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorConfig {
    /// The name in logs and metrics; the file name without `.wasm` when absent.
    pub name: Option<Spanned<String>>,
    /// What a failure does to the batch.
    pub on_error: OnError,
    /// The plugin it runs.
    pub plugin: PluginRef,
}

/// A processor's own keys; the rest of its table is a [`PluginRef`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProcessorKeys {
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub on_error: OnError,
}

impl ProcessorConfig {
    /// The processor's name: `name`, or the plugin's file stem.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(name) => name.get_ref().clone(),
            None => self
                .plugin
                .plugin
                .get_ref()
                .file_stem()
                .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into()),
        }
    }
}

/// The keys that name a plugin and how it runs, the same in a processor and in a
/// `type = "plugin"` exporter: `plugin`, `sha256`, `config` or `config_file`, `limits`, `env`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginRef {
    /// The `.wasm` component, relative to the config file.
    pub plugin: Spanned<PathBuf>,
    /// The file's expected SHA-256 (hex); a different file is refused.
    #[serde(default)]
    pub sha256: Option<Spanned<String>>,
    /// The plugin's own settings, handed to its `init` as JSON. Filled from `config_file` when
    /// that is given.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// A TOML file (relative to this one) holding the plugin's settings instead of `config`,
    /// so one set of rules serves several pipelines and files.
    #[serde(default)]
    pub config_file: Option<Spanned<PathBuf>>,
    /// Memory and time limits of one call.
    #[serde(default)]
    pub limits: PluginLimits,
    /// Environment variables the plugin may read; it sees no others.
    #[serde(default)]
    pub env: Vec<Spanned<String>>,
}

fn default_pipeline_queue() -> Spanned<usize> {
    Spanned::new(0..0, 128)
}

/// The default queue of an exporter, in batches.
pub const DEFAULT_EXPORTER_QUEUE: usize = 256;

/// Every signal: the default of a receiver's and a pipeline's `signals`.
pub(crate) fn all_signals() -> Vec<Spanned<Signal>> {
    Signal::ALL.iter().map(|s| Spanned::new(0..0, *s)).collect()
}
