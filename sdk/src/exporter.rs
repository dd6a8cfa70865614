//! Exporters deliver batches to destinations the host has no built-in exporter for.
//!
//! An exporter plugin turns a batch into HTTP requests — method, path, headers, body — and the
//! host sends them to the exporter's configured `endpoint` with its own TLS, credentials, queue
//! and retries. The plugin never touches the network and never sees a credential.
//!
//! ```ignore
//! use sluice_sdk::prelude::*;
//!
//! struct Lines;
//!
//! impl Exporter for Lines {
//!     const SIGNALS: Signals = Signals::LOGS;
//!
//!     fn init(_config: &Config) -> Result<Self, String> {
//!         Ok(Lines)
//!     }
//!
//!     fn export(&self, batch: &Batch<'_>) -> Result<Vec<Request>, String> {
//!         let text: String = batch.logs().map(|(log, _)| format!("{}\n", json::text(log.body()))).collect();
//!         Ok(vec![Request::post("/ingest").header("content-type", "text/plain").body(text)])
//!     }
//! }
//!
//! sluice_sdk::export_exporter!(Lines);
//! ```

use serde::Serialize;
use sluice_wire::views::{self, Item, LogRecordView, MetricView, ResourceView, SpanView};

use crate::bindings::types as wit;
use crate::{Config, Signal, Signals};

/// An exporter plugin.
pub trait Exporter: Sized + 'static {
    /// The signals to be called for. The host counts batches of other signals sent to this
    /// exporter as failed, with a log line, so a misrouted pipeline is visible.
    const SIGNALS: Signals = Signals::ALL;

    /// Builds the plugin from its config; an error refuses the plugin with that message.
    fn init(config: &Config) -> Result<Self, String>;

    /// The requests that deliver `batch`, in the order to send them; none to skip it. An error
    /// drops the batch, counted as failed, with the message in the host's log.
    fn export(&self, batch: &Batch<'_>) -> Result<Vec<Request>, String>;
}

/// A batch as the host holds it: an encoded OTLP export request, read in place.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    signal: Signal,
    bytes: &'a [u8],
}

impl<'a> Batch<'a> {
    /// Views `bytes`, an encoded `Export{Trace,Metrics,Logs}ServiceRequest` of `signal`.
    pub fn new(signal: Signal, bytes: &'a [u8]) -> Self {
        Self { signal, bytes }
    }

    /// The batch's signal.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// The encoded request, e.g. to send on unchanged as an OTLP/HTTP protobuf body.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Every item with its resource, in batch order.
    pub fn items(&self) -> impl Iterator<Item = Item<'a>> + 'a {
        views::items(self.signal, self.bytes)
    }

    /// The resources, in batch order.
    pub fn resources(&self) -> impl Iterator<Item = ResourceView<'a>> + 'a {
        views::resources(self.signal, self.bytes)
    }

    /// The items when the batch is of `signal`; nothing (and no walk of the bytes) otherwise.
    fn of(&self, signal: Signal) -> impl Iterator<Item = Item<'a>> + 'a {
        (self.signal == signal).then(|| self.items()).into_iter().flatten()
    }

    /// The spans with their resources (none unless this is a traces batch).
    pub fn spans(&self) -> impl Iterator<Item = (SpanView<'a>, ResourceView<'a>)> + 'a {
        self.of(Signal::Traces).map(|i| (SpanView::new(i.bytes), i.resource))
    }

    /// The metrics with their resources (none unless this is a metrics batch).
    pub fn metrics(&self) -> impl Iterator<Item = (MetricView<'a>, ResourceView<'a>)> + 'a {
        self.of(Signal::Metrics).map(|i| (MetricView::new(i.bytes), i.resource))
    }

    /// The log records with their resources (none unless this is a logs batch).
    pub fn logs(&self) -> impl Iterator<Item = (LogRecordView<'a>, ResourceView<'a>)> + 'a {
        self.of(Signal::Logs).map(|i| (LogRecordView::new(i.bytes), i.resource))
    }
}

/// The HTTP methods a request may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    #[default]
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
}

/// One HTTP request for the host to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// Path and optional query, starting with `/`, appended to the exporter's `endpoint`.
    pub path: String,
    /// Headers; the exporter's configured headers and credentials win over these.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// A request with no headers and an empty body.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self { method, path: path.into(), headers: Vec::new(), body: Vec::new() }
    }

    /// A `POST` to `path`.
    pub fn post(path: impl Into<String>) -> Self {
        Self::new(Method::Post, path)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the body to `value` as JSON, with `content-type: application/json`.
    pub fn json(self, value: &impl Serialize) -> Result<Self, String> {
        let body = serde_json::to_vec(value).map_err(|e| format!("cannot render JSON: {e}"))?;
        Ok(self.header("content-type", "application/json").body(body))
    }
}

impl From<Request> for wit::HttpRequest {
    fn from(request: Request) -> Self {
        let method = match request.method {
            Method::Get => wit::Method::Get,
            Method::Post => wit::Method::Post,
            Method::Put => wit::Method::Put,
            Method::Patch => wit::Method::Patch,
            Method::Delete => wit::Method::Delete,
        };
        wit::HttpRequest { method, path: request.path, headers: request.headers, body: request.body }
    }
}

/// The export macro's `render`: runs the plugin and converts its answer.
#[doc(hidden)]
pub fn __render<E: Exporter>(
    plugin: &E,
    signal: Signal,
    batch: &[u8],
) -> Result<Vec<wit::HttpRequest>, String> {
    let requests = plugin.export(&Batch::new(signal, batch))?;
    Ok(requests.into_iter().map(Into::into).collect())
}

/// Exports an [`Exporter`] as the plugin's `exporter` world.
#[macro_export]
macro_rules! export_exporter {
    ($plugin:ty) => {
        const _: () = {
            $crate::__instance_slot!($plugin);
            struct Exports;
            impl $crate::bindings::exporter::Guest for Exports {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<$crate::bindings::types::PluginInfo, ::std::string::String>
                {
                    let signals = <$plugin as $crate::Exporter>::SIGNALS;
                    $crate::__init(&INSTANCE, &config, <$plugin as $crate::Exporter>::init, signals)
                }
                fn render(
                    batch: &$crate::bindings::batches::Batch,
                ) -> ::std::result::Result<
                    ::std::vec::Vec<$crate::bindings::types::HttpRequest>,
                    ::std::string::String,
                > {
                    $crate::__with_instance(&INSTANCE, |plugin| {
                        {
                            let (signal, bytes) = $crate::__batch_bytes(batch);
                            $crate::exporter::__render(plugin, signal, &bytes)
                        }
                    })
                }
            }
    $crate::bindings::exporter::export_exporter_world!(Exports with_types_in $crate::bindings::exporter);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_builder_sets_json_content_type() {
        let request = Request::post("/hook").json(&serde_json::json!({"a": 1})).expect("renders");
        assert_eq!(request.method, Method::Post);
        assert_eq!(request.headers, [("content-type".to_string(), "application/json".to_string())]);
        assert_eq!(request.body, br#"{"a":1}"#);
    }

    #[test]
    fn signal_accessors_are_empty_for_other_signals() {
        // A logs request with one record (severity 9). Read as a traces or metrics request, the
        // same bytes would hold one span or one metric: only the batch's signal tells them apart.
        let record = [0x10, 0x09];
        let scope = [&[0x12, record.len() as u8][..], &record].concat();
        let resource = [&[0x12, scope.len() as u8][..], &scope].concat();
        let request = [&[0x0a, resource.len() as u8][..], &resource].concat();
        let batch = Batch::new(Signal::Logs, &request);
        assert_eq!(batch.logs().count(), 1);
        assert_eq!(batch.logs().next().expect("one record").0.severity_number(), 9);
        assert_eq!(batch.spans().count(), 0);
        assert_eq!(batch.metrics().count(), 0);
        assert_eq!(Batch::new(Signal::Traces, &request).spans().count(), 1, "the same bytes, as traces");
        assert_eq!(Batch::new(Signal::Traces, &request).logs().count(), 0);
    }
}
