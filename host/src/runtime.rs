//! Builds the running host from a validated config and takes it down in order.
//!
//! Start-up goes from the far end inwards — admin, exporters, pipelines, receivers — so nothing
//! accepts data before the stage it feeds exists. Shutdown goes the other way: receivers stop
//! accepting and finish their in-flight requests, then each stage drains its queue into the next
//! as the stage before it lets go of its sending side. Everything acknowledged to a client is
//! therefore exported before the process exits, unless the grace period runs out first.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::config::{ComponentId, Config, Signal};
use crate::metrics::{Metrics, PerSignal};
use crate::pipeline::PipelineInput;
use crate::plugins::chain::Chain;
use crate::{exporters, pipeline, receivers};

/// A host that is serving.
#[derive(Debug)]
pub struct Running {
    admin: Arc<AdminState>,
    admin_address: SocketAddr,
    admin_stop: CancellationToken,
    admin_task: JoinHandle<()>,
    receivers_stop: CancellationToken,
    receivers: Vec<receivers::Listening>,
    pipelines: Vec<JoinHandle<()>>,
    exporters: Vec<JoinHandle<()>>,
    grace: std::time::Duration,
}

impl Running {
    /// The admin listener's bound address.
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
    }

    /// Each receiver listener's label and bound address.
    pub fn receiver_addresses(&self) -> Vec<(String, SocketAddr)> {
        self.receivers.iter().map(|l| (l.label.clone(), l.address)).collect()
    }
}

/// Starts everything `config` describes and marks the host ready.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let admin = Arc::new(AdminState { metrics: metrics.clone(), ready: false.into() });
    let admin_stop = CancellationToken::new();
    let admin_listener = receivers::serve(
        "the admin listener".into(),
        config.service.admin_address.get_ref().0,
        admin::router(admin.clone()),
        &admin_stop,
    )
    .await?;

    // Only what a pipeline uses is built.
    let mut exporter_inputs = BTreeMap::new();
    let mut exporter_tasks = Vec::new();
    for pipeline in config.pipelines.values() {
        let route_exporters = pipeline.routes.values().flat_map(|list| list.get_ref());
        for name in pipeline.exporters.get_ref().iter().chain(route_exporters) {
            let id = ComponentId::new(name.get_ref()).map_err(anyhow::Error::msg)?;
            if exporter_inputs.contains_key(&id) {
                continue;
            }
            let exporter = &config.exporters[&id];
            let (input, task) = exporters::spawn(&id, exporter, &metrics)?;
            exporter_inputs.insert(id, input);
            exporter_tasks.push(task);
        }
    }

    let mut routes: BTreeMap<ComponentId, PerSignal<Vec<PipelineInput>>> = BTreeMap::new();
    let mut pipeline_tasks = Vec::new();
    for (id, pipeline) in &config.pipelines {
        let inputs = |list: &[serde_spanned::Spanned<String>]| -> Vec<_> {
            list.iter().map(|name| exporter_inputs[name.get_ref().as_str()].clone()).collect()
        };
        let destinations = pipeline::Destinations {
            default: inputs(pipeline.exporters.get_ref()),
            routes: pipeline
                .routes
                .iter()
                .map(|(route, list)| (Arc::from(route.as_str()), inputs(list.get_ref())))
                .collect(),
        };
        let chain = Chain::build(id, pipeline, config, &metrics, crate::plugins::loader::default_cache_dir());
        let queue_size = *pipeline.queue_size.get_ref();
        let (input, task) = pipeline::spawn(id.clone(), queue_size, chain, destinations, &metrics);
        pipeline_tasks.push(task);
        let signals: Vec<Signal> = pipeline.signals.iter().map(|s| *s.get_ref()).collect();
        for receiver in pipeline.receivers.get_ref() {
            let id = ComponentId::new(receiver.get_ref()).map_err(anyhow::Error::msg)?;
            let per_signal = routes.entry(id).or_default();
            for signal in &signals {
                per_signal.0[signal_index(*signal)].push(input.clone());
            }
        }
    }
    // The pipelines now end when the receivers let go of their inputs.
    drop(exporter_inputs);

    let receivers_stop = CancellationToken::new();
    let mut listening = Vec::new();
    for (id, per_signal) in &routes {
        let receiver = &config.receivers[id];
        let started = receivers::start(id, receiver, per_signal, &metrics, &receivers_stop).await;
        match started {
            Ok(mut servers) => listening.append(&mut servers),
            Err(error) => {
                receivers_stop.cancel();
                admin_stop.cancel();
                return Err(error.into());
            }
        }
    }
    drop(routes);
    for server in &listening {
        tracing::info!(component = %server.label, address = %server.address, "Listening");
    }
    tracing::info!(address = %admin_listener.address, "Admin listener serving /healthz, /readyz, /metrics");
    admin.ready.store(true, Ordering::Release);
    tracing::info!(
        receivers = listening.len(),
        pipelines = pipeline_tasks.len(),
        exporters = exporter_tasks.len(),
        "Sluice is ready"
    );
    Ok(Running {
        admin,
        admin_address: admin_listener.address,
        admin_stop,
        admin_task: admin_listener.task,
        receivers_stop,
        receivers: listening,
        pipelines: pipeline_tasks,
        exporters: exporter_tasks,
        grace: config.service.shutdown_grace.0,
    })
}

fn signal_index(signal: Signal) -> usize {
    match signal {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

impl Running {
    /// Stops accepting, drains every queue into the exporters, flushes them, and stops the
    /// admin listener. Fails if the grace period runs out first (queued data is then lost).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.admin.ready.store(false, Ordering::Release);
        self.receivers_stop.cancel();
        let drain = async {
            for server in self.receivers {
                let _ = server.task.await;
            }
            for task in self.pipelines {
                let _ = task.await;
            }
            for task in self.exporters {
                let _ = task.await;
            }
        };
        let drained = tokio::time::timeout(self.grace, drain).await;
        self.admin_stop.cancel();
        let _ = self.admin_task.await;
        drained.map_err(|_| {
            let queued: i64 = self.admin.metrics.queue_depth_total();
            tracing::error!(queued_batches = queued, grace = ?self.grace, "Shutdown grace period ran out; queued data is lost");
            anyhow::anyhow!("shutdown grace period of {:?} ran out with {queued} batches still queued", self.grace)
        })
    }
}

/// Runs the host until `stop` resolves, then shuts it down gracefully.
pub async fn run(config: &Config, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let running = start(config).await.context("cannot start")?;
    stop.await;
    tracing::info!("Shutting down: no longer accepting, draining queues");
    running.shutdown().await?;
    tracing::info!("Shutdown complete");
    Ok(())
}
