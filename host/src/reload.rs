//! What triggers a reload: changes to the config file or the plugin files it names, and SIGHUP.
//! (`POST /reload` arrives through the admin listener.)
//!
//! Files are polled rather than watched with inotify: a poll reads each path's metadata through
//! symlinks, which sees a Kubernetes ConfigMap's `..data` symlink swap as readily as an editor's
//! save-rename-write, works on every filesystem, and costs a few `stat` calls per interval. A
//! change must hold still for one more interval before it triggers, so an editor's burst of
//! writes counts once.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::config::{Config, ExporterKind};

/// How often the files are looked at.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

type Stamp = Vec<Option<(u64, SystemTime, u64)>>;

/// Watches the config file and every plugin file the config names.
pub struct Watcher {
    paths: Vec<PathBuf>,
    seen: Stamp,
}

fn stamp(paths: &[PathBuf]) -> Stamp {
    paths
        .iter()
        .map(|path| {
            // `metadata` follows symlinks: a swapped `..data` link changes what it returns.
            std::fs::metadata(path).ok().map(|m| {
                #[cfg(unix)]
                let inode = std::os::unix::fs::MetadataExt::ino(&m);
                #[cfg(not(unix))]
                let inode = 0;
                (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH), inode)
            })
        })
        .collect()
}

fn watched_paths(config_path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut paths = vec![config_path.to_path_buf()];
    for pipeline in config.pipelines.values() {
        paths.extend(pipeline.processors.iter().map(|p| config.resolve(p.plugin.get_ref())));
    }
    for exporter in config.exporters.values() {
        if let ExporterKind::Plugin(plugin) = &exporter.kind {
            paths.push(config.resolve(plugin.plugin.get_ref()));
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

impl Watcher {
    /// Watches `config_path` and the plugins `config` names.
    pub fn new(config_path: &Path, config: &Config) -> Self {
        let paths = watched_paths(config_path, config);
        let seen = stamp(&paths);
        Self { paths, seen }
    }

    /// After a reload: watch the plugins the new config names, as they are now.
    pub fn rewatch(&mut self, config: &Config) {
        let config_path = self.paths.first().cloned().unwrap_or_default();
        *self = Self::new(&config_path, config);
    }

    /// Resolves once a watched file changed and then held still for an interval.
    pub async fn changed(&mut self) {
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            let now = stamp(&self.paths);
            if now == self.seen {
                continue;
            }
            // Let the writer finish: wait until two looks in a row agree.
            let mut settled = now;
            loop {
                tokio::time::sleep(POLL_INTERVAL).await;
                let again = stamp(&self.paths);
                if again == settled {
                    break;
                }
                settled = again;
            }
            self.seen = settled;
            return;
        }
    }
}

/// A stream of SIGHUPs (never resolves where there are none).
pub struct Hangups {
    rx: mpsc::Receiver<()>,
}

impl Hangups {
    /// The next SIGHUP.
    pub async fn recv(&mut self) {
        if self.rx.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

/// Listens for SIGHUP.
pub fn hangups() -> Hangups {
    let (tx, rx) = mpsc::channel(1);
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut signal) => {
            tokio::spawn(async move {
                while signal.recv().await.is_some() {
                    // A reload already queued covers this one too.
                    let _ = tx.try_send(());
                }
            });
        }
        Err(error) => tracing::warn!(%error, "Cannot listen for SIGHUP; reload through POST /reload instead"),
    }
    #[cfg(not(unix))]
    drop(tx);
    Hangups { rx }
}
