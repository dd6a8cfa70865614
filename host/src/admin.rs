//! The admin listener: `/healthz` (the process is up), `/readyz` (every receiver is bound and
//! every pipeline built, and no shutdown has begun), `/metrics` (Prometheus text format) and
//! `/reload` (`POST` to reload the config, `GET` for the last outcome) and `/tap` (live items
//! with each plugin's verdict, as lines).
//!
//! Probes, `/metrics` and the status `GET /reload` are open: orchestrators and scrapers need
//! them and they change nothing. What changes state or shows data (`POST /reload`, `GET /tap`)
//! passes the
//! [`AdminGuard`]: a bearer token when `service.admin_auth` sets one; without one, open on a
//! loopback listener and off (403, saying how to turn it on) on any other — the container image
//! binds 0.0.0.0 so that probes and Prometheus reach it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use std::sync::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// A reload asked for over HTTP, with where to send the outcome.
#[derive(Debug)]
pub struct ReloadRequest {
    /// The summary of what changed, or every error.
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// Who may use the admin endpoints that change state or show data.
#[derive(Debug)]
pub enum AdminGuard {
    /// A loopback listener without `admin_auth`: anyone on this machine.
    Loopback,
    /// `admin_auth`: requests must carry this bearer token.
    Bearer(crate::secret::Secret),
    /// A listener on other interfaces without `admin_auth`: those endpoints are off.
    Off,
}

impl AdminGuard {
    /// The guard for a listener on `address` with `auth` configured.
    pub fn new(address: std::net::SocketAddr, auth: Option<&crate::config::ReceiverAuthConfig>) -> Self {
        match auth {
            Some(crate::config::ReceiverAuthConfig::Bearer { token }) => {
                AdminGuard::Bearer(crate::secret::Secret::new(token.get_ref().clone()))
            }
            None if address.ip().is_loopback() => AdminGuard::Loopback,
            None => AdminGuard::Off,
        }
    }

    /// The answer refusing a request for `what`, if it is refused: 403 when off, 401 without
    /// the token; `None` lets it through.
    fn refusal(&self, what: &str, headers: &axum::http::HeaderMap) -> Option<axum::response::Response> {
        let refuse = |status: StatusCode, text: String| Some((status, text).into_response());
        match self {
            AdminGuard::Loopback => None,
            AdminGuard::Off => refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "{what} is off: the admin listener is not on loopback and has no token; set \
                     `[service] admin_auth = {{ bearer = {{ token = {{ file = \"/run/secrets/admin-token\" }} }} }}` \
                     (or `{{ env = \"NAME\" }}`) and send `Authorization: Bearer <token>`\n"
                ),
            ),
            AdminGuard::Bearer(expected) => match crate::secret::check_bearer(expected, headers) {
                Ok(()) => None,
                Err(crate::secret::BearerRefusal::Unreadable) => {
                    tracing::error!("The admin token cannot be read; refusing {what}");
                    refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the admin token cannot be read right now\n".into(),
                    )
                }
                Err(refusal) => {
                    let mut response =
                        (StatusCode::UNAUTHORIZED, format!("{}\n", refusal.as_str())).into_response();
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
                    Some(response)
                }
            },
        }
    }
}

/// What the admin endpoints report on.
#[derive(Debug)]
pub struct AdminState {
    /// The host's metrics.
    pub metrics: Arc<Metrics>,
    /// Set once everything is serving; cleared when shutdown begins.
    pub ready: AtomicBool,
    /// Where `POST /reload` sends its request.
    pub reload: mpsc::Sender<ReloadRequest>,
    /// SHA-256 of the config file the host started with (until a reload succeeds).
    pub serving_sha256: String,
    /// The last reload's outcome, for `GET /reload`.
    pub last_reload: Mutex<Option<ReloadOutcome>>,
    /// Who may `POST /reload` and `GET /tap`.
    pub guard: AdminGuard,
    /// The host's taps, for `GET /tap`.
    pub taps: Arc<crate::tap::Taps>,
}

/// What the last reload came to, and which config serves since.
#[derive(Debug, Clone)]
pub struct ReloadOutcome {
    /// The summary of what changed, or every error.
    pub result: Result<String, String>,
    /// SHA-256 of the config file's text that serves now (the old one after a refusal).
    pub serving_sha256: String,
}

/// The admin routes.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/reload", post(reload).get(last_reload))
        .route("/tap", get(tap))
        .with_state(state)
}

/// `POST /reload`: 200 with what changed, 400 with every error (the old config keeps serving).
async fn reload(
    State(state): State<Arc<AdminState>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if let Some(refused) = state.guard.refusal("POST /reload", &headers) {
        return refused;
    }
    reload_now(&state).await.into_response()
}

/// Asks the host to reload and waits for the outcome.
async fn reload_now(state: &AdminState) -> (StatusCode, String) {
    let (reply, outcome) = oneshot::channel();
    if state.reload.send(ReloadRequest { reply }).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the host is shutting down\n".to_string());
    }
    match outcome.await {
        Ok(Ok(summary)) => (StatusCode::OK, format!("reloaded: {summary}\n")),
        Ok(Err(errors)) => (
            StatusCode::BAD_REQUEST,
            format!("reload failed; the previous configuration keeps serving\n{errors}\n"),
        ),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the host is shutting down\n".to_string()),
    }
}

/// `GET /reload`: the last reload's outcome, and the SHA-256 of the config file's text that
/// serves (compare it with `sha256sum` of the file to see whether an edit is live).
async fn last_reload(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let last = state.last_reload.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (sha256, outcome) = match last {
        None => (state.serving_sha256.clone(), "no reload yet".to_string()),
        Some(ReloadOutcome { result: Ok(summary), serving_sha256 }) => {
            (serving_sha256, format!("last reload succeeded: {summary}"))
        }
        Some(ReloadOutcome { result: Err(errors), serving_sha256 }) => {
            (serving_sha256, format!("last reload failed:\n{errors}"))
        }
    };
    (StatusCode::OK, format!("{outcome}\nconfig sha256: {sha256}\n"))
}

/// `GET /tap?pipeline=…&stage=…&signal=…&match=…&limit=…&format=json|pretty`: a line per item
/// passing the point, until `limit` items or the watcher leaves. 400 for a bad query, 404 for a
/// pipeline or stage the host doesn't have (listing those it has).
async fn tap(
    State(state): State<Arc<AdminState>>,
    headers: axum::http::HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> axum::response::Response {
    if let Some(refused) = state.guard.refusal("GET /tap", &headers) {
        return refused;
    }
    let request = match crate::tap::Request::parse(query.as_deref().unwrap_or_default()) {
        Ok(request) => request,
        Err(problems) => return (StatusCode::BAD_REQUEST, format!("{problems}\n")).into_response(),
    };
    let subscription = match state.taps.watch(&request) {
        Ok(subscription) => subscription,
        Err(problem) => return (StatusCode::NOT_FOUND, format!("{problem}\n")).into_response(),
    };
    let content_type = match request.format {
        crate::tap::Format::Json => "application/x-ndjson",
        crate::tap::Format::Pretty => "text/plain; charset=utf-8",
    };
    let left = request.limit.unwrap_or(u64::MAX);
    let lines = futures::stream::unfold(
        (subscription, request, left),
        |(mut subscription, request, left)| async move {
            if left == 0 {
                return None;
            }
            let sample = subscription.next().await?;
            let mut text = String::new();
            let missed = subscription.take_missed();
            if missed > 0 {
                crate::tap::missed_line(request.format, missed, &mut text);
            }
            let written = crate::tap::render(&sample, &request, left, &mut text);
            let chunk = Ok::<_, std::convert::Infallible>(bytes::Bytes::from(text));
            Some((chunk, (subscription, request, left - written)))
        },
    );
    ([(header::CONTENT_TYPE, content_type)], axum::body::Body::from_stream(lines)).into_response()
}

async fn readyz(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let mut text = String::with_capacity(8 * 1024);
    match prometheus_client::encoding::text::encode(&mut text, state.metrics.registry()) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode metrics: {error}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Credential;
    use crate::secret::Secret;

    /// The admin routes with `guard`, and a host that answers every reload "nothing changed".
    fn admin(guard: AdminGuard) -> Router {
        let (reload, mut requests) = mpsc::channel::<ReloadRequest>(1);
        tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                let _ = request.reply.send(Ok("nothing changed".into()));
            }
        });
        router(Arc::new(AdminState {
            metrics: Arc::new(Metrics::new()),
            ready: true.into(),
            reload,
            serving_sha256: "abc".into(),
            last_reload: Mutex::default(),
            guard,
            taps: Default::default(),
        }))
    }

    async fn call(router: &Router, method: &str, path: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response =
            router.clone().oneshot(request.body(Body::empty()).expect("request")).await.expect("answer");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn post_reload_passes_the_guard_and_probes_never_need_one() {
        let token = || AdminGuard::Bearer(Secret::new(Credential::Literal("s3cret".into())));
        let cases = [
            (AdminGuard::Loopback, None, StatusCode::OK),
            (AdminGuard::Off, None, StatusCode::FORBIDDEN),
            (AdminGuard::Off, Some("s3cret"), StatusCode::FORBIDDEN),
            (token(), None, StatusCode::UNAUTHORIZED),
            (token(), Some("wrong"), StatusCode::UNAUTHORIZED),
            (token(), Some("s3cret"), StatusCode::OK),
        ];
        for (guard, offered, expected) in cases {
            let what = format!("{guard:?} with {offered:?}");
            let router = admin(guard);
            let (status, body) = call(&router, "POST", "/reload", offered).await;
            assert_eq!(status, expected, "{what}: {body}");
            if status == StatusCode::FORBIDDEN {
                assert!(body.contains("admin_auth"), "says how to turn it on: {body}");
            }
            for path in ["/healthz", "/readyz", "/metrics", "/reload"] {
                assert_eq!(call(&router, "GET", path, None).await.0, StatusCode::OK, "{what}: GET {path}");
            }
        }
    }

    #[test]
    fn the_guard_follows_the_address_and_the_config() {
        let auth = crate::config::ReceiverAuthConfig::Bearer {
            token: serde_spanned::Spanned::new(0..0, Credential::Literal("t".into())),
        };
        let loopback = "127.0.0.1:8888".parse().expect("address");
        let everywhere = "0.0.0.0:8888".parse().expect("address");
        assert!(matches!(AdminGuard::new(loopback, None), AdminGuard::Loopback));
        assert!(matches!(
            AdminGuard::new("[::1]:8888".parse().expect("address"), None),
            AdminGuard::Loopback
        ));
        assert!(matches!(AdminGuard::new(everywhere, None), AdminGuard::Off));
        assert!(matches!(AdminGuard::new(everywhere, Some(&auth)), AdminGuard::Bearer(_)));
        assert!(
            matches!(AdminGuard::new(loopback, Some(&auth)), AdminGuard::Bearer(_)),
            "a token set is required"
        );
    }
}
