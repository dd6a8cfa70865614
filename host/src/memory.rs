//! The host's memory bound (`service.memory_limit`): above a soft threshold the receivers refuse
//! new data with a retryable answer until usage falls, so the process stays under the limit
//! instead of being killed with everything it holds.
//!
//! Usage is the resident set size, sampled from `/proc/self/status` every [`SAMPLE_EVERY`] while a
//! limit is set (every [`GAUGE_EVERY`] otherwise, for the gauge alone), plus
//! the bodies admitted since the last sample (a burst of large requests arrives faster than a
//! sampler sees it). mimalloc returns freed memory promptly, so the resident size falls as
//! queues drain. What can still pass the threshold is what is in flight when it is crossed:
//! request bodies being read (each receiver's connections × its size limit) and the work on
//! batches already queued; the threshold, [`SOFT_SHARE`] of the limit, leaves that room.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How often the resident size is read while a limit is set.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// How often it is read without a limit, for the gauge alone: reading it twenty times a second
/// was most of what an idle host spent (about 6 ms of CPU a second, with the config watcher).
pub const GAUGE_EVERY: Duration = Duration::from_secs(1);

/// The share of the limit above which new data is refused.
pub const SOFT_SHARE: f64 = 0.8;

/// The share of the limit usage must fall below before data is accepted again (so refusing
/// doesn't flap at the threshold).
pub const RESUME_SHARE: f64 = 0.7;

/// The memory bound, shared by every receiver.
#[derive(Debug)]
pub struct MemoryGuard {
    /// The limit in bytes; 0: none.
    limit: AtomicU64,
    /// The resident size at the last sample.
    resident: AtomicU64,
    /// Bytes admitted since the last sample.
    admitted: AtomicU64,
    refusing: AtomicBool,
    gauges: MemoryGauges,
}

#[derive(Debug)]
struct MemoryGauges {
    limit: Gauge,
    resident: Gauge,
    refusing: Gauge,
}

impl MemoryGuard {
    /// A guard for `limit` bytes (`None`: no limit; usage is still measured).
    pub fn new(limit: Option<u64>, metrics: &Metrics) -> Arc<Self> {
        let gauges = MemoryGauges {
            limit: metrics.memory_limit_bytes.clone(),
            resident: metrics.memory_resident_bytes.clone(),
            refusing: metrics.memory_refusing.clone(),
        };
        let guard = Self {
            limit: AtomicU64::new(0),
            resident: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            gauges,
        };
        guard.set_limit(limit);
        guard.sample();
        Arc::new(guard)
    }

    /// Changes the limit (a reload); the next sample applies it.
    pub fn set_limit(&self, limit: Option<u64>) {
        let limit = limit.unwrap_or(0);
        self.limit.store(limit, Ordering::Relaxed);
        self.gauges.limit.set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// Reads the resident size and decides whether to refuse until the next sample.
    pub fn sample(&self) {
        let Some(resident) = resident_bytes() else { return };
        self.resident.store(resident, Ordering::Relaxed);
        self.admitted.store(0, Ordering::Relaxed);
        self.gauges.resident.set(i64::try_from(resident).unwrap_or(i64::MAX));
        let refusing = self.refusing.load(Ordering::Relaxed);
        let now = match self.limit.load(Ordering::Relaxed) {
            0 => false,
            limit if refusing => resident >= share(limit, RESUME_SHARE),
            limit => resident >= share(limit, SOFT_SHARE),
        };
        if now != refusing {
            self.refusing.store(now, Ordering::Relaxed);
            self.gauges.refusing.set(i64::from(now));
            let limit = self.limit.load(Ordering::Relaxed);
            if now {
                tracing::warn!(
                    resident,
                    limit,
                    "Memory above its soft limit: refusing new data (retryable) until it falls"
                );
            } else {
                tracing::info!(resident, limit, "Memory back under its limit: accepting data again");
            }
        }
    }

    /// Whether new data is being refused right now (checked before a body is read).
    pub fn refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }

    /// Admits a body of `bytes` (it will be held while queued), or says to refuse it: when
    /// refusing already, or when it would take usage past the soft threshold.
    pub fn admit(&self, bytes: usize) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        if limit == 0 {
            return true;
        }
        if self.refusing() {
            return false;
        }
        let bytes = bytes as u64;
        let admitted = self.admitted.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if self.resident.load(Ordering::Relaxed) + admitted > share(limit, SOFT_SHARE) {
            self.admitted.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Samples every [`SAMPLE_EVERY`] while a limit is set, every [`GAUGE_EVERY`] otherwise,
    /// until `stop`. A limit a reload sets takes effect at the next sample.
    pub fn spawn_sampler(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let guard = self.clone();
        tokio::spawn(async move {
            loop {
                let every = if guard.limit.load(Ordering::Relaxed) == 0 { GAUGE_EVERY } else { SAMPLE_EVERY };
                tokio::select! {
                    _ = stop.cancelled() => break,
                    () = tokio::time::sleep(every) => guard.sample(),
                }
            }
        })
    }
}

fn share(limit: u64, share: f64) -> u64 {
    (limit as f64 * share) as u64
}

/// This process's resident set size, from `/proc/self/status` (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_size_is_read() {
        let resident = resident_bytes().expect("Linux has /proc/self/status");
        assert!(resident > 1 << 20, "{resident}");
    }

    #[test]
    fn without_a_limit_everything_is_admitted() {
        let guard = MemoryGuard::new(None, &Metrics::new());
        assert!(guard.admit(usize::MAX / 2));
        assert!(!guard.refusing());
    }

    #[test]
    fn bodies_past_the_soft_threshold_are_refused_until_usage_falls() {
        let metrics = Metrics::new();
        let resident = resident_bytes().expect("resident");
        // A limit whose soft threshold sits 10 MiB above what this process holds now.
        let limit = ((resident + (10 << 20)) as f64 / SOFT_SHARE) as u64;
        let guard = MemoryGuard::new(Some(limit), &metrics);
        assert!(guard.admit(4 << 20));
        assert!(guard.admit(4 << 20));
        assert!(!guard.admit(4 << 20), "the third body would pass the threshold before any sample");
        // A limit this process already exceeds: refusing from the next sample on.
        guard.set_limit(Some(resident / 2));
        guard.sample();
        assert!(guard.refusing() && !guard.admit(1));
        assert_eq!(metrics.memory_refusing.get(), 1);
        guard.set_limit(Some(resident * 4));
        guard.sample();
        assert!(!guard.refusing() && guard.admit(1));
        assert_eq!(metrics.memory_refusing.get(), 0);
    }
}
