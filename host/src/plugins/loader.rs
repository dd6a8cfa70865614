//! Loading a plugin file: pin check, compile (or load the compiled form from the disk cache),
//! and find out which world it implements.
//!
//! Compiling a component takes tens to hundreds of milliseconds; loading the cached native code
//! takes about a millisecond. The cache is keyed by the module's SHA-256 and the engine's
//! compatibility hash (wasmtime version and settings), so an upgrade never loads stale code.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The plugin kinds, one per world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `world filter`.
    Filter,
    /// `world transform`.
    Transform,
    /// `world router`.
    Router,
    /// `world exporter`.
    Exporter,
}

impl Kind {
    /// The world's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Filter => "filter",
            Kind::Transform => "transform",
            Kind::Router => "router",
            Kind::Exporter => "exporter",
        }
    }

    /// Whether plugins of this kind run in a pipeline's `processors` (the others are exporters).
    pub fn is_processor(self) -> bool {
        !matches!(self, Kind::Exporter)
    }
}

/// The version of the `sluice:plugin` contract a plugin was built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// 0.1.0: the guest gets the encoded batch.
    V1,
    /// 0.2.0: the guest gets a `batch` resource.
    V2,
}

impl Contract {
    /// The package version.
    pub fn as_str(self) -> &'static str {
        match self {
            Contract::V1 => "0.1.0",
            Contract::V2 => "0.2.0",
        }
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file's hash is not the pinned one.
    #[error("{} has sha256 {actual}, but the config pins {expected}; refusing to load it", path.display())]
    Pin {
        /// The file.
        path: PathBuf,
        /// The pinned hash.
        expected: String,
        /// The file's hash.
        actual: String,
    },
    /// Not WebAssembly at all.
    #[error("{} is not a WebAssembly file", path.display())]
    NotWasm {
        /// The file.
        path: PathBuf,
    },
    /// WebAssembly, but not a component wasmtime accepts.
    #[error("{} is not a valid WebAssembly component: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A component, but of none of Sluice's worlds.
    #[error("{} exports none of Sluice's worlds (filter, transform, router, exporter); it exports: {exports}", path.display())]
    WrongWorld {
        /// The file.
        path: PathBuf,
        /// What it does export.
        exports: String,
    },
}

impl LoadError {
    /// The fault kind label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            LoadError::Read { .. } => "unreadable",
            LoadError::Pin { .. } => "sha256_mismatch",
            LoadError::NotWasm { .. } | LoadError::Invalid { .. } => "invalid_module",
            LoadError::WrongWorld { .. } => "wrong_world",
        }
    }
}

/// A compiled plugin.
#[derive(Clone)]
pub struct Loaded {
    /// The component.
    pub component: Component,
    /// Its world.
    pub kind: Kind,
    /// The contract version it was built against.
    pub contract: Contract,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// How long compiling or loading took, and whether it came from the cache.
    pub took: Duration,
    /// Whether the compiled form came from the disk cache.
    pub cached: bool,
}

/// The default cache folder: `$SLUICE_CACHE_DIR`, else `$XDG_CACHE_HOME/sluice/plugins`, else
/// `~/.cache/sluice/plugins`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("sluice").join("plugins"))
}

fn engine_key(engine: &Engine) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Hex SHA-256 of the file at `path`; empty when it can't be read (the load reports why).
pub fn file_sha256(path: &Path) -> String {
    std::fs::read(path).map(|bytes| hex::encode(Sha256::digest(bytes))).unwrap_or_default()
}

/// Loads the plugin at `path`, checking `pin` (hex SHA-256) when given.
pub fn load(
    engine: &Engine,
    path: &Path,
    pin: Option<&str>,
    cache_dir: Option<&Path>,
) -> Result<Loaded, LoadError> {
    let started = Instant::now();
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    if let Some(expected) = pin
        && !expected.eq_ignore_ascii_case(&sha256)
    {
        return Err(LoadError::Pin {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual: sha256,
        });
    }
    if !bytes.starts_with(b"\0asm") {
        return Err(LoadError::NotWasm { path: path.to_path_buf() });
    }
    let cache_file = cache_dir.map(|dir| dir.join(format!("{sha256}-{}.cwasm", engine_key(engine))));
    let (component, cached) = match cache_file.as_deref().and_then(|file| from_cache(engine, file)) {
        Some(component) => (component, true),
        None => {
            let component = Component::from_binary(engine, &bytes)
                .map_err(|e| LoadError::Invalid { path: path.to_path_buf(), message: format!("{e:#}") })?;
            if let Some(file) = &cache_file {
                store_in_cache(&component, file);
            }
            (component, false)
        }
    };
    let kind = world_of(engine, &component)
        .map_err(|exports| LoadError::WrongWorld { path: path.to_path_buf(), exports })?;
    let contract = contract_of(engine, &component);
    Ok(Loaded { component, kind, contract, sha256, took: started.elapsed(), cached })
}

/// The world a component implements, from its exports; otherwise the list of what it exports.
fn world_of(engine: &Engine, component: &Component) -> Result<Kind, String> {
    let exports: Vec<String> =
        component.component_type().exports(engine).map(|(name, _)| name.to_string()).collect();
    let has = |name: &str| exports.iter().any(|e| e == name);
    match (has("init"), has("filter"), has("transform"), has("route"), has("render")) {
        (true, true, false, false, false) => Ok(Kind::Filter),
        (true, false, true, false, false) => Ok(Kind::Transform),
        (true, false, false, true, false) => Ok(Kind::Router),
        (true, false, false, false, true) => Ok(Kind::Exporter),
        _ if exports.is_empty() => Err("nothing".into()),
        _ => Err(exports.join(", ")),
    }
}

/// The contract a component was built against: a 0.2.0 world's exports take a `batch`, so its
/// component always imports the `batches` interface; a 0.1.0 one never does.
fn contract_of(engine: &Engine, component: &Component) -> Contract {
    let imports_batches = component
        .component_type()
        .imports(engine)
        .any(|(name, _)| name.starts_with("sluice:plugin/batches@0.2."));
    if imports_batches { Contract::V2 } else { Contract::V1 }
}

#[allow(unsafe_code)]
fn from_cache(engine: &Engine, file: &Path) -> Option<Component> {
    if !file.exists() {
        return None;
    }
    // SAFETY: wasmtime trusts serialized code; this file is one Sluice itself wrote with
    // `Component::serialize` into its own cache folder, named by the module's SHA-256 and the
    // engine's compatibility hash, and wasmtime still checks the header before using it.
    match unsafe { Component::deserialize_file(engine, file) } {
        Ok(component) => Some(component),
        Err(error) => {
            tracing::warn!(file = %file.display(), %error, "Ignoring an unusable plugin cache entry");
            let _ = std::fs::remove_file(file);
            None
        }
    }
}

fn store_in_cache(component: &Component, file: &Path) {
    let write = || -> std::io::Result<()> {
        let bytes = component.serialize().map_err(std::io::Error::other)?;
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Write beside, then rename: a reader never sees half a file.
        let partial = file.with_extension(format!("partial-{}", std::process::id()));
        std::fs::write(&partial, bytes)?;
        std::fs::rename(&partial, file)
    };
    if let Err(error) = write() {
        tracing::warn!(file = %file.display(), %error, "Cannot cache the compiled plugin; it will be compiled again next start");
    }
}
