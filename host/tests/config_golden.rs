//! Golden tests for config errors: every `tests/config/invalid/NAME.toml` must fail validation
//! with exactly the text in `NAME.err` beside it. Error text is part of the interface.
//!
//! `SLUICE_BLESS=1 cargo test --test config_golden` rewrites the `.err` files after a deliberate
//! change; review the diff before committing it.

use std::fs;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf()
}

/// The environment the golden files see: one variable set, everything else unset.
fn lookup(name: &str) -> Option<String> {
    (name == "SLUICE_TEST_SET").then(|| "set".to_string())
}

#[test]
fn invalid_configs_fail_with_their_golden_errors() {
    let dir = repo_root().join("tests/config/invalid");
    let bless = std::env::var_os("SLUICE_BLESS").is_some();
    let mut cases = fs::read_dir(&dir)
        .expect("tests/config/invalid exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect::<Vec<_>>();
    cases.sort();
    assert!(cases.len() >= 12, "expected at least 12 golden cases, found {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().expect("file name");
        let text = fs::read_to_string(case).expect("readable");
        // Relative to the package folder (cargo's working directory for tests), so messages
        // read the same on every machine and `config_file` paths resolve beside the case.
        let shown = Path::new("../tests/config/invalid").join(name);
        let error = match sluice::config::parse(&shown, &text, &lookup) {
            Ok(_) => {
                failures.push(format!("{}: validated, but it must fail", case.display()));
                continue;
            }
            Err(diagnostics) => format!("{diagnostics}\n"),
        };
        let golden = case.with_extension("err");
        if bless {
            fs::write(&golden, &error).expect("write golden");
            continue;
        }
        match fs::read_to_string(&golden) {
            Ok(expected) if expected == error => {}
            Ok(expected) => failures.push(format!(
                "{}: error text differs\n--- expected\n{expected}--- actual\n{error}",
                case.display()
            )),
            Err(_) => failures
                .push(format!("{}: no golden file; run with SLUICE_BLESS=1\n{error}", golden.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn shipped_pipelines_are_valid() {
    let dir = repo_root().join("pipelines");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).expect("pipelines/ exists") {
        let path = entry.expect("dir entry").path();
        // `*.rules.toml` are plugin settings that pipelines name in `config_file`.
        let rules = path.to_string_lossy().ends_with(".rules.toml");
        if path.extension().is_some_and(|e| e == "toml") && !rules {
            let text = fs::read_to_string(&path).expect("readable");
            // The variables a deployment must set (no default in the file), with example values.
            let deployment = |name: &str| match name {
                "SLUICE_OTLP_ENDPOINT" => Some("https://otlp.example.com".to_string()),
                "SLUICE_OTLP_USERNAME" | "SLUICE_OTLP_PASSWORD" | "CUSTOM_COLLECTOR_KEY" => {
                    Some("example-credential".to_string())
                }
                _ => None,
            };
            // Each plugin is started with its settings too, as `sluice validate` and `run` do:
            // the shared rule files must be what the plugins accept.
            let plugins = sluice::plugins::runner::Preflight;
            if let Err(diagnostics) = sluice::config::parse_with(&path, &text, &deployment, Some(&plugins)) {
                panic!("{diagnostics}");
            }
            checked += 1;
        }
    }
    assert!(checked > 0);
}
