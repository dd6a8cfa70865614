//! Sending requests to a destination: credentials read on use, per-attempt timeouts, retries on
//! the schedule [`verdict`](super::verdict) decides, and the delivery counters. Shared by every
//! exporter that speaks HTTP (OTLP over gRPC or HTTP, Prometheus remote write, exporter
//! plugins); each brings its own body and its own way of reading an answer.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue, USER_AGENT};
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Full};
use rand::Rng;

use crate::config::{AuthConfig, ClientConfig, ComponentId, RetryConfig, Signal};
use crate::log_throttle::LogThrottle;
use crate::metrics::{DeliveryCounters, PerSignal};
use crate::secret::Secret;

pub use super::client::HttpClient;
pub use super::verdict::{Judge, Verdict, judge_http_status};
use super::verdict::{Next, next_attempt};

/// One request to send: the configured headers and credentials are added to `headers`, and
/// win over them.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// The method.
    pub method: &'a Method,
    /// Where to.
    pub url: &'a http::Uri,
    /// Headers that come with this request (content type, encoding).
    pub headers: &'a HeaderMap,
    /// The body; cloning it for a retry is a reference count, not a copy.
    pub body: Bytes,
}

/// Why [`Delivery::send_until`] did not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undelivered {
    /// Refused for good, or retried until `retry.max_elapsed`: lost, unless the caller has
    /// somewhere else to send it.
    Failed(String),
    /// Told to stop after a retryable failure: the caller takes the request back.
    Stopped(String),
}

/// Where and how one exporter sends.
pub struct Delivery {
    name: ComponentId,
    client: HttpClient,
    headers: Vec<(HeaderName, Secret)>,
    auth: Option<(Secret, Option<Secret>)>,
    retry: RetryConfig,
    timeout: Duration,
    counters: PerSignal<DeliveryCounters>,
    failure_log: LogThrottle,
    retry_log: LogThrottle,
}

/// What a [`Delivery`] is built from.
pub struct Settings<'a> {
    /// The exporter's name.
    pub name: &'a ComponentId,
    /// Timeout, headers, credentials, TLS and retries, as configured.
    pub client: &'a ClientConfig,
    /// HTTP/2 only (gRPC), or HTTP/1.1 and HTTP/2 by ALPN.
    pub http2_only: bool,
    /// Delivery counters per signal.
    pub counters: PerSignal<DeliveryCounters>,
}

impl Delivery {
    /// Builds the client and resolves header names.
    pub fn new(settings: Settings<'_>) -> Result<Self, String> {
        let client = settings.client;
        let headers = client
            .headers
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                    .map_err(|e| format!("header `{name}`: {e}"))?;
                Ok((name, Secret::new(value.get_ref().clone())))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let carries_credentials = client.auth.is_some()
            || client.headers.keys().any(|name| crate::config::is_sensitive_header(name));
        if client.allow_plaintext_credentials && carries_credentials {
            tracing::warn!(
                exporter = %settings.name,
                "allow_plaintext_credentials = true: this exporter's credentials may cross the network in clear text"
            );
        }
        let auth = client.auth.as_ref().map(|auth| match auth {
            AuthConfig::Basic { username, password } => {
                (Secret::new(username.get_ref().clone()), Some(Secret::new(password.get_ref().clone())))
            }
            AuthConfig::Bearer { token } => (Secret::new(token.get_ref().clone()), None),
        });
        Ok(Self {
            name: settings.name.clone(),
            client: super::client::build(&client.tls, settings.http2_only)?,
            headers,
            auth,
            retry: client.retry.clone(),
            timeout: client.timeout.0,
            counters: settings.counters,
            failure_log: LogThrottle::default(),
            retry_log: LogThrottle::default(),
        })
    }

    /// The exporter's name.
    pub fn name(&self) -> &ComponentId {
        &self.name
    }

    fn counters(&self, signal: Signal) -> &DeliveryCounters {
        self.counters.get(signal)
    }

    /// Counts `items` as lost and logs why (once per interval).
    pub fn give_up(&self, signal: Signal, items: u64, reason: &str) {
        self.counters(signal).failed.inc_by(items);
        self.settled(signal, items);
        if let Some(suppressed) = self.failure_log.check() {
            tracing::error!(
                exporter = %self.name, %signal, items, similar_failures_not_logged = suppressed,
                "Delivery failed; items dropped: {reason}"
            );
        }
    }

    /// POSTs `body` to `url` with `fixed` headers until it is delivered, refused for good, or
    /// `retry.max_elapsed` has passed; counts the outcome for `items` items of `signal`.
    pub async fn deliver(
        &self,
        signal: Signal,
        items: u64,
        url: &http::Uri,
        body: Bytes,
        fixed: &HeaderMap,
        judge: Judge,
    ) {
        let outgoing = Outgoing { method: &Method::POST, url, headers: fixed, body };
        match self.send(signal, items, outgoing, judge).await {
            Ok(rejected) => self.delivered(signal, items, rejected),
            Err(reason) => self.give_up(signal, items, &reason),
        }
    }

    /// Counts `items` of `signal` as delivered, `rejected` of them refused by the destination.
    pub fn delivered(&self, signal: Signal, items: u64, rejected: u64) {
        let rejected = rejected.min(items);
        self.counters(signal).sent.inc_by(items - rejected);
        self.counters(signal).rejected.inc_by(rejected);
        self.settled(signal, items);
    }

    /// `items` of `signal` are no longer this exporter's to deliver: counted as sent, rejected or
    /// failed, or (a signal it doesn't export) ignored.
    pub fn settled(&self, signal: Signal, items: u64) {
        self.counters(signal).pending.dec_by(i64::try_from(items).unwrap_or(i64::MAX));
    }

    /// Sends one request until it is delivered (returning how many items the destination
    /// rejected), refused for good, or `retry.max_elapsed` has passed (returning why). Counts
    /// retries of `items` items; the final outcome is the caller's to count.
    pub async fn send(
        &self,
        signal: Signal,
        items: u64,
        outgoing: Outgoing<'_>,
        judge: Judge,
    ) -> Result<u64, String> {
        let never = std::future::pending();
        self.send_until(signal, items, outgoing, judge, never).await.map_err(
            |undelivered| match undelivered {
                Undelivered::Failed(reason) | Undelivered::Stopped(reason) => reason,
            },
        )
    }

    /// [`Delivery::send`], except that once `stop` completes, a retryable failure ends the
    /// sending (and so does `stop` completing while it waits to retry): the caller takes the
    /// request back. An attempt already under way is never cut short.
    pub async fn send_until(
        &self,
        signal: Signal,
        items: u64,
        outgoing: Outgoing<'_>,
        judge: Judge,
        stop: impl Future<Output = ()>,
    ) -> Result<u64, Undelivered> {
        let started = Instant::now();
        let mut attempt = 0;
        let mut stop = std::pin::pin!(stop);
        loop {
            let (reason, after) = match self.attempt(&outgoing, judge).await {
                Verdict::Delivered { rejected } => return Ok(rejected),
                Verdict::Permanent { reason } => return Err(Undelivered::Failed(reason)),
                Verdict::Retry { reason, after } => (reason, after),
            };
            // ±50% jitter keeps a fleet of hosts from retrying in lockstep.
            let jitter = rand::rng().random_range(0.5..1.5);
            let delay = match next_attempt(&self.retry, attempt, started.elapsed(), after, jitter) {
                Next::RetryIn(delay) => delay,
                Next::GiveUp => {
                    return Err(Undelivered::Failed(format!(
                        "{reason} (gave up after {} attempts in {:?})",
                        attempt + 1,
                        started.elapsed()
                    )));
                }
            };
            if futures::poll!(stop.as_mut()).is_ready() {
                return Err(Undelivered::Stopped(reason));
            }
            self.counters(signal).retried.inc_by(items);
            if let Some(suppressed) = self.retry_log.check() {
                tracing::warn!(
                    exporter = %self.name, %signal, items, retry_in = ?delay, similar_retries_not_logged = suppressed,
                    "Delivery will be retried: {reason}"
                );
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.as_mut() => return Err(Undelivered::Stopped(reason)),
            }
            attempt += 1;
        }
    }

    fn request(&self, outgoing: &Outgoing<'_>) -> Result<http::Request<Full<Bytes>>, String> {
        let mut request = http::Request::builder()
            .method(outgoing.method.clone())
            .uri(outgoing.url.clone())
            .body(Full::new(outgoing.body.clone()))
            .map_err(|e| e.to_string())?;
        let headers = request.headers_mut();
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("sluice/", env!("CARGO_PKG_VERSION"))));
        for (name, value) in outgoing.headers {
            headers.insert(name.clone(), value.clone());
        }
        let sensitive = |value: String| -> Result<HeaderValue, String> {
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| "a credential holds characters a header can't".to_string())?;
            value.set_sensitive(true);
            Ok(value)
        };
        for (name, secret) in &self.headers {
            headers.insert(name.clone(), sensitive(secret.value()?)?);
        }
        match &self.auth {
            Some((user, Some(password))) => {
                let pair = format!("{}:{}", user.value()?, password.value()?);
                let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pair);
                headers.insert(AUTHORIZATION, sensitive(format!("Basic {encoded}"))?);
            }
            Some((token, None)) => {
                headers.insert(AUTHORIZATION, sensitive(format!("Bearer {}", token.value()?))?);
            }
            None => {}
        }
        Ok(request)
    }

    async fn attempt(&self, outgoing: &Outgoing<'_>, judge: Judge) -> Verdict {
        let url = outgoing.url;
        let request = match self.request(outgoing) {
            Ok(request) => request,
            // A missing secret file may appear (a Kubernetes mount): worth retrying.
            Err(reason) => {
                return Verdict::Retry { reason: format!("credential unavailable: {reason}"), after: None };
            }
        };
        let exchange = async {
            let response =
                self.client.request(request).await.map_err(|e| format!("{:#}", anyhow::Error::new(e)))?;
            let (parts, body) = response.into_parts();
            let collected = body.collect().await.map_err(|e| format!("reading the answer: {e}"))?;
            let trailers = collected.trailers().cloned();
            Ok::<_, String>((parts, trailers, collected.to_bytes()))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Verdict::Retry { reason: format!("no answer within {:?}", self.timeout), after: None },
            Ok(Err(reason)) => {
                Verdict::Retry { reason: format!("cannot reach {url}: {reason}"), after: None }
            }
            Ok(Ok((parts, trailers, body))) => judge(parts.status, &parts.headers, trailers.as_ref(), &body),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::config::units::HumanDuration;
    use crate::metrics::Metrics;

    /// A destination that answers every request 503 and counts them.
    async fn always_busy() -> (http::Uri, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("address")).parse().expect("url");
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        counted.fetch_add(1, Ordering::SeqCst);
                        let answer = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
                        if socket.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, requests)
    }

    fn delivery(max_elapsed: Duration) -> Delivery {
        let client = ClientConfig {
            retry: RetryConfig {
                enabled: true,
                initial_backoff: HumanDuration(Duration::from_millis(20)),
                max_backoff: HumanDuration(Duration::from_millis(20)),
                max_elapsed: HumanDuration(max_elapsed),
            },
            ..ClientConfig::default()
        };
        let metrics = Metrics::new();
        let name = ComponentId::new("busy").expect("name");
        let counters = PerSignal::new(|signal| metrics.delivery("busy", signal));
        Delivery::new(Settings { name: &name, client: &client, http2_only: false, counters }).expect("client")
    }

    fn outgoing<'a>(url: &'a http::Uri, headers: &'a HeaderMap) -> Outgoing<'a> {
        Outgoing { method: &Method::POST, url, headers, body: Bytes::from_static(b"x") }
    }

    #[tokio::test]
    async fn a_stop_ends_the_retries_and_hands_the_request_back() {
        let (url, requests) = always_busy().await;
        let headers = HeaderMap::new();
        let delivery = delivery(Duration::from_secs(60));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let watching = requests.clone();
        tokio::spawn(async move {
            while watching.load(Ordering::SeqCst) < 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = stop.send(());
        });
        let outcome = delivery
            .send_until(Signal::Traces, 1, outgoing(&url, &headers), judge_http_status, async {
                let _ = stopped.await;
            })
            .await;
        assert!(
            matches!(outcome, Err(Undelivered::Stopped(ref reason)) if reason.contains("503")),
            "{outcome:?}"
        );
        let tried = requests.load(Ordering::SeqCst);
        assert!(
            (3..=4).contains(&tried),
            "stopped right after the third attempt, not at max_elapsed ({tried})"
        );
    }

    #[tokio::test]
    async fn without_a_stop_it_retries_until_max_elapsed_and_fails() {
        let (url, requests) = always_busy().await;
        let headers = HeaderMap::new();
        let delivery = delivery(Duration::from_millis(200));
        let outcome = delivery
            .send_until(
                Signal::Traces,
                1,
                outgoing(&url, &headers),
                judge_http_status,
                std::future::pending(),
            )
            .await;
        assert!(
            matches!(outcome, Err(Undelivered::Failed(ref reason)) if reason.contains("gave up")),
            "{outcome:?}"
        );
        assert!(requests.load(Ordering::SeqCst) >= 3, "retried meanwhile");
    }
}
