//! Keeps a repeating problem to one log line per interval.
//!
//! A dead disk or a client that keeps sending garbage would otherwise write a line per batch,
//! thousands a second. The metrics count every occurrence; the log says it is happening, how
//! often, and the latest error text.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a repeating problem may log.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Lets one line through per interval and counts the ones it held back.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    /// A throttle that lets one line through per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval, state: Mutex::default() }
    }

    /// `Some(n)` when a line may be written now, where `n` lines were held back since the last one.
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match state.last {
            Some(last) if now.duration_since(last) < self.interval => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new(DEFAULT_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_a_count_of_the_rest() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(throttle.check_at(start), Some(0));
        assert_eq!(throttle.check_at(start + Duration::from_secs(1)), None);
        assert_eq!(throttle.check_at(start + Duration::from_secs(2)), None);
        assert_eq!(throttle.check_at(start + Duration::from_secs(11)), Some(2));
    }
}
