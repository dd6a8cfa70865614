//! The admin listener: `/healthz` (the process is up), `/readyz` (every receiver is bound and
//! every pipeline built, and no shutdown has begun), `/metrics` (Prometheus text format) and
//! `/reload` (`POST` to reload the config, `GET` for the last outcome).

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
        .with_state(state)
}

/// `POST /reload`: 200 with what changed, 400 with every error (the old config keeps serving).
async fn reload(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
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
