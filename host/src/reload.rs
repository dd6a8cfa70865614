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

use sha2::Digest as _;
use tokio::sync::mpsc;

/// How often the files are looked at.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Files up to this size are also compared by content while recently modified, so a rewrite
/// that keeps the size and lands within the file system's timestamp granularity is still seen.
/// Configs and rule files are far smaller; larger plugin components are compared by metadata
/// alone.
const HASHED_UP_TO: u64 = 256 * 1024;

/// How long after its last modification a file is compared by content too. A rewrite that
/// leaves the metadata as it was has to land within the timestamp granularity of the write
/// before it (the kernel's clock tick, two seconds on FAT): it can hide only from a look taken
/// while the modification time was that recent. Against a look taken later, any write moves the
/// time, so the watcher then reads no file, only metadata (hashing every watched file up to
/// 256 KiB every interval was a quarter of an idle `forward.toml` host's CPU).
const HASHED_WHILE_RECENT: Duration = Duration::from_secs(3);

/// What one look at a file saw: `None` when it can't be read (absent, a dangling link).
#[derive(Debug, Clone)]
struct Stamp {
    len: u64,
    modified: SystemTime,
    inode: u64,
    /// The content's SHA-256, when this look hashed it.
    digest: Option<[u8; 32]>,
    /// Whether the file had been modified within [`HASHED_WHILE_RECENT`] of this look.
    recent: bool,
}

/// The same file as far as two looks can tell: the same metadata and, where both hashed it,
/// the same content. A look hashes wherever the look it is compared with did ([`stamp`]), so
/// content is left out only where the earlier look could not have missed a rewrite.
impl PartialEq for Stamp {
    fn eq(&self, other: &Self) -> bool {
        let same_content = match (self.digest, other.digest) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => true,
        };
        self.len == other.len && self.modified == other.modified && self.inode == other.inode && same_content
    }
}

/// A look at `path`, hashing it if it is small and either recently modified or hashed by
/// `reference`, the look this one will be compared with.
fn stamp(path: &Path, reference: Option<&Stamp>) -> Option<Stamp> {
    // `metadata` follows symlinks: a swapped `..data` link changes what it returns.
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    // A time in the future (a skewed clock) counts as recent.
    let recent = SystemTime::now().duration_since(modified).map_or(true, |age| age <= HASHED_WHILE_RECENT);
    let hashed_before = reference.is_some_and(|stamp| stamp.digest.is_some());
    let digest = ((recent || hashed_before) && meta.len() <= HASHED_UP_TO)
        .then(|| std::fs::read(path).ok())
        .flatten()
        .map(|bytes| sha2::Sha256::digest(bytes).into());
    Some(Stamp { len: meta.len(), modified, inode, digest, recent })
}

/// The watched files as one look saw them.
#[derive(Debug, Clone, PartialEq)]
pub struct Look(Vec<(PathBuf, Option<Stamp>)>);

impl Look {
    /// The files at `paths`, each hashed where `reference` hashed it (see [`stamp`]).
    fn of(paths: impl IntoIterator<Item = PathBuf>, reference: Option<&Look>) -> Self {
        let stamps = paths.into_iter().map(|path| {
            let earlier = reference.and_then(|look| look.stamp_of(&path));
            let now = stamp(&path, earlier);
            (path, now)
        });
        Self(stamps.collect())
    }

    /// This look, compared equal to the reference it was taken against (so by content where
    /// that one hashed), as the reference for later looks: files no longer recent drop their
    /// content, so later looks read only their metadata.
    fn without_aged_content(mut self) -> Self {
        for stamp in self.0.iter_mut().filter_map(|(_, stamp)| stamp.as_mut()) {
            if !stamp.recent {
                stamp.digest = None;
            }
        }
        self
    }

    fn stamp_of(&self, path: &Path) -> Option<&Stamp> {
        self.0.iter().find(|(p, _)| p == path).and_then(|(_, stamp)| stamp.as_ref())
    }

    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.0.iter().map(|(path, _)| path)
    }
}

/// Watches the config file and every file it names (plugins, plugin config files).
pub struct Watcher {
    config_path: PathBuf,
    seen: Look,
}

impl Watcher {
    /// Watches `config_path` and `files`, as they are now.
    pub fn new(config_path: &Path, files: Vec<PathBuf>) -> Self {
        let config_path = config_path.to_path_buf();
        let seen = Look::of(std::iter::once(config_path.clone()).chain(files), None);
        Self { config_path, seen }
    }

    /// The watched files as they are now: take it just before a reload reads them, and hand it
    /// to [`Watcher::rewatch`] after.
    pub fn look(&self) -> Look {
        Look::of(self.seen.paths().cloned(), Some(&self.seen))
    }

    /// After a reload, successful or not: watch the config and `files` (what the serving config
    /// names, and what a refused one named). A file watched before keeps the state `before`
    /// saw, so an edit that landed while the reload ran triggers another; a newly named file
    /// is taken as it is now.
    pub fn rewatch(&mut self, files: Vec<PathBuf>, before: Look) {
        let mut paths = vec![self.config_path.clone()];
        paths.extend(files);
        paths.dedup();
        let seen = paths
            .into_iter()
            .map(|path| match before.0.iter().find(|(p, _)| *p == path) {
                Some((_, was)) => (path, was.clone()),
                None => {
                    let now = stamp(&path, None);
                    (path, now)
                }
            })
            .collect();
        self.seen = Look(seen);
    }

    /// Resolves once a watched file changed and then held still for an interval.
    pub async fn changed(&mut self) {
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            let now = self.look();
            if now == self.seen {
                self.seen = now.without_aged_content();
                continue;
            }
            // Let the writer finish: wait until two looks in a row agree.
            let mut settled = now;
            loop {
                tokio::time::sleep(POLL_INTERVAL).await;
                let again = self.look();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).expect("writes");
    }

    async fn sees_change(watcher: &mut Watcher) -> bool {
        tokio::time::timeout(Duration::from_secs(2), watcher.changed()).await.is_ok()
    }

    #[tokio::test]
    async fn every_edit_is_seen_after_rewatching_whatever_the_paths_sort_as() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipelines = dir.path().join("pipelines");
        std::fs::create_dir(&pipelines).expect("mkdir");
        let config = pipelines.join("graphistry.toml");
        // `pipelines/../plugins/...` sorts before `pipelines/graphistry.toml`.
        let plugin = pipelines.join("../plugins.wasm");
        write(&config, "a = 1\n");
        write(&plugin, "wasm");
        let mut watcher = Watcher::new(&config, vec![plugin.clone()]);
        for round in 0..3 {
            let before = watcher.look();
            watcher.rewatch(vec![plugin.clone()], before);
            // Same size, in place: only the content differs.
            write(&config, &format!("a = {}\n", round + 2));
            assert!(sees_change(&mut watcher).await, "edit {round} of the config was missed");
        }
        write(&plugin, "wasm2");
        assert!(sees_change(&mut watcher).await, "the plugin's change was missed");
    }

    #[tokio::test]
    async fn a_file_is_read_only_while_recently_modified_and_aging_is_no_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("c.toml");
        write(&config, "a = 1\n");
        let fresh = stamp(&config, None).expect("exists");
        assert!(fresh.digest.is_some(), "a file just written is compared by content too");
        let old = SystemTime::now() - HASHED_WHILE_RECENT * 2;
        let set_time = |time| {
            std::fs::File::options()
                .write(true)
                .open(&config)
                .and_then(|f| f.set_modified(time))
                .expect("sets")
        };
        set_time(old);
        let aged = stamp(&config, None).expect("exists");
        assert_eq!(aged.digest, None, "an old file is compared by its metadata alone");
        let against_fresh = stamp(&config, Some(&fresh)).expect("exists");
        assert!(against_fresh.digest.is_some(), "compared with a look that hashed it, it is hashed too");
        let mut watcher = Watcher::new(&config, Vec::new());
        assert!(!sees_change(&mut watcher).await, "nothing changed");
        write(&config, "a = 2\n");
        assert!(sees_change(&mut watcher).await, "a write moves the time and is seen");
        // Seen fresh, then aged: the watcher's later looks stop reading it.
        let seen_fresh = stamp(&config, None).expect("exists");
        set_time(old);
        let mut watcher = Watcher::new(&config, Vec::new());
        watcher.seen.0[0].1.as_mut().expect("exists").digest = seen_fresh.digest;
        assert!(!sees_change(&mut watcher).await, "aging is no change");
        assert_eq!(
            watcher.look().0[0].1.as_ref().expect("exists").digest,
            None,
            "an aged file is read no more"
        );
    }

    /// A rewrite that keeps size and time, after a look taken while the file was fresh, is seen
    /// however long the watcher takes to look again (a reload compiling a plugin takes seconds).
    #[tokio::test]
    async fn a_rewrite_hidden_from_the_metadata_is_seen_after_a_long_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("c.toml");
        write(&config, "a = 1\n");
        let written = std::fs::metadata(&config).and_then(|m| m.modified()).expect("has a time");
        let mut watcher = Watcher::new(&config, Vec::new());
        let mut before = watcher.look();
        // Lands in the same clock tick as the first write (so its time is the first one's),
        // and the reload then takes longer than the file stays recent: both looks see it old.
        write(&config, "a = 2\n");
        let aged = written - HASHED_WHILE_RECENT * 2;
        std::fs::File::options().write(true).open(&config).and_then(|f| f.set_modified(aged)).expect("sets");
        for stamp in before.0.iter_mut().filter_map(|(_, stamp)| stamp.as_mut()) {
            stamp.modified = aged;
        }
        watcher.rewatch(Vec::new(), before);
        assert!(sees_change(&mut watcher).await, "the hidden rewrite was missed");
    }

    #[tokio::test]
    async fn an_edit_during_a_reload_triggers_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("c.toml");
        write(&config, "a = 1\n");
        let mut watcher = Watcher::new(&config, Vec::new());
        let before = watcher.look();
        write(&config, "a = 2\n"); // lands while the reload reads the old text
        watcher.rewatch(Vec::new(), before);
        assert!(sees_change(&mut watcher).await);
    }

    #[tokio::test]
    async fn a_rename_over_and_a_symlink_swap_are_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, second) = (dir.path().join("..2026_a"), dir.path().join("..2026_b"));
        std::fs::create_dir(&first).expect("mkdir");
        std::fs::create_dir(&second).expect("mkdir");
        write(&first.join("c.toml"), "a = 1\n");
        write(&second.join("c.toml"), "a = 2\n");
        let data = dir.path().join("..data");
        std::os::unix::fs::symlink(&first, &data).expect("links");
        let config = dir.path().join("c.toml");
        std::os::unix::fs::symlink("..data/c.toml", &config).expect("links");
        let mut watcher = Watcher::new(&config, Vec::new());
        // What the kubelet does: a new link, renamed over `..data`.
        let next = dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&second, &next).expect("links");
        std::fs::rename(&next, &data).expect("renames");
        assert!(sees_change(&mut watcher).await, "the ConfigMap swap was missed");
        // An editor's save: write a new file, rename it over the old one.
        let saved = dir.path().join("c.toml.swp");
        write(&saved, "a = 3\n");
        std::fs::rename(&saved, second.join("c.toml")).expect("renames");
        assert!(sees_change(&mut watcher).await, "the rename-over was missed");
    }

    #[tokio::test]
    async fn nothing_changed_means_no_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("c.toml");
        write(&config, "a = 1\n");
        let mut watcher = Watcher::new(&config, Vec::new());
        assert!(!sees_change(&mut watcher).await);
    }
}
