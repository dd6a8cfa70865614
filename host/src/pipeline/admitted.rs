//! What a receiver hands a pipeline: the batch, and — when the pipeline writes to a disk queue —
//! a [`Pledge`] the pipeline keeps once the batch is stored, which is when the client may be
//! told it was accepted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::batch::Batch;
use crate::queue::Queued;

/// A batch entering a pipeline.
#[derive(Debug)]
pub struct Admitted {
    /// The batch.
    pub batch: Arc<Batch>,
    /// Kept once the pipeline has written the batch to every disk queue it routes it to; the
    /// receiver waits for it before answering. `None` when nobody waits.
    pub pledge: Option<Pledge>,
}

impl Queued for Admitted {
    fn items(&self) -> u64 {
        self.batch.items()
    }
}

#[derive(Debug)]
struct Shared {
    broken: AtomicBool,
    reason: Mutex<Option<String>>,
    answer: Mutex<Option<oneshot::Sender<Result<(), String>>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last holder let go: every pipeline is done with the batch.
        let answer = self.answer.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        let outcome = if self.broken.load(Ordering::SeqCst) {
            let reason = self.reason.get_mut().unwrap_or_else(|p| p.into_inner()).take();
            Err(reason.unwrap_or_else(|| "a pipeline stopped before storing the batch".into()))
        } else {
            Ok(())
        };
        if let Some(answer) = answer {
            let _ = answer.send(outcome);
        }
    }
}

/// A promise to store a batch, shared by every pipeline the batch entered. It is kept when
/// every holder has dropped it without [`Pledge::break_with`]; dropped while unwinding from a
/// panic, it is broken.
#[derive(Debug, Clone)]
pub struct Pledge(Arc<Shared>);

/// What the receiver waits on: `Ok` once every pipeline stored the batch, else why not.
pub type Receipt = oneshot::Receiver<Result<(), String>>;

impl Pledge {
    /// A pledge and the receipt its outcome arrives on.
    pub fn new() -> (Self, Receipt) {
        let (tx, rx) = oneshot::channel();
        let shared = Shared { broken: false.into(), reason: Mutex::new(None), answer: Mutex::new(Some(tx)) };
        (Self(Arc::new(shared)), rx)
    }

    /// The batch could not be stored, because of `reason`.
    pub fn break_with(&self, reason: String) {
        self.0.broken.store(true, Ordering::SeqCst);
        *self.0.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }
}

impl Drop for Pledge {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.broken.store(true, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_once_every_holder_let_go() {
        let (pledge, mut receipt) = Pledge::new();
        let other = pledge.clone();
        drop(pledge);
        assert!(receipt.try_recv().is_err(), "one pipeline is still at it");
        drop(other);
        assert_eq!(receipt.try_recv().expect("answered"), Ok(()));
    }

    #[test]
    fn broken_by_any_holder() {
        let (pledge, mut receipt) = Pledge::new();
        let other = pledge.clone();
        other.break_with("disk full".into());
        drop((pledge, other));
        assert_eq!(receipt.try_recv().expect("answered"), Err("disk full".into()));
    }

    #[test]
    fn broken_by_a_panic() {
        let (pledge, mut receipt) = Pledge::new();
        let _ = std::thread::spawn(move || {
            let _held = pledge;
            panic!("a pipeline thread dies");
        })
        .join();
        assert!(receipt.try_recv().expect("answered").is_err());
    }
}
