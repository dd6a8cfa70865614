//! What a reload changes: a pure comparison of the serving config with the new one, and of the
//! plugin files each names, into Keep, Build or Remove for every component and plugin instance.
//!
//! Nothing here touches a socket, a queue or a thread: the rules of reuse are plain data and are
//! tested case by case. `build` constructs what the diff says;
//! [`running`](super::running) swaps it in.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{ComponentId, Config, PipelineConfig, PluginPlace, PluginUse};

/// The SHA-256 of each plugin file a config names, read once per build or reload, so a rebuilt
/// `.wasm` at the same path counts as a change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileHashes(BTreeMap<PathBuf, String>);

impl FileHashes {
    /// Hashes every plugin component `config` names (an unreadable file hashes as empty; loading
    /// it reports why).
    pub fn read(config: &Config) -> Self {
        let components =
            config.plugin_uses().into_iter().map(|u| config.resolve(u.reference.plugin.get_ref()));
        Self(components.map(|path| (path.clone(), crate::plugins::loader::file_sha256(&path))).collect())
    }

    /// The hash of `path` (resolved), empty when it was not read.
    pub fn get(&self, path: &std::path::Path) -> &str {
        self.0.get(path).map_or("", String::as_str)
    }

    #[cfg(test)]
    fn with(mut self, path: &str, sha256: &str) -> Self {
        self.0.insert(PathBuf::from(path), sha256.to_string());
        self
    }
}

/// A config and the plugin files it was (or is to be) built from.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// The config.
    pub config: &'a Config,
    /// Its plugin files' hashes.
    pub hashes: &'a FileHashes,
}

/// What makes two plugin instances interchangeable: where they run, the file's content and every
/// setting. An instance whose key is unchanged is handed over live, its `init` state included.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceKey {
    /// The pipeline it runs in.
    pub pipeline: ComponentId,
    /// Its name in the pipeline.
    pub name: String,
    /// The component file, resolved.
    pub file: PathBuf,
    /// The file's SHA-256.
    pub sha256: String,
    /// The settings handed to `init`.
    pub config_json: String,
    /// The memory cap in bytes.
    pub max_memory: usize,
    /// The per-call deadline.
    pub timeout: Duration,
    /// The deadline for starting an instance.
    pub init_timeout: Duration,
    /// The fault policy, as its name.
    pub on_error: &'static str,
    /// The environment variables it may read (their names; values are read when it is built).
    pub env: Vec<String>,
    /// The pinned SHA-256, if any.
    pub pin: Option<String>,
}

impl InstanceKey {
    /// The key of `plugin` as `snapshot` runs it; `None` for exporter plugins, which live and die
    /// with their exporter.
    pub fn of(plugin: &PluginUse<'_>, snapshot: Snapshot<'_>) -> Option<Self> {
        let PluginPlace::Processor { pipeline, .. } = &plugin.place else { return None };
        let reference = plugin.reference;
        let file = snapshot.config.resolve(reference.plugin.get_ref());
        Some(Self {
            pipeline: pipeline.clone(),
            name: plugin.name.clone(),
            sha256: snapshot.hashes.get(&file).to_string(),
            file,
            config_json: plugin.config_json(),
            max_memory: reference.limits.memory.get_ref().as_usize(),
            timeout: reference.limits.timeout.get_ref().0,
            init_timeout: reference.limits.init_timeout.get_ref().0,
            on_error: plugin.on_error.as_str(),
            env: reference.env.iter().map(|name| name.get_ref().clone()).collect(),
            pin: reference.sha256.as_ref().map(|pin| pin.get_ref().clone()),
        })
    }

    /// Every processor instance `snapshot` runs, in pipeline and chain order.
    pub fn all(snapshot: Snapshot<'_>) -> Vec<Self> {
        snapshot.config.plugin_uses().iter().filter_map(|plugin| Self::of(plugin, snapshot)).collect()
    }
}

/// A component's fate in a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Unchanged: the running one stays, with its sockets, queue, connections or instance.
    Keep,
    /// New or changed: built anew beside the running topology.
    Build,
    /// Gone: the running one drains and stops.
    Remove,
}

/// A change the running host cannot apply; the reload is refused and the old config serves on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The admin listener is the one reloads arrive through.
    #[error(
        "`service.admin_address` changed from {from} to {to}: the admin listener can't move while serving; restart to apply"
    )]
    AdminAddress {
        /// The serving address.
        from: String,
        /// The new one.
        to: String,
    },
    /// The admin listener's guard is set up once, at start (its token's file is re-read on use).
    #[error(
        "`service.admin_auth` changed: the admin listener's credentials are set at start; restart to apply"
    )]
    AdminAuth,
    /// Logging is set up once, at start.
    #[error(
        "`service.log_level` changed from {from} to {to}: the log level is set at start (SLUICE_LOG overrides it); restart to apply"
    )]
    LogLevel {
        /// The serving level.
        from: &'static str,
        /// The new one.
        to: &'static str,
    },
}

/// Keep, Build or Remove for every receiver, pipeline, exporter and plugin instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Exporters, by name.
    pub exporters: BTreeMap<ComponentId, Change>,
    /// Pipelines, by name.
    pub pipelines: BTreeMap<ComponentId, Change>,
    /// Receivers, by name.
    pub receivers: BTreeMap<ComponentId, Change>,
    /// Processor instances.
    pub instances: BTreeMap<InstanceKey, Change>,
}

/// The exporters a config's pipelines send to: only those are started.
fn used_exporters(config: &Config) -> BTreeSet<ComponentId> {
    let names = config.pipelines.values().flat_map(|pipeline| {
        let routes = pipeline.routes.values().flat_map(|list| list.get_ref());
        pipeline.exporters.get_ref().iter().chain(routes)
    });
    names.filter_map(|name| ComponentId::new(name.get_ref()).ok()).collect()
}

/// The receivers a config's pipelines take from: only those are started.
fn used_receivers(config: &Config) -> BTreeSet<ComponentId> {
    let names = config.pipelines.values().flat_map(|pipeline| pipeline.receivers.get_ref());
    names.filter_map(|name| ComponentId::new(name.get_ref()).ok()).collect()
}

/// The SHA-256 of an exporter plugin's file, so a rebuilt `.wasm` rebuilds the exporter.
fn exporter_plugin_hash<'a>(snapshot: Snapshot<'a>, id: &ComponentId) -> Option<&'a str> {
    let plugin = snapshot.config.exporters.get(id)?.shared.plugin.as_ref()?;
    Some(snapshot.hashes.get(&snapshot.config.resolve(plugin.plugin.get_ref())))
}

/// Everything built anew: what starting from nothing means.
/// `instances` are [`InstanceKey::all`] of `new`, computed once by the caller.
fn fresh(new: Snapshot<'_>, instances: &[InstanceKey]) -> Diff {
    let build = |ids: BTreeSet<ComponentId>| ids.into_iter().map(|id| (id, Change::Build)).collect();
    Diff {
        exporters: build(used_exporters(new.config)),
        pipelines: build(new.config.pipelines.keys().cloned().collect()),
        receivers: build(used_receivers(new.config)),
        instances: instances.iter().map(|key| (key.clone(), Change::Build)).collect(),
    }
}

impl Diff {
    /// Starting up: everything is built.
    pub fn start(new: Snapshot<'_>) -> Self {
        fresh(new, &InstanceKey::all(new))
    }

    /// What reloading from `old` (serving) to `new` changes, or why it can't be applied live.
    pub fn reload(old: Snapshot<'_>, new: Snapshot<'_>) -> Result<Self, Refusal> {
        let (was, now) = (&old.config.service, &new.config.service);
        if was.admin_address.get_ref() != now.admin_address.get_ref() {
            return Err(Refusal::AdminAddress {
                from: was.admin_address.get_ref().to_string(),
                to: now.admin_address.get_ref().to_string(),
            });
        }
        if was.admin_auth != now.admin_auth {
            return Err(Refusal::AdminAuth);
        }
        if was.log_level != now.log_level {
            return Err(Refusal::LogLevel { from: was.log_level.as_str(), to: now.log_level.as_str() });
        }
        // Each plugin's key (its settings serialized, its file's hash) is worked out once.
        let (old_keys, new_keys) = (InstanceKey::all(old), InstanceKey::all(new));
        let mut diff = fresh(new, &new_keys);

        let exporters_before = used_exporters(old.config);
        for (id, change) in &mut diff.exporters {
            let same = exporters_before.contains(id)
                && old.config.exporters.get(id) == new.config.exporters.get(id)
                && exporter_plugin_hash(old, id) == exporter_plugin_hash(new, id);
            if same {
                *change = Change::Keep;
            }
        }
        for id in exporters_before {
            diff.exporters.entry(id).or_insert(Change::Remove);
        }

        // A pipeline holds its exporters' queues and its chain: it is kept only when both are.
        let old_instances: BTreeSet<&InstanceKey> = old_keys.iter().collect();
        for (key, change) in &mut diff.instances {
            if old_instances.contains(key) {
                *change = Change::Keep;
            }
        }
        for (id, change) in &mut diff.pipelines {
            let Some(before) = old.config.pipelines.get(id) else { continue };
            let after = &new.config.pipelines[id];
            let exporters_kept =
                used_exporters_of(after).all(|e| diff.exporters.get(&e) == Some(&Change::Keep));
            if before == after && exporters_kept && chain_of(&old_keys, id).eq(chain_of(&new_keys, id)) {
                *change = Change::Keep;
            }
        }
        for id in old.config.pipelines.keys() {
            diff.pipelines.entry(id.clone()).or_insert(Change::Remove);
        }
        for key in old_instances {
            diff.instances.entry(key.clone()).or_insert(Change::Remove);
        }

        let receivers_before = used_receivers(old.config);
        for (id, change) in &mut diff.receivers {
            if receivers_before.contains(id) && old.config.receivers.get(id) == new.config.receivers.get(id) {
                *change = Change::Keep;
            }
        }
        for id in receivers_before {
            diff.receivers.entry(id).or_insert(Change::Remove);
        }
        Ok(diff)
    }

    /// The components with `change`, as `kind name`, exporters first, then pipelines, receivers
    /// and processor instances (`processor pipeline/name`).
    pub fn named(&self, change: Change) -> Vec<String> {
        let pick = |kind: &str, map: &BTreeMap<ComponentId, Change>| -> Vec<String> {
            map.iter().filter(|(_, c)| **c == change).map(|(id, _)| format!("{kind} {id}")).collect()
        };
        let mut names = pick("exporter", &self.exporters);
        names.extend(pick("pipeline", &self.pipelines));
        names.extend(pick("receiver", &self.receivers));
        let instances = self.instances.iter().filter(|(_, c)| **c == change);
        names.extend(instances.map(|(key, _)| format!("processor {}/{}", key.pipeline, key.name)));
        names
    }
}

/// The processor instances of `pipeline`, in chain order.
fn chain_of<'a>(keys: &'a [InstanceKey], pipeline: &'a ComponentId) -> impl Iterator<Item = &'a InstanceKey> {
    keys.iter().filter(move |key| &key.pipeline == pipeline)
}

fn used_exporters_of(pipeline: &PipelineConfig) -> impl Iterator<Item = ComponentId> + '_ {
    let routes = pipeline.routes.values().flat_map(|list| list.get_ref());
    pipeline.exporters.get_ref().iter().chain(routes).filter_map(|name| ComponentId::new(name.get_ref()).ok())
}

/// The reload summary: what was built, kept and removed.
impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |change| {
            let names = self.named(change);
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        };
        write!(
            f,
            "rebuilt: {}; kept: {}; removed: {}",
            list(Change::Build),
            list(Change::Keep),
            list(Change::Remove)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Configs made from one template; `plugin` files exist (validation checks) but their
    /// content is whatever [`FileHashes`] says.
    struct Case {
        dir: tempfile::TempDir,
    }

    impl Case {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            for name in ["a.wasm", "b.wasm", "hook.wasm"] {
                std::fs::write(dir.path().join(name), "wasm").expect("writes");
            }
            Self { dir }
        }

        fn config(&self, text: &str) -> Config {
            let path = self.dir.path().join("sluice.toml");
            let loaded = crate::config::parse(&path, text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
            loaded.config
        }

        fn hashes(&self, a: &str, b: &str, hook: &str) -> FileHashes {
            let path = |name: &str| self.dir.path().join(name).to_string_lossy().into_owned();
            FileHashes::default()
                .with(&path("a.wasm"), a)
                .with(&path("b.wasm"), b)
                .with(&path("hook.wasm"), hook)
        }
    }

    const BASE: &str = r#"
        [receivers.otlp]
        type = "otlp"
        grpc = { address = "127.0.0.1:4317" }

        [exporters.archive]
        type = "file"
        directory = "data"

        [exporters.hook]
        type = "plugin"
        plugin = "hook.wasm"
        endpoint = "http://127.0.0.1:9"

        [pipelines.all]
        receivers = ["otlp"]
        exporters = ["archive", "hook"]

        [[pipelines.all.processors]]
        name = "first"
        plugin = "a.wasm"
        config = { rule = 1 }

        [[pipelines.all.processors]]
        name = "second"
        plugin = "b.wasm"
    "#;

    fn reload(case: &Case, old: (&str, &FileHashes), new: (&str, &FileHashes)) -> Result<Diff, Refusal> {
        let (old_config, new_config) = (case.config(old.0), case.config(new.0));
        Diff::reload(
            Snapshot { config: &old_config, hashes: old.1 },
            Snapshot { config: &new_config, hashes: new.1 },
        )
    }

    fn changes(diff: &Diff, change: Change) -> Vec<String> {
        diff.named(change)
    }

    #[test]
    fn starting_builds_everything_used() {
        let case = Case::new();
        let config = case.config(
            &BASE.replace("[pipelines.all]", "[exporters.idle]\ntype = \"discard\"\n[pipelines.all]"),
        );
        let hashes = case.hashes("a1", "b1", "h1");
        let diff = Diff::start(Snapshot { config: &config, hashes: &hashes });
        assert!(diff.named(Change::Keep).is_empty() && diff.named(Change::Remove).is_empty());
        assert_eq!(
            changes(&diff, Change::Build),
            [
                "exporter archive",
                "exporter hook",
                "pipeline all",
                "receiver otlp",
                "processor all/first",
                "processor all/second"
            ],
            "an exporter no pipeline uses is not started"
        );
    }

    #[test]
    fn nothing_changed_keeps_everything() {
        let case = Case::new();
        let hashes = case.hashes("a1", "b1", "h1");
        let diff = reload(&case, (BASE, &hashes), (BASE, &hashes)).expect("applies");
        assert!(changes(&diff, Change::Build).is_empty() && changes(&diff, Change::Remove).is_empty());
        assert_eq!(changes(&diff, Change::Keep).len(), 6);
        assert_eq!(
            diff.to_string(),
            "rebuilt: none; kept: exporter archive, exporter hook, pipeline all, receiver otlp, processor all/first, processor all/second; removed: none"
        );
    }

    #[test]
    fn a_rebuilt_plugin_file_rebuilds_its_instance_and_pipeline_only() {
        let case = Case::new();
        let diff =
            reload(&case, (BASE, &case.hashes("a1", "b1", "h1")), (BASE, &case.hashes("a2", "b1", "h1")))
                .expect("applies");
        assert_eq!(changes(&diff, Change::Build), ["pipeline all", "processor all/first"]);
        assert_eq!(changes(&diff, Change::Remove), ["processor all/first"], "the old instance goes");
        assert_eq!(diff.exporters.values().filter(|c| **c == Change::Keep).count(), 2);
        assert_eq!(diff.receivers[&ComponentId::new("otlp").expect("valid")], Change::Keep);
        assert!(
            changes(&diff, Change::Keep).contains(&"processor all/second".to_string()),
            "handed over live"
        );
    }

    #[test]
    fn a_changed_plugin_setting_rebuilds_that_instance() {
        let case = Case::new();
        let hashes = case.hashes("a1", "b1", "h1");
        let new = BASE.replace("config = { rule = 1 }", "config = { rule = 2 }");
        let diff = reload(&case, (BASE, &hashes), (&new, &hashes)).expect("applies");
        assert_eq!(changes(&diff, Change::Build), ["pipeline all", "processor all/first"]);
        let new = BASE.replace("plugin = \"b.wasm\"", "plugin = \"b.wasm\"\non_error = \"drop\"");
        let diff = reload(&case, (BASE, &hashes), (&new, &hashes)).expect("applies");
        assert_eq!(changes(&diff, Change::Build), ["pipeline all", "processor all/second"]);
    }

    #[test]
    fn a_changed_exporter_rebuilds_it_and_the_pipelines_feeding_it() {
        let case = Case::new();
        let hashes = case.hashes("a1", "b1", "h1");
        let new = BASE.replace("directory = \"data\"", "directory = \"elsewhere\"");
        let diff = reload(&case, (BASE, &hashes), (&new, &hashes)).expect("applies");
        assert_eq!(changes(&diff, Change::Build), ["exporter archive", "pipeline all"]);
        assert!(changes(&diff, Change::Keep).contains(&"processor all/first".to_string()));
        // An exporter plugin's file counts as its setting.
        let diff = reload(&case, (BASE, &hashes), (BASE, &case.hashes("a1", "b1", "h2"))).expect("applies");
        assert_eq!(changes(&diff, Change::Build), ["exporter hook", "pipeline all"]);
    }

    #[test]
    fn what_no_pipeline_uses_any_more_is_removed() {
        let case = Case::new();
        let hashes = case.hashes("a1", "b1", "h1");
        let new = r#"
            [receivers.other]
            type = "otlp"
            grpc = { address = "127.0.0.1:5317" }

            [exporters.archive]
            type = "file"
            directory = "data"

            [pipelines.next]
            receivers = ["other"]
            exporters = ["archive"]
        "#;
        let diff = reload(&case, (BASE, &hashes), (new, &hashes)).expect("applies");
        assert_eq!(changes(&diff, Change::Build), ["pipeline next", "receiver other"]);
        assert_eq!(changes(&diff, Change::Keep), ["exporter archive"]);
        assert_eq!(
            changes(&diff, Change::Remove),
            ["exporter hook", "pipeline all", "receiver otlp", "processor all/first", "processor all/second"]
        );
    }

    #[test]
    fn a_receiver_with_new_settings_is_rebuilt() {
        let case = Case::new();
        let hashes = case.hashes("a1", "b1", "h1");
        let new = BASE.replace("127.0.0.1:4317", "127.0.0.1:5317");
        let diff = reload(&case, (BASE, &hashes), (&new, &hashes)).expect("applies");
        assert_eq!(changes(&diff, Change::Build), ["receiver otlp"], "its pipeline is untouched");
    }

    #[test]
    fn what_cannot_change_while_serving_is_refused() {
        let case = Case::new();
        let hashes = case.hashes("a1", "b1", "h1");
        let admin = format!("[service]\nadmin_address = \"127.0.0.1:9999\"\n{BASE}");
        let refusal = reload(&case, (BASE, &hashes), (&admin, &hashes)).expect_err("refused");
        assert!(matches!(refusal, Refusal::AdminAddress { .. }));
        assert!(refusal.to_string().contains("restart to apply"));
        let level = format!("[service]\nlog_level = \"debug\"\n{BASE}");
        let refusal = reload(&case, (BASE, &hashes), (&level, &hashes)).expect_err("refused");
        assert_eq!(refusal, Refusal::LogLevel { from: "info", to: "debug" });
    }
}
