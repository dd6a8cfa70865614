//! The serving host: starts the topology a config describes, swaps in what a reload builds,
//! drains what it replaced, and takes everything down in order.
//!
//! Start-up goes from the far end inwards — admin, exporters, pipelines, receivers — so nothing
//! accepts data before the stage it feeds exists. Shutdown goes the other way: receivers stop
//! accepting and finish their in-flight requests, then each stage drains its queue into the next
//! as the stage before it lets go of its sending side. Everything acknowledged to a client is
//! therefore exported before the process exits, unless the grace period runs out first.
//!
//! A reload builds the new topology beside the old one, reusing every component the
//! [`Diff`] keeps — a receiver keeps its sockets, an exporter its queue, connections and retries,
//! a pipeline its queue and plugin instances — and then swaps what each receiver feeds atomically.
//! Batches already accepted finish on the pipelines they entered; the replaced pipelines and
//! exporters drain and stop on their own. A reload that fails leaves the old topology serving.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::build::{self, Built, Components};
use super::diff::{Change, Diff, FileHashes, Snapshot};
use crate::admin::{self, AdminState, ReloadRequest};
use crate::config::{ComponentId, Config, Loaded};
use crate::memory::MemoryGuard;
use crate::metrics::Metrics;
use crate::receivers;

/// A host that is serving.
pub struct Running {
    config: Config,
    /// The plugin files `config` was built from.
    hashes: FileHashes,
    /// SHA-256 of the serving config file's text.
    config_sha256: String,
    config_path: Option<PathBuf>,
    /// Files a refused reload's config named beyond the serving config's: watched too, so
    /// fixing (or building) one of them triggers the next try.
    refused_files: Vec<PathBuf>,
    metrics: Arc<Metrics>,
    /// The memory bound the receivers consult; its sampler stops with the admin listener.
    memory: Arc<MemoryGuard>,
    admin: Arc<AdminState>,
    admin_address: SocketAddr,
    admin_stop: CancellationToken,
    admin_task: JoinHandle<()>,
    components: Components,
    /// Replaced components finishing their work.
    draining: Vec<JoinHandle<()>>,
}

/// The components `changes` keeps (from `old`) and builds (from `fresh`); the replaced and
/// removed ones' tasks go to `draining`.
fn swap<T>(
    changes: &BTreeMap<ComponentId, Change>,
    mut old: BTreeMap<ComponentId, T>,
    mut fresh: BTreeMap<ComponentId, T>,
    draining: &mut Vec<JoinHandle<()>>,
    task: impl Fn(T) -> JoinHandle<()>,
) -> BTreeMap<ComponentId, T> {
    let mut next = BTreeMap::new();
    for (id, change) in changes {
        let previous = old.remove(id);
        let serving = match change {
            Change::Keep => previous.expect("kept, so serving"),
            Change::Build => {
                draining.extend(previous.map(&task));
                fresh.remove(id).expect("built by the diff")
            }
            Change::Remove => {
                draining.extend(previous.map(&task));
                continue;
            }
        };
        next.insert(id.clone(), serving);
    }
    next
}

impl Running {
    /// The admin listener's bound address.
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
    }

    /// Each receiver listener's label and bound address.
    pub fn receiver_addresses(&self) -> Vec<(String, SocketAddr)> {
        let listeners = self.components.receivers.values().flat_map(|r| &r.listeners);
        listeners.map(|l| (l.label.clone(), l.address)).collect()
    }

    /// Every file whose change should trigger a reload, besides the config itself.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = self.config.plugin_files();
        files.extend(self.refused_files.iter().cloned());
        files.sort();
        files.dedup();
        files
    }

    /// Builds what `diff` says beside the serving topology and swaps it in. On error, what was
    /// built for the attempt is dropped and the serving topology is untouched (except receivers
    /// rebuilt on the same address, which had to let go of it).
    async fn apply(
        &mut self,
        diff: &Diff,
        config: &Config,
        hashes: FileHashes,
        reloading: bool,
    ) -> anyhow::Result<()> {
        let snapshot = Snapshot { config, hashes: &hashes };
        let shared = (&self.metrics, &self.memory, &self.admin.taps);
        let built = build::build(diff, snapshot, &mut self.components, shared, reloading).await?;
        self.commit(diff, built);
        self.memory.set_limit(config.service.memory_limit.as_ref().map(|limit| limit.get_ref().0));
        self.admin.taps.set_points(crate::tap::points(config));
        self.config = config.clone();
        self.hashes = hashes;
        Ok(())
    }

    /// Swaps `built` in as `diff` says: from here on nothing fails.
    fn commit(&mut self, diff: &Diff, built: Built) {
        let Built { components: mut fresh, feeds } = built;
        let mut old = std::mem::take(&mut self.components);
        let mut next = Components::default();
        let draining = &mut self.draining;

        for (id, change) in &diff.receivers {
            let previous = old.receivers.remove(id);
            match (change, previous) {
                (Change::Keep, Some(receiver)) => {
                    receiver.feeds.store(Arc::new(feeds.get(id).cloned().unwrap_or_default()));
                    next.receivers.insert(id.clone(), receiver);
                }
                (Change::Build, _) => {
                    let receiver = fresh.receivers.remove(id).expect("built by the diff");
                    next.receivers.insert(id.clone(), receiver);
                }
                (_, Some(receiver)) => {
                    receiver.stop.cancel();
                    draining.extend(receiver.tasks());
                }
                (_, None) => {}
            }
        }
        // A replaced pipeline or exporter drains on its own: its queue closes once the last
        // sender (an in-flight request, the stage before it) lets go.
        next.pipelines = swap(&diff.pipelines, old.pipelines, fresh.pipelines, draining, |p| p.task);
        next.exporters = swap(&diff.exporters, old.exporters, fresh.exporters, draining, |e| e.task);
        let kept =
            old.instances.into_iter().filter(|(key, _)| diff.instances.get(key) == Some(&Change::Keep));
        next.instances = kept.chain(fresh.instances).collect();
        self.components = next;
        self.draining.retain(|task| !task.is_finished());
    }

    /// Reloads from the config file: validate, build beside, swap. Refuses changes that can't
    /// be applied live.
    pub async fn reload(&mut self) -> Result<Diff, String> {
        let Some(path) = self.config_path.clone() else {
            return Err("this host was not started from a file".into());
        };
        let outcome = self.reload_from(&path).await;
        match &outcome {
            Ok(diff) => {
                self.refused_files.clear();
                tracing::info!(config = %path.display(), sha256 = %self.config_sha256, "Reloaded: {diff}")
            }
            Err(error) => {
                // Watch what the refused file names too: fixing a plugin it names is a change.
                self.refused_files = crate::config::load_file(&path, None)
                    .map(|loaded| loaded.config.plugin_files())
                    .unwrap_or_default();
                tracing::error!(config = %path.display(), "Reload failed; the previous configuration keeps serving:\n{error}")
            }
        }
        *self.admin.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(admin::ReloadOutcome {
            result: outcome.as_ref().map(ToString::to_string).map_err(Clone::clone),
            serving_sha256: self.config_sha256.clone(),
        });
        // Counted last: whoever sees the counter move finds `GET /reload` already telling it.
        self.metrics.reload(if outcome.is_ok() { "success" } else { "failure" });
        outcome
    }

    async fn reload_from(&mut self, path: &Path) -> Result<Diff, String> {
        let preflight = crate::plugins::runner::Preflight;
        let loaded = crate::config::load_file(path, Some(&preflight)).map_err(|e| e.to_string())?;
        let hashes = FileHashes::read(&loaded.config);
        let old = Snapshot { config: &self.config, hashes: &self.hashes };
        let diff = Diff::reload(old, Snapshot { config: &loaded.config, hashes: &hashes })
            .map_err(|refusal| refusal.to_string())?;
        for warning in &loaded.warnings {
            tracing::warn!(config = %path.display(), "{warning}");
        }
        self.apply(&diff, &loaded.config, hashes, true).await.map_err(|e| format!("{e:#}"))?;
        self.config_sha256 = loaded.sha256;
        Ok(diff)
    }

    /// Stops accepting, drains every queue into the exporters, flushes them, and stops the
    /// admin listener. Fails if the grace period runs out first (queued data is then lost).
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.admin.ready.store(false, Ordering::Release);
        let grace = self.config.service.shutdown_grace.0;
        let components = std::mem::take(&mut self.components);
        let draining = std::mem::take(&mut self.draining);
        let drain = async move {
            let mut tasks = Vec::new();
            for receiver in components.receivers.into_values() {
                receiver.stop.cancel();
                tasks.extend(receiver.tasks());
            }
            for task in tasks {
                let _ = task.await;
            }
            // Receivers are gone; dropping our inputs lets each pipeline, then exporter, finish.
            let pipelines: Vec<_> = components.pipelines.into_values().map(|p| p.task).collect();
            let exporters: Vec<_> = components.exporters.into_values().map(|e| e.task).collect();
            for task in draining.into_iter().chain(pipelines).chain(exporters) {
                let _ = task.await;
            }
        };
        let drained = tokio::time::timeout(grace, drain).await;
        if drained.is_err() {
            // What is cut off now was not delivered: disk queues must not count it settled as
            // the tasks holding it are dropped, so the next start delivers it.
            crate::disk_queue::freeze();
        }
        // Open taps would hold the admin listener's graceful stop open forever.
        self.admin.taps.close();
        self.admin_stop.cancel();
        let _ = (&mut self.admin_task).await;
        drained.map_err(|_| {
            // Everything taken on and not settled: queued, in a plugin, in a request, or waiting
            // to retry. An item on its way from a pipeline to an exporter counts in both.
            let queued = self.metrics.queue_depth_total();
            let (in_pipelines, in_exporters) = self.metrics.pending_items_total();
            tracing::error!(
                queued_batches = queued,
                pipeline_items = in_pipelines,
                exporter_items = in_exporters,
                ?grace,
                "Shutdown grace period ran out; data not yet delivered is lost, except what disk queues hold (delivered after the next start)"
            );
            anyhow::anyhow!(
                "shutdown grace period of {grace:?} ran out with {in_exporters} items not yet delivered by \
                 exporters (queued or being retried) and {in_pipelines} items still in pipelines"
            )
        })
    }
}

/// Starts everything `loaded` describes and marks the host ready. `config_path` is where
/// reloads read from.
pub async fn start(
    loaded: &Loaded,
    config_path: Option<&Path>,
) -> anyhow::Result<(Running, mpsc::Receiver<ReloadRequest>)> {
    let config = &loaded.config;
    let metrics = Arc::new(Metrics::new());
    let (reload_tx, reload_rx) = mpsc::channel(8);
    let admin = Arc::new(AdminState {
        metrics: metrics.clone(),
        ready: false.into(),
        reload: reload_tx,
        serving_sha256: loaded.sha256.clone(),
        last_reload: Default::default(),
        taps: Arc::new(crate::tap::Taps::new(&metrics)),
        guard: admin::AdminGuard::new(
            config.service.admin_address.get_ref().0,
            config.service.admin_auth.as_ref(),
        ),
    });
    if matches!(admin.guard, admin::AdminGuard::Off) {
        tracing::warn!(
            address = %config.service.admin_address.get_ref().0,
            "The admin listener is not on loopback and has no service.admin_auth: POST /reload and \
             GET /tap are off (403); probes, /metrics and GET /reload stay open. Set a bearer token \
             to turn them on"
        );
    }
    let admin_stop = CancellationToken::new();
    let memory = MemoryGuard::new(config.service.memory_limit.as_ref().map(|l| l.get_ref().0), &metrics);
    memory.spawn_sampler(admin_stop.clone());
    let admin_listener = receivers::serve(
        "the admin listener".into(),
        config.service.admin_address.get_ref().0,
        admin::router(admin.clone()),
        &admin_stop,
    )
    .await?;
    let mut running = Running {
        config: config.clone(),
        hashes: FileHashes::default(),
        config_sha256: loaded.sha256.clone(),
        config_path: config_path.map(Path::to_path_buf),
        refused_files: Vec::new(),
        metrics,
        memory,
        admin: admin.clone(),
        admin_address: admin_listener.address,
        admin_stop,
        admin_task: admin_listener.task,
        components: Components::default(),
        draining: Vec::new(),
    };
    let hashes = FileHashes::read(config);
    let diff = Diff::start(Snapshot { config, hashes: &hashes });
    if let Err(error) = running.apply(&diff, config, hashes, false).await {
        running.admin_stop.cancel();
        return Err(error);
    }
    tracing::info!(address = %running.admin_address, "Admin listener serving /healthz, /readyz, /metrics, /reload, /tap");
    admin.ready.store(true, Ordering::Release);
    tracing::info!(
        receivers = running.components.receivers.len(),
        pipelines = running.components.pipelines.len(),
        exporters = running.components.exporters.len(),
        "Sluice is ready"
    );
    Ok((running, reload_rx))
}

/// Runs the host until `stop` resolves, reloading on SIGHUP, `POST /reload` and changes to the
/// config file or the files it names; then shuts down gracefully.
pub async fn run(loaded: &Loaded, config_path: &Path, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let (mut running, mut reloads) = start(loaded, Some(config_path)).await.context("cannot start")?;
    let mut watcher = crate::reload::Watcher::new(config_path, running.watched_files());
    let mut hangups = crate::reload::hangups();
    tokio::pin!(stop);
    loop {
        let reply: Option<oneshot::Sender<Result<String, String>>> = tokio::select! {
            () = &mut stop => break,
            request = reloads.recv() => match request {
                Some(request) => Some(request.reply),
                None => continue,
            },
            () = hangups.recv() => {
                tracing::info!("Received SIGHUP; reloading");
                None
            }
            () = watcher.changed() => {
                tracing::info!(config = %config_path.display(), "Configuration or plugin files changed; reloading");
                None
            }
        };
        let before = watcher.look();
        let outcome = running.reload().await;
        watcher.rewatch(running.watched_files(), before);
        if let Some(reply) = reply {
            let _ = reply.send(outcome.map(|diff| diff.to_string()));
        }
    }
    tracing::info!("Shutting down: no longer accepting, draining queues");
    running.shutdown().await?;
    tracing::info!("Shutdown complete");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_text(extra_exporter: bool, grpc_port: u16) -> String {
        let extra = if extra_exporter { "\n[exporters.extra]\ntype = \"discard\"\n" } else { "" };
        let exporters = if extra_exporter { r#"["out", "extra"]"# } else { r#"["out"]"# };
        format!(
            "[service]\nadmin_address = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\
             [receivers.otlp]\ntype = \"otlp\"\ngrpc = {{ address = \"127.0.0.1:{grpc_port}\" }}\nhttp = {{ enabled = false }}\n\
             [exporters.out]\ntype = \"discard\"\n{extra}\
             [pipelines.all]\nreceivers = [\"otlp\"]\nexporters = {exporters}\n"
        )
    }

    #[tokio::test]
    async fn a_reload_keeps_the_sockets_and_swaps_in_what_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sluice.toml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        std::fs::write(&path, config_text(false, port)).expect("writes");
        let loaded = crate::config::load_file(&path, None).expect("valid");
        let (mut running, _reloads) = start(&loaded, Some(&path)).await.expect("starts");
        let [(_, address)] = running.receiver_addresses()[..] else { panic!("one listener") };

        std::fs::write(&path, config_text(true, port)).expect("writes");
        let diff = running.reload().await.expect("applies");
        assert_eq!(diff.named(Change::Build), ["exporter extra", "pipeline all"]);
        assert_eq!(diff.named(Change::Keep), ["exporter out", "receiver otlp"]);
        assert!(diff.named(Change::Remove).is_empty());
        assert_eq!(running.components.exporters.len(), 2);
        assert_eq!(running.draining.len(), 1, "the replaced pipeline drains");
        let [(_, still)] = running.receiver_addresses()[..] else { panic!("one listener") };
        assert_eq!(still, address, "the kept receiver kept its socket");

        // Unchanged now: everything kept, nothing drains.
        let diff = running.reload().await.expect("applies");
        assert!(diff.named(Change::Build).is_empty() && diff.named(Change::Remove).is_empty(), "{diff}");
        assert_eq!(running.receiver_addresses()[0].1, address);

        // A removed exporter drains and stops.
        std::fs::write(&path, config_text(false, port)).expect("writes");
        let diff = running.reload().await.expect("applies");
        assert_eq!(diff.named(Change::Remove), ["exporter extra"]);
        assert_eq!(running.components.exporters.len(), 1);

        // A refused reload leaves the serving topology as it was.
        std::fs::write(&path, config_text(true, port).replace("discard", "bogus")).expect("writes");
        let error = running.reload().await.expect_err("refused");
        assert!(error.contains("unknown type `bogus`"), "{error}");
        assert_eq!(running.components.exporters.len(), 1);
        running.shutdown().await.expect("drains");
    }
}
