//! `type = "otlp"` (a receiver): its table, with its gRPC and HTTP transports.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::config::units::ByteSize;
use crate::config::{Credential, ListenAddress, Signal, all_signals};

/// `type = "otlp"`: the OTLP receiver. Both transports are on by default.
///
/// ```toml
/// [receivers.otlp]
/// type = "otlp"
/// signals = ["traces", "metrics", "logs"]
/// grpc = { address = "0.0.0.0:4317", max_message_size = "4MiB" }
/// http = { enabled = false }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    /// Which signals to accept; the others are answered as unknown paths / unimplemented methods.
    #[serde(default = "all_signals")]
    pub signals: Vec<Spanned<Signal>>,
    /// OTLP/gRPC settings.
    #[serde(default)]
    pub grpc: GrpcConfig,
    /// OTLP/HTTP settings.
    #[serde(default)]
    pub http: HttpConfig,
    /// Require `Authorization: Bearer <token>` on every request:
    /// `auth = { bearer = { token = { file = "/run/secrets/ingest-token" } } }`.
    #[serde(default)]
    pub auth: Option<ReceiverAuthConfig>,
    /// Accept the bearer token over a plain-text listener that is not on loopback (a private
    /// network). Refused by default; one WARN at start when set.
    #[serde(default)]
    pub allow_plaintext_credentials: bool,
}

/// `auth = { ... }` of a receiver.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum ReceiverAuthConfig {
    /// A bearer token clients must send; `{ env = .. }` or `{ file = .. }`.
    Bearer {
        /// The expected token.
        token: Spanned<Credential>,
    },
}

/// `tls = { ... }` of a receiver transport: serve TLS, and for mTLS require client certificates.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain the listener presents.
    pub cert_file: Spanned<PathBuf>,
    /// PEM private key of that certificate.
    pub key_file: Spanned<PathBuf>,
    /// PEM CA certificates; when set, clients must present a certificate they signed (mTLS).
    #[serde(default)]
    pub client_ca_file: Option<Spanned<PathBuf>>,
}

/// `grpc = { ... }` of an OTLP receiver.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// `enabled = false` switches the gRPC listener off.
    pub enabled: bool,
    /// `address = "127.0.0.1:4317"`.
    pub address: Spanned<ListenAddress>,
    /// Largest accepted message, before and after decompression: `max_message_size = "4MiB"`.
    pub max_message_size: ByteSize,
    /// Serve TLS (and optionally require client certificates).
    pub tls: Option<ServerTlsConfig>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            address: Spanned::new(0..0, ListenAddress(SocketAddr::from((Ipv4Addr::LOCALHOST, 4317)))),
            max_message_size: ByteSize::mib(4),
            tls: None,
        }
    }
}

/// `http = { ... }` of an OTLP receiver.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `enabled = false` switches the HTTP listener off.
    pub enabled: bool,
    /// `address = "127.0.0.1:4318"`.
    pub address: Spanned<ListenAddress>,
    /// Largest accepted body after decompression: `max_body_size = "20MiB"`.
    pub max_body_size: ByteSize,
    /// Serve TLS (and optionally require client certificates).
    pub tls: Option<ServerTlsConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            address: Spanned::new(0..0, ListenAddress(SocketAddr::from((Ipv4Addr::LOCALHOST, 4318)))),
            max_body_size: ByteSize::mib(20),
            tls: None,
        }
    }
}
