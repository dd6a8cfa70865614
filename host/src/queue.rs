//! The one bounded queue every stage uses: a channel of batches whose depth gauge and
//! pending-items gauge are kept true by the queue itself, so no stage counts by hand.
//!
//! Depth is batches waiting in the queue. Pending is items taken on and not yet settled: the
//! sender adds a batch's items when it queues it; the consumer settles them once their outcome
//! is known (a pipeline after fanning out, an exporter once sent, rejected or given up on).

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;

use crate::batch::Batch;
use crate::metrics::Metrics;

/// What a queue holds: something with a batch's items to count.
pub trait Queued: Send + 'static {
    /// The items it carries.
    fn items(&self) -> u64;
}

impl Queued for Arc<Batch> {
    fn items(&self) -> u64 {
        Batch::items(self)
    }
}

/// Items as a gauge amount.
fn items(queued: &impl Queued) -> i64 {
    i64::try_from(queued.items()).unwrap_or(i64::MAX)
}

/// The gauges one queue keeps.
#[derive(Debug, Clone)]
struct Gauges {
    depth: Gauge,
    pending: Gauge,
}

impl Gauges {
    fn queued(&self, batch: &impl Queued) {
        self.depth.inc();
        self.pending.inc_by(items(batch));
    }

    fn not_queued(&self, batch: &impl Queued) {
        self.depth.dec();
        self.pending.dec_by(items(batch));
    }
}

/// The sending side; clone it for every producer.
#[derive(Debug)]
pub struct Sender<T = Arc<Batch>> {
    tx: mpsc::Sender<T>,
    gauges: Gauges,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone(), gauges: self.gauges.clone() }
    }
}

/// Why a batch was not queued; the batch comes back.
#[derive(Debug)]
pub enum NotQueued<T = Arc<Batch>> {
    /// The queue is full.
    Full(T),
    /// The consumer is gone.
    Closed(T),
}

/// A slot reserved in a queue: sending into it can't fail.
#[derive(Debug)]
pub struct Reserved<'a, T = Arc<Batch>> {
    permit: mpsc::Permit<'a, T>,
    gauges: &'a Gauges,
}

impl<T: Queued> Reserved<'_, T> {
    /// Puts `batch` in the reserved slot.
    pub fn send(self, batch: T) {
        self.gauges.queued(&batch);
        self.permit.send(batch);
    }
}

impl<T: Queued> Sender<T> {
    /// Whether it has no room now (a hint: room may free or fill up right after).
    pub fn is_full(&self) -> bool {
        self.tx.capacity() == 0
    }

    /// Reserves a slot without waiting; `None` when the queue is full or closed.
    pub fn try_reserve(&self) -> Option<Reserved<'_, T>> {
        self.tx.try_reserve().ok().map(|permit| Reserved { permit, gauges: &self.gauges })
    }

    /// Reserves a slot, waiting while the queue is full; `None` once the consumer is gone.
    pub async fn reserve(&self) -> Option<Reserved<'_, T>> {
        self.tx.reserve().await.ok().map(|permit| Reserved { permit, gauges: &self.gauges })
    }

    /// Queues `batch` if there is room now.
    pub fn try_send(&self, batch: T) -> Result<(), NotQueued<T>> {
        self.gauges.queued(&batch);
        self.tx.try_send(batch).map_err(|error| {
            let (mpsc::error::TrySendError::Full(batch) | mpsc::error::TrySendError::Closed(batch)) = &error;
            self.gauges.not_queued(batch);
            match error {
                mpsc::error::TrySendError::Full(batch) => NotQueued::Full(batch),
                mpsc::error::TrySendError::Closed(batch) => NotQueued::Closed(batch),
            }
        })
    }

    /// Queues `batch`, waiting while the queue is full; gives it back if the consumer is gone.
    pub async fn send(&self, batch: T) -> Result<(), T> {
        self.gauges.queued(&batch);
        self.tx.send(batch).await.map_err(|mpsc::error::SendError(batch)| {
            self.gauges.not_queued(&batch);
            batch
        })
    }

    /// [`Sender::send`] for a thread outside the runtime.
    pub fn blocking_send(&self, batch: T) -> Result<(), T> {
        self.gauges.queued(&batch);
        self.tx.blocking_send(batch).map_err(|mpsc::error::SendError(batch)| {
            self.gauges.not_queued(&batch);
            batch
        })
    }
}

/// The consuming side.
#[derive(Debug)]
pub struct Receiver<T = Arc<Batch>> {
    rx: mpsc::Receiver<T>,
    gauges: Gauges,
}

impl<T: Queued> Receiver<T> {
    /// The next batch; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<T> {
        let batch = self.rx.recv().await?;
        self.gauges.depth.dec();
        Some(batch)
    }

    /// [`Receiver::recv`] for a thread outside the runtime.
    pub fn blocking_recv(&mut self) -> Option<T> {
        let batch = self.rx.blocking_recv()?;
        self.gauges.depth.dec();
        Some(batch)
    }

    /// The next batch if one is waiting.
    pub fn try_recv(&mut self) -> Result<T, mpsc::error::TryRecvError> {
        let batch = self.rx.try_recv()?;
        self.gauges.depth.dec();
        Ok(batch)
    }

    /// `batch`'s items are settled: their outcome is counted (or they were handed on).
    pub fn settle(&self, batch: &T) {
        self.gauges.pending.dec_by(items(batch));
    }
}

/// A queue of `capacity` batches feeding `stage` (`pipeline` or `exporter`) `name`, with its
/// `sluice_queue_depth`, `sluice_queue_capacity` and `sluice_pending_items` series.
pub fn bounded<T: Queued>(
    metrics: &Metrics,
    stage: &str,
    name: &str,
    capacity: usize,
) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::channel(capacity);
    let gauges =
        Gauges { depth: metrics.queue(stage, name, capacity), pending: metrics.pending(stage, name) };
    (Sender { tx, gauges: gauges.clone() }, Receiver { rx, gauges })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch the queue only counts: its bytes are never read here.
    fn batch(items: u64) -> Arc<Batch> {
        Arc::new(Batch::from_encoded(crate::config::Signal::Traces, bytes::Bytes::new(), items))
    }

    #[tokio::test]
    async fn the_gauges_follow_every_batch() {
        let metrics = Metrics::new();
        let (tx, mut rx) = bounded(&metrics, "pipeline", "p", 2);
        let depth = metrics.queue("pipeline", "p", 2);
        let pending = metrics.pending("pipeline", "p");
        tx.try_send(batch(3)).expect("room");
        tx.try_reserve().expect("room").send(batch(2));
        assert!(matches!(tx.try_send(batch(1)), Err(NotQueued::Full(_))), "full at 2");
        assert_eq!((depth.get(), pending.get()), (2, 5), "a refused batch is not counted");
        let first = rx.recv().await.expect("queued");
        assert_eq!((depth.get(), pending.get()), (1, 5), "taken out, not yet settled");
        rx.settle(&first);
        assert_eq!(pending.get(), 2);
        drop(rx);
        assert!(tx.send(batch(4)).await.is_err(), "the consumer is gone");
        assert_eq!(
            (depth.get(), pending.get()),
            (1, 2),
            "a batch that could not be queued is given back uncounted"
        );
    }
}
