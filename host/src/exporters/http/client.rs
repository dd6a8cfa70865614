//! The HTTP/1.1 and HTTP/2 client every network exporter sends through, with rustls for `https://`.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::config::ClientTlsConfig;
use crate::tls::read_certs;

/// The client type.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The TLS settings: the configured CA (or the system roots) and, for mTLS, our certificate.
pub fn tls_config(tls: &ClientTlsConfig) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(ca) => {
            for cert in read_certs(ca.get_ref())? {
                roots.add(cert).map_err(|e| format!("{}: {e}", ca.get_ref().display()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert.get_ref())?;
            let key = PrivateKeyDer::from_pem_file(key.get_ref())
                .map_err(|e| format!("{} is not a PEM private key: {e}", key.get_ref().display()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("client certificate: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    // ALPN (h2 for gRPC, h2 or http/1.1 for HTTP) is set by the connector builder below.
    Ok(config)
}

/// A client: HTTP/2 only for gRPC (prior knowledge on `http://`), else HTTP/1.1 or HTTP/2 by
/// ALPN.
pub fn build(tls: &ClientTlsConfig, http2_only: bool) -> Result<HttpClient, String> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let builder =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls_config(tls)?).https_or_http();
    let connector = if http2_only {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().enable_http2().wrap_connector(http)
    };
    let mut client = Client::builder(TokioExecutor::new());
    client.pool_idle_timeout(std::time::Duration::from_secs(60));
    if http2_only {
        client.http2_only(true);
    }
    Ok(client.build(connector))
}
