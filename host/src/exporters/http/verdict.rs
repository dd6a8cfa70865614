//! The decisions of delivery, as pure functions: what an answer means (delivered, retry — and
//! when the destination wants it — or give up), and how long to wait before the next attempt.
//! Each protocol brings its own reading of an answer (OTLP's in `exporters/otlp/wire.rs`); the
//! plain HTTP one is here.

use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::config::RetryConfig;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered; `rejected` items were refused through a partial-success answer.
    Delivered {
        /// Items the destination rejected.
        rejected: u64,
    },
    /// Try again, after at least `after` if the destination said so.
    Retry {
        /// Why.
        reason: String,
        /// The destination's requested delay.
        after: Option<Duration>,
    },
    /// Don't try again.
    Permanent {
        /// Why.
        reason: String,
    },
}

/// Reads an answer: status, headers, trailers (gRPC) and body.
pub type Judge = fn(StatusCode, &HeaderMap, Option<&HeaderMap>, &[u8]) -> Verdict;

/// The destination's `Retry-After`, in seconds (the HTTP-date form is not used by telemetry
/// backends and is ignored).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The plain HTTP reading of an answer, for destinations without a protocol of their own on
/// top (Prometheus remote write, exporter plugins): 2xx delivered; 408, 429 and 5xx retried
/// (after `Retry-After` seconds when given); any other status final.
pub fn judge_http_status(
    status: StatusCode,
    headers: &HeaderMap,
    _: Option<&HeaderMap>,
    body: &[u8],
) -> Verdict {
    if status.is_success() {
        return Verdict::Delivered { rejected: 0 };
    }
    let reason = format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)]));
    let retryable = matches!(status, StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS)
        || status.is_server_error();
    if retryable {
        return Verdict::Retry { reason, after: retry_after(headers) };
    }
    Verdict::Permanent { reason }
}

/// What follows a failed attempt that may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then try again.
    RetryIn(Duration),
    /// Stop: retries are off, or the next attempt would start after `max_elapsed`.
    GiveUp,
}

/// The wait before attempt `attempt + 1` (0 was the first), `elapsed` since the first began:
/// `initial_backoff` doubling per attempt up to `max_backoff`, scaled by `jitter` (0.5 to 1.5).
/// A delay the destination asked for (`asked`) wins, but never below a quarter of the backoff,
/// so a destination can't make a fleet hammer it.
pub fn next_attempt(
    retry: &RetryConfig,
    attempt: u32,
    elapsed: Duration,
    asked: Option<Duration>,
    jitter: f64,
) -> Next {
    let doubled = retry.initial_backoff.0.saturating_mul(2u32.saturating_pow(attempt.min(20)));
    let backoff = doubled.min(retry.max_backoff.0).mul_f64(jitter);
    let delay = asked.unwrap_or(backoff).max(backoff / 4);
    if !retry.enabled || elapsed + delay > retry.max_elapsed.0 {
        return Next::GiveUp;
    }
    Next::RetryIn(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::HumanDuration;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), http::HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn plain_http_answers() {
        let none = HeaderMap::new();
        assert_eq!(
            judge_http_status(StatusCode::NO_CONTENT, &none, None, b""),
            Verdict::Delivered { rejected: 0 }
        );
        for status in [408, 429, 500, 502, 503, 504] {
            let status = StatusCode::from_u16(status).expect("valid");
            assert!(
                matches!(judge_http_status(status, &none, None, b""), Verdict::Retry { after: None, .. }),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 413] {
            let status = StatusCode::from_u16(status).expect("valid");
            assert!(
                matches!(judge_http_status(status, &none, None, b"no"), Verdict::Permanent { .. }),
                "{status}"
            );
        }
        let busy = judge_http_status(
            StatusCode::SERVICE_UNAVAILABLE,
            &headers(&[("retry-after", " 7 ")]),
            None,
            b"busy",
        );
        assert_eq!(
            busy,
            Verdict::Retry {
                reason: "HTTP 503 Service Unavailable: busy".into(),
                after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")])), None);
    }

    fn retry(initial_ms: u64, max_ms: u64, max_elapsed_ms: u64) -> RetryConfig {
        RetryConfig {
            enabled: true,
            initial_backoff: HumanDuration(Duration::from_millis(initial_ms)),
            max_backoff: HumanDuration(Duration::from_millis(max_ms)),
            max_elapsed: HumanDuration(Duration::from_millis(max_elapsed_ms)),
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        let config = retry(100, 1000, 60_000);
        let waits: Vec<Next> = (0..6).map(|n| next_attempt(&config, n, Duration::ZERO, None, 1.0)).collect();
        let ms = |n: u64| Next::RetryIn(Duration::from_millis(n));
        assert_eq!(waits, [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]);
        assert_eq!(next_attempt(&config, 1, Duration::ZERO, None, 0.5), ms(100));
        assert_eq!(next_attempt(&config, 1, Duration::ZERO, None, 1.5), ms(300));
        assert_eq!(next_attempt(&config, u32::MAX, Duration::ZERO, None, 1.0), ms(1000), "no overflow");
    }

    #[test]
    fn the_destinations_delay_wins_but_not_below_a_quarter_of_the_backoff() {
        let config = retry(1000, 30_000, 60_000);
        let asked = |s| Some(Duration::from_secs(s));
        assert_eq!(
            next_attempt(&config, 0, Duration::ZERO, asked(5), 1.0),
            Next::RetryIn(Duration::from_secs(5))
        );
        assert_eq!(
            next_attempt(&config, 4, Duration::ZERO, Some(Duration::ZERO), 1.0),
            Next::RetryIn(Duration::from_secs(4)),
            "16 s backoff: at least 4 s"
        );
    }

    #[test]
    fn it_gives_up_past_max_elapsed_or_when_retries_are_off() {
        let config = retry(1000, 1000, 10_000);
        assert_eq!(
            next_attempt(&config, 3, Duration::from_secs(8), None, 1.0),
            Next::RetryIn(Duration::from_secs(1))
        );
        assert_eq!(next_attempt(&config, 3, Duration::from_millis(9_500), None, 1.0), Next::GiveUp);
        assert_eq!(
            next_attempt(&config, 0, Duration::ZERO, Some(Duration::from_secs(11)), 1.0),
            Next::GiveUp
        );
        let off = RetryConfig { enabled: false, ..config };
        assert_eq!(next_attempt(&off, 0, Duration::ZERO, None, 1.0), Next::GiveUp);
    }
}
