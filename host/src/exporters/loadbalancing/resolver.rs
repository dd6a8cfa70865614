//! Where the backends' URLs come from: a static list, or a DNS name looked up again every
//! interval (a headless Kubernetes Service answers with one address per ready pod).
//!
//! A lookup that fails, times out or answers with no address leaves the last answer in use (a
//! DNS hiccup must not empty the ring), counted in `sluice_loadbalancer_resolve_failures_total`.

use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig as ServerList};
use hickory_resolver::name_server::TokioConnectionProvider;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::{DnsResolverConfig, ResolverConfig};
use crate::config::ComponentId;
use crate::log_throttle::LogThrottle;

/// The backends' URLs, sorted and distinct; `None` until the first answer.
pub type Backends = watch::Receiver<Option<Vec<String>>>;

/// Starts resolving; the task (if any) ends when every receiver of the answers is dropped.
pub fn start(
    name: &ComponentId,
    config: &ResolverConfig,
    failures: Counter,
) -> Result<(Backends, Option<JoinHandle<()>>), String> {
    match config {
        ResolverConfig::Static(urls) => {
            let urls = distinct(urls.iter().map(|url| url.get_ref().clone()).collect());
            let (_, rx) = watch::channel(Some(urls));
            Ok((rx, None))
        }
        ResolverConfig::Dns(dns) => {
            let resolver = build(dns)?;
            let (tx, rx) = watch::channel(None);
            let task = tokio::spawn(poll(name.clone(), dns.clone(), resolver, tx, failures));
            Ok((rx, Some(task)))
        }
    }
}

fn distinct(mut urls: Vec<String>) -> Vec<String> {
    urls.sort();
    urls.dedup();
    urls
}

/// A resolver asking `dns.server`, or the system's servers; it caches nothing, so each lookup
/// sees the current answer.
fn build(dns: &DnsResolverConfig) -> Result<TokioResolver, String> {
    let provider = TokioConnectionProvider::default();
    let mut builder = match dns.server_address()? {
        Some(server) => {
            let servers = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
            TokioResolver::builder_with_config(ServerList::from_parts(None, vec![], servers), provider)
        }
        None => TokioResolver::builder(provider)
            .map_err(|e| format!("cannot read the system's DNS settings (/etc/resolv.conf): {e}"))?,
    };
    let options = builder.options_mut();
    options.cache_size = 0;
    options.timeout = dns.timeout.0;
    options.attempts = 1;
    Ok(builder.build())
}

/// Looks `dns.hostname` up now and every `dns.interval`, publishing each changed answer.
async fn poll(
    name: ComponentId,
    dns: DnsResolverConfig,
    resolver: TokioResolver,
    tx: watch::Sender<Option<Vec<String>>>,
    failures: Counter,
) {
    let hostname = dns.hostname.get_ref().clone();
    let log = LogThrottle::default();
    let mut ticks = tokio::time::interval(dns.interval.0.max(Duration::from_millis(100)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = tx.closed() => return,
        }
        let answer = match tokio::time::timeout(dns.timeout.0, resolver.lookup_ip(hostname.as_str())).await {
            Ok(Ok(found)) => Ok(found.iter().collect::<Vec<IpAddr>>()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", dns.timeout.0)),
        };
        let addresses = match answer {
            Ok(addresses) if !addresses.is_empty() => addresses,
            failed => {
                failures.inc();
                let reason = failed.err().unwrap_or_else(|| "no addresses".into());
                if let Some(suppressed) = log.check() {
                    tracing::warn!(
                        exporter = %name, %hostname, similar_failures_not_logged = suppressed,
                        "Looking up the backends failed; the last answer stays in use: {reason}"
                    );
                }
                continue;
            }
        };
        let urls = distinct(addresses.into_iter().map(|address| dns.url(address)).collect());
        tx.send_if_modified(|current| {
            if current.as_ref() == Some(&urls) {
                return false;
            }
            tracing::info!(exporter = %name, %hostname, backends = ?urls, "Backends changed");
            *current = Some(urls);
            true
        });
    }
}
