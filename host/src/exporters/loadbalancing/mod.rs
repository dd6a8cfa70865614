//! `type = "loadbalancing"`: a tier of OTLP backends (gateways) in front of which each item goes
//! to the backend that owns its routing key, so that all spans of a trace, or all points of a
//! metric stream, meet on one backend whichever agent sent them.
//!
//! Each backend is a full [`otlp`](super::otlp) exporter (TLS, credentials, batching, retries)
//! with a small queue of its own. Batches from this exporter's queue are split by key on the
//! wire (`split`) and each part handed to its owner's queue; a batch whose items all have one
//! owner goes on as it is. Owners come from a consistent-hash `ring` over the backends the
//! `resolver` currently lists, so a change of backends moves only about 1/N of the keys.
//!
//! A backend that leaves the resolver's answer gets no new keys. What was already queued for it
//! is still delivered to it while it answers; a request of it that fails in a retryable way is
//! handed back and routed to the keys' new owners instead of being retried. A backend that fails
//! but stays listed keeps its keys and is retried as configured, like any OTLP exporter.

pub mod config;
mod resolver;
mod ring;
mod split;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use serde_spanned::Spanned;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use self::config::{LoadBalancingExporterConfig, ResolverConfig};
use self::ring::Ring;
use self::split::Split;
use super::BuildError;
use super::otlp::Handback;
use super::registry::{ExporterType, SharedKeys, Start};
use crate::batch::Batch;
use crate::config::{BatchConfig, ClientConfig, ComponentId, CompressionConfig, Problem};
use crate::log_throttle::LogThrottle;
use crate::metrics::{BalancerMetrics, DeliveryCounters, Metrics, PerSignal};
use crate::queue;

/// Batches each backend's own queue holds. This exporter's `queue_size` is the buffer; a
/// backend's queue only smooths the hand-over (and is what a departing backend still drains).
const BACKEND_QUEUE: usize = 16;

/// One backend: an OTLP exporter fed through its own queue.
struct Backend {
    tx: queue::Sender,
    task: JoinHandle<()>,
    retired: watch::Sender<bool>,
    routed: PerSignal<Counter>,
}

/// The dispatcher's state.
struct Balancer {
    name: ComponentId,
    config: LoadBalancingExporterConfig,
    client: ClientConfig,
    metrics: Arc<Metrics>,
    counters: PerSignal<DeliveryCounters>,
    own: BalancerMetrics,
    backends: BTreeMap<String, Backend>,
    /// The URLs the ring's backend indexes stand for.
    listed: Vec<String>,
    ring: Option<Ring>,
    /// Departed backends still draining; each ends with its URL.
    departing: JoinSet<String>,
    handback_tx: mpsc::UnboundedSender<Arc<Batch>>,
    handback_rx: mpsc::UnboundedReceiver<Arc<Batch>>,
    answers: resolver::Backends,
    /// Whether `answers` may still change (a static list's never does).
    resolving: bool,
    failures: LogThrottle,
}

impl Balancer {
    /// Routes batches until the queue is closed and drained and every departed backend has
    /// finished, then closes the backends and waits for them.
    async fn run(mut self, mut rx: queue::Receiver) {
        let mut open = true;
        loop {
            tokio::select! {
                biased;
                changed = self.answers.changed(), if self.resolving => self.answer_changed(changed.is_ok()),
                Some(batch) = self.handback_rx.recv() => self.reroute(batch).await,
                received = rx.recv(), if open => match received {
                    Some(batch) => {
                        self.route(batch.clone()).await;
                        rx.settle(&batch);
                    }
                    None => open = false,
                },
                Some(done) = self.departing.join_next(), if !self.departing.is_empty() => {
                    if let Ok(url) = done {
                        self.forget(&url);
                    }
                }
            }
            if !open && self.departing.is_empty() {
                // Every departed backend is done, so nothing more comes back after these.
                while let Ok(batch) = self.handback_rx.try_recv() {
                    self.reroute(batch).await;
                }
                break;
            }
        }
        for (_, backend) in std::mem::take(&mut self.backends) {
            drop(backend.tx);
            let _ = backend.task.await;
        }
        tracing::debug!(exporter = %self.name, "Exporter drained");
    }

    /// Applies the resolver's answer, if it has one.
    fn take_answer(&mut self) {
        let answer = self.answers.borrow_and_update().clone();
        if let Some(urls) = answer {
            self.apply(urls);
        }
    }

    /// The resolver's answer changed (`true`), or it will never change again (`false`: a static
    /// list, whose one answer is in).
    fn answer_changed(&mut self, changed: bool) {
        if changed {
            self.take_answer();
        } else {
            self.resolving = false;
        }
    }

    /// Routes a batch a departed backend handed back.
    async fn reroute(&mut self, batch: Arc<Batch>) {
        self.own.rerouted.get(batch.signal()).inc_by(batch.items());
        self.route(batch).await;
    }

    /// Makes `urls` the backends: new ones start, departed ones are retired, and the ring is
    /// rebuilt.
    fn apply(&mut self, urls: Vec<String>) {
        let departed: Vec<String> = self.backends.keys().filter(|url| !urls.contains(url)).cloned().collect();
        for url in departed {
            let Some(Backend { tx, task, retired, .. }) = self.backends.remove(&url) else { continue };
            // Closing its queue lets it drain what it holds; retiring it hands back what fails.
            let _ = retired.send(true);
            drop(tx);
            self.departing.spawn(async move {
                let _ = task.await;
                drop(retired);
                url
            });
        }
        for url in &urls {
            if self.backends.contains_key(url) {
                continue;
            }
            match self.start_backend(url) {
                Ok(backend) => {
                    self.backends.insert(url.clone(), backend);
                }
                Err(message) => tracing::error!(
                    exporter = %self.name, backend = %url,
                    "Cannot start a backend; its keys go to the others: {message}"
                ),
            }
        }
        self.listed = self.backends.keys().cloned().collect();
        self.ring = Ring::new(&self.listed);
        self.own.backends.set(i64::try_from(self.listed.len()).unwrap_or(i64::MAX));
    }

    /// The label of `url`'s queue and pending series.
    fn backend_label(&self, url: &str) -> String {
        format!("{}/{url}", self.name)
    }

    /// Drops the series of a departed backend that has finished (unless it is listed again).
    fn forget(&self, url: &str) {
        if self.backends.contains_key(url) {
            return;
        }
        self.metrics.forget_queue("exporter", &self.backend_label(url));
        self.own.forget(url);
    }

    fn start_backend(&self, url: &str) -> Result<Backend, String> {
        let label = self.backend_label(url);
        let (tx, rx) = queue::bounded(&self.metrics, "exporter", &label, BACKEND_QUEUE);
        let pending = self.metrics.pending("exporter", &label);
        let counters = PerSignal::new(|signal| DeliveryCounters {
            pending: pending.clone(),
            ..self.counters.get(signal).clone()
        });
        let (retired, watching) = watch::channel(false);
        let handback = Handback { retired: watching, to: self.handback_tx.clone() };
        let config = self.config.backend(url);
        let task = super::otlp::spawn(&self.name, &config, &self.client, rx, counters, Some(handback))?;
        let routed = PerSignal::new(|signal| self.own.routed(url, signal));
        Ok(Backend { tx, task, retired, routed })
    }

    /// Splits `batch` by key and hands each part to its backend's queue, waiting while one is
    /// full. If the backends change meanwhile, what is not yet handed over is split again for
    /// the new ones: a backend that stopped answering must not hold up the change that removes
    /// it.
    async fn route(&mut self, batch: Arc<Batch>) {
        // Until the resolver's first answer, batches wait here (and the queue fills behind).
        while self.ring.is_none() && self.resolving {
            let changed = self.answers.changed().await.is_ok();
            self.answer_changed(changed);
        }
        let mut unplaced = VecDeque::from([batch]);
        while let Some(batch) = unplaced.pop_front() {
            let mut parts = self.split(batch).into_iter();
            while let Some((index, part)) = parts.next() {
                let part = match self.hand_over(index, part).await {
                    Ok(()) => continue,
                    Err((part, changed)) => {
                        self.answer_changed(changed);
                        part
                    }
                };
                unplaced.push_back(part);
                unplaced.extend(parts.by_ref().map(|(_, rest)| rest));
                break;
            }
        }
    }

    /// Queues `part` for backend `index`, waiting while its queue is full; gives it back if
    /// the backends change meanwhile (with whether the resolver is still there).
    async fn hand_over(&mut self, index: u32, part: Arc<Batch>) -> Result<(), (Arc<Batch>, bool)> {
        let Some(backend) = self.listed.get(index as usize).and_then(|url| self.backends.get(url)) else {
            self.lose(&part, "its backend is gone");
            return Ok(());
        };
        let slot = match backend.tx.try_reserve() {
            Some(slot) => Some(slot),
            None => tokio::select! {
                slot = backend.tx.reserve() => slot,
                changed = self.answers.changed(), if self.resolving => return Err((part, changed.is_ok())),
            },
        };
        match slot {
            Some(slot) => {
                backend.routed.get(part.signal()).inc_by(part.items());
                slot.send(part);
            }
            // A backend's task only ends once its queue is closed, so it panicked.
            None => self.lose(&part, "its backend stopped"),
        }
        Ok(())
    }

    /// `batch`'s parts by backend index: itself when every item has one owner.
    fn split(&self, batch: Arc<Batch>) -> Vec<(u32, Arc<Batch>)> {
        let Some(ring) = &self.ring else {
            // Only a failed start of every backend leaves no ring once answered.
            self.lose(&batch, "no backend is running");
            return Vec::new();
        };
        let signal = batch.signal();
        match split::split(signal, batch.payload(), self.config.routing_key, ring) {
            Ok(Split::Whole(backend)) => vec![(backend, batch)],
            Ok(Split::Parts(parts)) => parts
                .into_iter()
                .map(|part| {
                    let payload = Bytes::from(part.payload);
                    let piece = Batch::from_encoded(signal, payload, part.items).part_of(&batch);
                    (part.backend, Arc::new(piece))
                })
                .collect(),
            Err(error) => {
                self.lose(&batch, &format!("cannot split the batch: {error}"));
                Vec::new()
            }
        }
    }

    /// Counts `batch` as lost, with one ERROR line per interval.
    fn lose(&self, batch: &Batch, reason: &str) {
        self.counters.get(batch.signal()).failed.inc_by(batch.items());
        if let Some(suppressed) = self.failures.check() {
            tracing::error!(
                exporter = %self.name, signal = %batch.signal(), items = batch.items(),
                similar_failures_not_logged = suppressed, "Batch dropped: {reason}"
            );
        }
    }
}

impl ExporterType for LoadBalancingExporterConfig {
    const SHARED: &'static [SharedKeys] = &[SharedKeys::Client];

    fn endpoints(&self) -> Vec<&Spanned<String>> {
        match &self.resolver {
            ResolverConfig::Static(urls) => urls.iter().collect(),
            ResolverConfig::Dns(_) => Vec::new(),
        }
    }

    fn resolves_endpoints(&self) -> bool {
        true
    }

    fn resolves_in_clear(&self) -> bool {
        matches!(&self.resolver, ResolverConfig::Dns(dns) if dns.scheme == config::Scheme::Http)
    }

    fn sends_client_bodies(&self) -> Option<CompressionConfig> {
        // A batch with one owner reaches its backend as it came, and goes on as the otlp
        // exporter would send it.
        self.backend("").sends_client_bodies()
    }

    fn merges_up_to(&self) -> Option<&BatchConfig> {
        Some(&self.batch)
    }

    fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.concurrency == 0 || self.batch.max_items == 0 {
            problems.push((None, "`concurrency` and `batch.max_items` must be at least 1".into()));
        }
        match &self.resolver {
            ResolverConfig::Static(urls) if urls.is_empty() => {
                problems.push((None, "`resolver.static` lists no backend".into()));
            }
            ResolverConfig::Static(_) => {}
            ResolverConfig::Dns(dns) => {
                if dns.hostname.get_ref().is_empty() {
                    problems.push((Some(dns.hostname.span()), "`hostname` is empty".into()));
                }
                if let (Err(message), Some(server)) = (dns.server_address(), &dns.server) {
                    problems.push((Some(server.span()), message));
                }
            }
        }
        problems
    }

    async fn start(&self, start: Start<'_>) -> Result<JoinHandle<()>, BuildError> {
        let name = start.name;
        let own = start.metrics.balancer(name.as_str());
        let (answers, resolving) = resolver::start(name, &self.resolver, own.resolve_failures.clone())
            .map_err(|message| BuildError::client(name, message))?;
        let (handback_tx, handback_rx) = mpsc::unbounded_channel();
        let mut balancer = Balancer {
            name: name.clone(),
            config: self.clone(),
            client: start.client()?.clone(),
            metrics: start.metrics.clone(),
            counters: start.delivery(),
            own,
            backends: BTreeMap::new(),
            listed: Vec::new(),
            ring: None,
            departing: JoinSet::new(),
            handback_tx,
            handback_rx,
            answers,
            resolving: true,
            failures: LogThrottle::default(),
        };
        // An answer already in (a static list) starts its backends now, before the host reports
        // ready, rather than whenever the task first runs.
        balancer.take_answer();
        let rx = start.queue;
        Ok(tokio::spawn(async move {
            balancer.run(rx).await;
            if let Some(resolving) = resolving {
                resolving.abort();
            }
        }))
    }
}
