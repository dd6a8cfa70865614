//! `type = "plugin"`: a WebAssembly exporter plugin renders each batch as HTTP requests; the
//! host sends them to the configured `endpoint` through [`delivery`](super::http::delivery) — the
//! same credentials, TLS, retries and counters as the built-in network exporters.
//!
//! The plugin runs on the exporter's own thread under its sandbox (deadline, memory cap, no
//! network); the requests are sent one after another from that thread on the runtime, so a
//! batch's requests arrive in the order the plugin gave them. A fault, an invalid request or a
//! batch of a signal the plugin doesn't handle is counted as failed and logged; the plugin
//! never takes the host down.

pub mod config;

use super::BuildError;
use super::registry::{ExporterType, SharedKeys, Start};
use crate::config::ClientConfig;
use serde_spanned::Spanned;

use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::http::delivery::{Delivery, Outgoing, Settings, judge_http_status};
use crate::batch::Batch;
use crate::config::{ComponentId, Config, PluginExporterConfig};
use crate::metrics::{DeliveryCounters, PerSignal, PluginMetrics};
use crate::plugins::bindings::types;
use crate::plugins::runner::{Answer, Plugin, Spec, Step};
use crate::queue;

/// Headers that belong to the connection, which the host manages.
const CONNECTION_HEADERS: &[&str] =
    &["host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer"];

/// A plugin's request, checked and ready to send.
struct Prepared {
    method: Method,
    url: http::Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// Checks one request a plugin returned and joins its path to `base` (the endpoint without a
/// trailing `/`).
fn prepare(base: &str, request: types::HttpRequest) -> Result<Prepared, String> {
    let method = Method::from(request.method);
    if !request.path.starts_with('/') {
        return Err(format!("request path `{}` does not start with `/`", request.path));
    }
    let url = format!("{base}{}", request.path)
        .parse()
        .map_err(|e| format!("request path `{}` does not make a valid URL: {e}", request.path))?;
    let mut headers = HeaderMap::new();
    for (name, value) in request.headers {
        let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("`{name}` is not a valid header name"))?;
        if CONNECTION_HEADERS.contains(&name.as_str()) {
            return Err(format!("header `{name}` is the host's to set"));
        }
        let value =
            HeaderValue::from_str(&value).map_err(|_| format!("header `{name}` has an invalid value"))?;
        headers.append(name, value);
    }
    Ok(Prepared { method, url, headers, body: Bytes::from(request.body) })
}

/// What the exporter thread needs besides its queue.
struct Worker {
    plugin: Plugin,
    delivery: Delivery,
    base: String,
    metrics: PluginMetrics,
    runtime: tokio::runtime::Handle,
}

impl Worker {
    fn handle(&mut self, batch: &Batch) {
        let (signal, items) = (batch.signal(), batch.items());
        let started = Instant::now();
        let step = self.plugin.run(signal, batch.payload());
        let requests = match step {
            Step::Answered(Answer::Requests(requests)) => {
                self.metrics.calls.inc();
                self.metrics.items_in.inc_by(items);
                self.metrics.duration.observe(started.elapsed().as_secs_f64());
                requests
            }
            Step::Skipped => {
                let reason = format!("the plugin does not export {signal}; route only what it handles here");
                return self.delivery.give_up(signal, items, &reason);
            }
            Step::Faulted(fault) => {
                self.metrics.fault(fault.kind);
                let reason = format!("plugin fault ({}): {}", fault.kind, fault.message);
                return self.delivery.give_up(signal, items, &reason);
            }
            // Loading refuses processor plugins here, so no other answer arrives.
            Step::Answered(_) => {
                self.metrics.fault("invalid_answer");
                return self.delivery.give_up(signal, items, "the plugin is not an exporter");
            }
        };
        let prepared: Result<Vec<Prepared>, String> =
            requests.into_iter().map(|r| prepare(&self.base, r)).collect();
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(reason) => {
                self.metrics.fault("invalid_answer");
                return self.delivery.give_up(
                    signal,
                    items,
                    &format!("the plugin's request is invalid: {reason}"),
                );
            }
        };
        let delivery = &self.delivery;
        let outcome = self.runtime.block_on(async {
            let mut first_failure = None;
            for request in &prepared {
                let outgoing = Outgoing {
                    method: &request.method,
                    url: &request.url,
                    headers: &request.headers,
                    body: request.body.clone(),
                };
                if let Err(reason) = delivery.send(signal, items, outgoing, judge_http_status).await {
                    first_failure.get_or_insert(reason);
                }
            }
            first_failure
        });
        match outcome {
            None => delivery.delivered(signal, items, 0),
            Some(reason) => delivery.give_up(signal, items, &reason),
        }
    }
}

/// Loads the plugin and starts the exporter's thread. The plugin is loaded on that thread
/// (compiling takes up to a few hundred milliseconds); with `refuse_unloadable` (a reload) a
/// plugin that cannot be loaded is an error, so the old exporter keeps serving. At start-up it
/// is logged instead, and retried with backoff while its batches are counted as failed.
pub async fn spawn(
    name: &ComponentId,
    plugin: &PluginExporterConfig,
    client: &ClientConfig,
    config: &Config,
    refuse_unloadable: bool,
    parts: (queue::Receiver, PerSignal<DeliveryCounters>, PluginMetrics),
) -> Result<JoinHandle<()>, String> {
    let (mut rx, counters, metrics) = parts;
    let base = plugin.endpoint.get_ref().trim_end_matches('/').to_string();
    let delivery = Delivery::new(Settings { name, client, http2_only: false, counters })?;
    let place = crate::config::PluginPlace::Exporter(name.clone());
    let plugin_use = config.plugin_uses().into_iter().find(|u| u.place == place);
    let Some(plugin_use) = plugin_use else {
        return Err(format!("exporter `{name}` is not a plugin exporter of this config"));
    };
    let spec = Spec::for_use(&plugin_use, config, crate::plugins::loader::default_cache_dir());
    let (loaded_tx, loaded_rx) = oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    let exporter = name.clone();
    let task = tokio::task::spawn_blocking(move || {
        let (plugin, load_fault) = Plugin::new(spec);
        if let Some(fault) = &load_fault {
            metrics.fault(fault.kind);
        }
        let refused = refuse_unloadable && load_fault.is_some();
        let _ = loaded_tx.send(load_fault.map(|f| f.message));
        if refused {
            return;
        }
        let mut worker = Worker { plugin, delivery, base, metrics, runtime };
        while let Some(batch) = rx.blocking_recv() {
            worker.handle(&batch);
        }
        tracing::debug!(%exporter, "Exporter drained");
    });
    match loaded_rx.await {
        Ok(Some(message)) if refuse_unloadable => Err(format!("plugin cannot be loaded: {message}")),
        Ok(_) => Ok(task),
        Err(_) => Err("the exporter thread stopped while loading its plugin".into()),
    }
}

impl ExporterType for PluginExporterConfig {
    const SHARED: &'static [SharedKeys] = &[SharedKeys::Plugin, SharedKeys::Client];

    fn endpoints(&self) -> Vec<&Spanned<String>> {
        vec![&self.endpoint]
    }

    async fn start(&self, start: Start<'_>) -> Result<JoinHandle<()>, BuildError> {
        let parts = (start.delivery(), start.plugin_metrics());
        let (name, client, config, reloading) = (start.name, start.client()?, start.config, start.reloading);
        let failed = |message| BuildError::client(name, message);
        spawn(name, self, client, config, reloading, (start.queue, parts.0, parts.1)).await.map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, headers: &[(&str, &str)]) -> types::HttpRequest {
        types::HttpRequest {
            method: types::Method::Put,
            path: path.into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: b"{}".to_vec(),
        }
    }

    #[test]
    fn joins_paths_to_the_endpoint() {
        let prepared =
            prepare("https://logs.example.com/base", request("/push?x=1", &[("Content-Type", "a/b")]))
                .expect("valid");
        assert_eq!(prepared.method, Method::PUT);
        assert_eq!(prepared.url.to_string(), "https://logs.example.com/base/push?x=1");
        assert_eq!(prepared.headers["content-type"], "a/b");
        // A path cannot move the request to another host.
        let sneaky = prepare("https://logs.example.com", request("//evil.example/x", &[])).expect("valid");
        assert_eq!(sneaky.url.host(), Some("logs.example.com"));
    }

    #[test]
    fn refuses_bad_requests() {
        for (path, headers, message) in [
            ("push", vec![], "does not start with `/`"),
            ("/a b", vec![], "valid URL"),
            ("/", vec![("Host", "evil")], "the host's to set"),
            ("/", vec![("Content-Length", "9")], "the host's to set"),
            ("/", vec![("bad header", "x")], "not a valid header name"),
            ("/", vec![("x-ok", "line\nbreak")], "invalid value"),
        ] {
            let error = prepare("http://h", request(path, &headers)).err().expect(message);
            assert!(error.contains(message), "{error}");
        }
    }
}
