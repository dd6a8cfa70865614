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
        let error = match sluice::config::parse(Path::new(name), &text, &lookup) {
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
        if path.extension().is_some_and(|e| e == "toml") {
            let text = fs::read_to_string(&path).expect("readable");
            // The variables a deployment must set (no default in the file), with example values.
            let deployment =
                |name: &str| (name == "SLUICE_OTLP_ENDPOINT").then(|| "https://otlp.example.com".to_string());
            if let Err(diagnostics) = sluice::config::parse(&path, &text, &deployment) {
                panic!("{diagnostics}");
            }
            checked += 1;
        }
    }
    assert!(checked > 0);
}
