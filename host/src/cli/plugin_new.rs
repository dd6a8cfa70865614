//! `sluice plugin new NAME --lang rust|python`: a plugin project outside this repository, with
//! a working filter, a sample batch, a `make test` that runs it through `sluice plugin test`, and
//! a README that takes a new author from nothing to the rule running in a pipeline.
//!
//! The project builds against the SDK this binary was built with (`sdk/` beside the host's
//! sources), or the one `--sdk` names: neither SDK is published to a package registry.

use std::path::{Path, PathBuf};

/// The plugin languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with the `sluice-sdk` crate; the rule walks the batch in the guest.
    Rust,
    /// Python, with `sdk/python` and componentize-py; the rule reads the batch through the host.
    Python,
}

/// What to scaffold.
#[derive(Debug)]
pub struct Scaffold {
    /// The plugin's name: the folder, the package and the `.wasm`.
    pub name: String,
    /// Its language.
    pub lang: Lang,
    /// The folder to create the project folder in.
    pub parent: PathBuf,
    /// The SDK folder (`sdk/` of a Sluice checkout); by default the one this binary was built from.
    pub sdk: Option<PathBuf>,
}

const SAMPLE: &str = include_str!("templates/sample.json");
const README: &str = include_str!("templates/README.md");
const RUST: [(&str, &str); 3] = [
    ("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("templates/rust/lib.rs")),
    ("Makefile", include_str!("templates/rust/Makefile")),
];
const PYTHON: [(&str, &str); 3] = [
    ("app.py", include_str!("templates/python/app.py")),
    ("pyproject.toml", include_str!("templates/python/pyproject.toml")),
    ("Makefile", include_str!("templates/python/Makefile")),
];

/// Checks a plugin name: what a crate, a Python project and a file name all accept.
fn check_name(name: &str) -> Result<(), String> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid plugin name `{name}`: use lowercase letters, digits and `-`, starting with a letter (e.g. `drop-noise`)"
        ))
    }
}

/// `drop-noise` -> `DropNoise`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

/// The SDK this binary was built from, if it is still there.
fn built_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    sdk.join("wit/plugin.wit").is_file().then(|| sdk.canonicalize().ok()).flatten()
}

/// Writes the project; returns its folder.
pub fn create(scaffold: &Scaffold) -> Result<PathBuf, String> {
    check_name(&scaffold.name)?;
    let sdk = match scaffold.sdk.clone().or_else(built_sdk) {
        Some(sdk) if sdk.join("wit/plugin.wit").is_file() => {
            sdk.canonicalize().map_err(|e| format!("{}: {e}", sdk.display()))?
        }
        Some(sdk) => {
            return Err(format!("{} is not a Sluice SDK folder (no wit/plugin.wit in it)", sdk.display()));
        }
        None => {
            return Err("the SDK this binary was built from is gone: pass --sdk /path/to/sluice/sdk".into());
        }
    };
    let dir = scaffold.parent.join(&scaffold.name);
    if dir.exists() {
        return Err(format!("{} already exists; pick another name or folder", dir.display()));
    }
    let (files, language, prerequisites, next): (&[(&str, &str)], _, _, _) = match scaffold.lang {
        Lang::Rust => (
            &RUST,
            "Rust",
            "You need a Rust toolchain with rustup (`make build` adds the `wasm32-wasip2` target) and the \
             `sluice` binary.",
            "## Next\n\nThe rule is `keep_span` in `src/lib.rs`. Other kinds — `Transform` (set, rename, delete \
             attributes), `Router` (a route per item), `Exporter` — and the views they read are in the \
             SDK's documentation (`cargo doc --open -p sluice-sdk`).",
        ),
        Lang::Python => (
            &PYTHON,
            "Python",
            "You need Python 3.10 or newer (`make build` creates `.venv` with componentize-py in it) and \
             the `sluice` binary. The first `sluice plugin test` compiles the component for a few \
             seconds; later runs load it from the cache.",
            "## Next\n\nThe rule is `drop` in `app.py`: `batch.names()`, `batch.attribute_of_each(key)`, \
             `batch.span(i)`, `batch.resource_attribute(r, key)` and the rest read the batch through \
             the host, one call each. A `Transform` returns edits (`set_attribute`, \
             `delete_attribute`, ...) and needs `world = \"transform\"` in `pyproject.toml` and `-w \
             transform` in the Makefile; a `Router` returns a route name per item.",
        ),
    };
    let fill = |text: &str| {
        text.replace("{{name}}", &scaffold.name)
            .replace("{{crate}}", &scaffold.name.replace('-', "_"))
            .replace("{{type}}", &type_name(&scaffold.name))
            .replace("{{sdk}}", &sdk.display().to_string())
            .replace("{{language}}", language)
            .replace("{{lang}}", if scaffold.lang == Lang::Rust { "rust" } else { "python" })
            .replace("{{prerequisites}}", prerequisites)
            .replace("{{next}}", next)
    };
    let write = |path: &str, text: &str| -> Result<(), String> {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, fill(text)).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    for (path, text) in files {
        write(path, text)?;
    }
    write("sample.json", SAMPLE)?;
    write("README.md", README)?;
    write(".gitignore", "/target\n/.venv\n*.wasm\nplugin-test.txt\n")?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_types_and_bad_names_are_refused() {
        assert_eq!(type_name("drop-noise"), "DropNoise");
        assert_eq!(type_name("rule2"), "Rule2");
        for bad in ["", "Drop", "2rule", "drop_noise", "a/b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_project_has_no_placeholder_left_and_is_never_written_over() {
        let parent = tempfile::tempdir().expect("tempdir");
        for lang in [Lang::Rust, Lang::Python] {
            let name = format!("rule-{lang:?}").to_lowercase();
            let scaffold = Scaffold { name: name.clone(), lang, parent: parent.path().into(), sdk: None };
            let dir = create(&scaffold).expect("created");
            for entry in walk(&dir) {
                let text = std::fs::read_to_string(&entry).expect("text");
                assert!(!text.contains("{{"), "{} keeps a placeholder", entry.display());
            }
            assert!(create(&scaffold).expect_err("exists").contains("already exists"));
        }
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("dir").flatten() {
            let path = entry.path();
            if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
        }
        out
    }
}
