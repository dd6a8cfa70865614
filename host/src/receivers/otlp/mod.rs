//! The OTLP receiver: gRPC and HTTP listeners that validate, count and enqueue every request.
//!
//! # Layout
//! - [`config`]: its table.
//! - [`grpc`] and [`http`]: the two transports.
//! - [`compression`]: gzip and zstd with a hard output limit.

pub mod compression;
pub mod config;
pub mod grpc;
pub mod http;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::ingest::{self, Ingest};
use super::{Listening, StartError, serve, spawn_server};
use std::path::Path;

use serde_spanned::Spanned;

use super::registry::{ReceiverType, Start, Started};
use crate::config::Problem;
use crate::config::units::ByteSize;
use crate::config::{Credential, ListenAddress, Signal};
use config::{OtlpReceiverConfig, ReceiverAuthConfig};

/// Binds every enabled transport of OTLP receiver `start.id` and starts serving the pipelines
/// `start.feeds` names. Servers stop accepting when `start.stop` is cancelled.
pub async fn start(otlp: &OtlpReceiverConfig, start: Start<'_>) -> Result<Vec<Listening>, StartError> {
    let (id, shutdown) = (start.id, start.stop);
    if otlp.auth.is_some() && otlp.allow_plaintext_credentials {
        tracing::warn!(
            receiver = %id,
            "allow_plaintext_credentials = true: clients' bearer tokens may cross the network in clear text"
        );
    }
    let auth = otlp.auth.as_ref().map(|crate::config::ReceiverAuthConfig::Bearer { token }| {
        Arc::new(crate::secret::Secret::new(token.get_ref().clone()))
    });
    let context = ingest::IngestContext {
        feeds: start.feeds.clone(),
        metrics: start.metrics.clone(),
        memory: start.memory.clone(),
        auth,
    };
    let mut listening = Vec::new();
    if otlp.grpc.enabled {
        let receiver = grpc::GrpcReceiver {
            ingest: Ingest::new(id, "grpc", context.clone()),
            max_message_size: otlp.grpc.max_message_size.as_usize(),
        };
        let label = format!("receiver `{id}` (grpc)");
        let router = grpc::router(Arc::new(receiver));
        listening.push(
            serve_maybe_tls(label, otlp.grpc.address.get_ref().0, router, otlp.grpc.tls.as_ref(), shutdown)
                .await?,
        );
    }
    if otlp.http.enabled {
        let receiver = http::HttpReceiver {
            ingest: Ingest::new(id, "http", context),
            max_body_size: otlp.http.max_body_size.as_usize(),
        };
        let label = format!("receiver `{id}` (http)");
        let router = http::router(Arc::new(receiver));
        listening.push(
            serve_maybe_tls(label, otlp.http.address.get_ref().0, router, otlp.http.tls.as_ref(), shutdown)
                .await?,
        );
    }
    Ok(listening)
}

/// Like [`serve`], over TLS when `tls` is set.
async fn serve_maybe_tls(
    label: String,
    address: SocketAddr,
    router: axum::Router,
    tls: Option<&crate::config::ServerTlsConfig>,
    shutdown: &CancellationToken,
) -> Result<Listening, StartError> {
    let Some(tls) = tls else { return serve(label, address, router, shutdown).await };
    let fail = |source| StartError { label: label.clone(), address, source };
    let acceptor = crate::tls::acceptor(tls).map_err(|e| fail(std::io::Error::other(e)))?;
    let tcp = TcpListener::bind(address).await.map_err(fail)?;
    let listener = crate::tls::TlsListener::new(tcp, acceptor, label.clone()).map_err(fail)?;
    spawn_server(label.clone(), listener, router, shutdown).map_err(fail)
}

impl ReceiverType for OtlpReceiverConfig {
    fn signals(&self) -> Vec<Signal> {
        self.signals.iter().map(|s| *s.get_ref()).collect()
    }

    fn listens_on(&self) -> Vec<(&'static str, &Spanned<ListenAddress>)> {
        let grpc = self.grpc.enabled.then_some(("grpc", &self.grpc.address));
        let http = self.http.enabled.then_some(("http", &self.http.address));
        grpc.into_iter().chain(http).collect()
    }

    fn check(&self, what: &str, _base_dir: &Path) -> Vec<Problem> {
        let mut problems: Vec<Problem> = Vec::new();
        if !self.grpc.enabled && !self.http.enabled {
            problems.push((None, format!("{what} has both `grpc` and `http` switched off")));
        }
        if self.signals.is_empty() {
            problems.push((None, format!("{what} accepts no signals: list some in `signals`")));
        }
        problems.extend(crate::config::duplicate_signals(&self.signals, what));
        let tls_files = [&self.grpc.tls, &self.http.tls].into_iter().flatten().flat_map(|tls| {
            [Some(&tls.cert_file), Some(&tls.key_file), tls.client_ca_file.as_ref()].into_iter().flatten()
        });
        for file in tls_files {
            if !file.get_ref().is_file() {
                problems.push((
                    Some(file.span()),
                    format!("{what}: {} does not exist", file.get_ref().display()),
                ));
            }
        }
        if self.auth.is_some() && !self.allow_plaintext_credentials {
            let transports = [
                (self.grpc.enabled, &self.grpc.address, self.grpc.tls.is_some()),
                (self.http.enabled, &self.http.address, self.http.tls.is_some()),
            ];
            for (_, address, _) in transports
                .into_iter()
                .filter(|(on, address, tls)| *on && !*tls && !address.get_ref().0.ip().is_loopback())
            {
                problems.push((
                    Some(address.span()),
                    format!(
                        "{what}: its bearer token would cross the network in clear text on {}: serve TLS there \
                         (`tls = {{ cert_file, key_file }}`), listen on loopback, or set \
                         `allow_plaintext_credentials = true` if that network is private",
                        address.get_ref().0
                    ),
                ));
            }
        }
        if let Some(ReceiverAuthConfig::Bearer { token }) = &self.auth
            && matches!(token.get_ref(), Credential::Literal(_))
        {
            problems.push((
                Some(token.span()),
                format!("{what}: the bearer token is a secret: write {{ env = \"NAME\" }} or {{ file = \"/run/secrets/name\" }}, never the value"),
            ));
        }
        for (size, name) in [
            (self.grpc.max_message_size, "grpc.max_message_size"),
            (self.http.max_body_size, "http.max_body_size"),
        ] {
            if size < ByteSize(1024) {
                problems.push((None, format!("{what}: `{name}` must be at least 1KiB, not {size}")));
            }
        }
        problems
    }

    async fn start(&self, start: Start<'_>) -> anyhow::Result<Started> {
        let listeners = self::start(self, start).await?;
        Ok(Started { listeners, sampler: None })
    }
}
