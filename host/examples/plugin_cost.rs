//! What a plugin costs, the same rule three ways: `drop-spans` (Rust, walking the batch in the
//! guest), `fixture-view-filter` (Rust, asking the host's batch view) and `drop-health-checks`
//! (Python, asking the host's batch view). The rule: drop spans named `GET /healthz`, or whose
//! `attribute.key.3` is `never` — a name and one attribute read for every span. Per plugin:
//! the component's size, its first compile and its load from the cache, its instance's linear
//! memory, and µs per span on the load generator's batches (100 spans × 10 attributes).
//!
//! Then the two rules `pipelines/forward.toml` runs, from their shipped files: the noise filter
//! (`drop-spans`, seven span-name patterns and three route patterns) and the tags
//! (`set-attributes`, two resource attributes).
//!
//! ```sh
//! make plugins && cargo run --release -p sluice-host --example plugin_cost
//! ```
//!
//! `SLUICE_PLUGIN_DIR` points it at other builds of the same plugins (one with symbols, to
//! profile the guest).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice::config::{OnError, Signal};
use sluice::plugins::loader;
use sluice::plugins::runner::{Answer, Plugin, Spec, Step};
use sluice::plugins::sandbox;
use sluice_bench::make_batch;

const POOL: usize = 64;
const ROUNDS: usize = 7;

/// What a rule answers for each batch of the pool.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Drops every 10th span (the load generator names those `GET /healthz`).
    HealthChecks,
    /// Edits the batch.
    Edits,
}

/// A shipped rules file as the JSON config its plugin receives, `${VAR:-default}` substituted
/// as the host does it.
fn shipped_rules(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pipelines").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let expanded = sluice::config::env::expand(&text, &|name| std::env::var(name).ok());
    assert!(expanded.errors.is_empty(), "{}: {:?}", path.display(), expanded.errors);
    let value: serde_json::Value = toml_edit::de::from_str(&expanded.text).expect("valid rules");
    value.to_string()
}

fn main() {
    let dist = std::env::var_os("SLUICE_PLUGIN_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist"), PathBuf::from);
    let one_rule = r#"{"span_names": ["GET /healthz"], "attribute": "attribute.key.3", "values": ["never"]}"#;
    let rules = [
        (
            "Rust, guest walk",
            "drop-spans",
            r#"{"span_names": ["GET /healthz"], "span_attributes": {"attribute.key.3": ["never"]}}"#
                .to_string(),
            Expect::HealthChecks,
        ),
        ("Rust, host view", "fixture-view-filter", one_rule.to_string(), Expect::HealthChecks),
        ("Python, host view", "drop-health-checks", one_rule.to_string(), Expect::HealthChecks),
        (
            "Graphistry noise",
            "drop-spans",
            shipped_rules("graphistry-noise.rules.toml"),
            Expect::HealthChecks,
        ),
        ("Graphistry tags", "set-attributes", shipped_rules("graphistry-tags.rules.toml"), Expect::Edits),
    ];
    let mut rng = rand::rng();
    let batches: Vec<Bytes> = (0..POOL).map(|_| Bytes::from(make_batch(&mut rng, 100, 10, 1))).collect();
    println!(
        "| rule | size | first compile | cached load | instance memory | µs per span (median of {ROUNDS}) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (what, name, config, expect) in rules {
        let path = dist.join(format!("{name}.wasm"));
        let size = std::fs::metadata(&path)
            .map(|m| m.len())
            .unwrap_or_else(|_| panic!("{}: run make plugins", path.display()));
        let cache = tempfile::tempdir().expect("tempdir");
        let engine = sandbox::engine();
        let started = Instant::now();
        loader::load(engine, &path, None, Some(cache.path())).expect("compiles");
        let compile = started.elapsed();
        let started = Instant::now();
        let loaded = loader::load(engine, &path, None, Some(cache.path())).expect("loads");
        let cached = started.elapsed();
        assert!(loaded.cached);
        let mut spec = Spec::standalone(&path, &config);
        spec.cache_dir = Some(cache.path().into());
        spec.on_error = OnError::Pass;
        let (mut plugin, fault) = Plugin::new(spec);
        assert!(fault.is_none(), "{name}: {fault:?}");
        let mut dropped = 0;
        for batch in &batches {
            match (plugin.run(Signal::Traces, batch), expect) {
                (Step::Answered(Answer::Drop(items)), Expect::HealthChecks) => dropped += items.len(),
                (Step::Answered(Answer::Edit(edits)), Expect::Edits) => assert!(!edits.is_empty(), "{name}"),
                (other, _) => panic!("{name}: {other:?}"),
            }
        }
        if let Expect::HealthChecks = expect {
            assert_eq!(dropped, POOL * 10, "{name}: every 10th span is a health check");
        }
        let mut rounds: Vec<Duration> = (0..ROUNDS)
            .map(|_| {
                let started = Instant::now();
                for batch in &batches {
                    std::hint::black_box(plugin.run(Signal::Traces, batch));
                }
                started.elapsed()
            })
            .collect();
        rounds.sort();
        let per_span = rounds[ROUNDS / 2].as_secs_f64() * 1e6 / (POOL * 100) as f64;
        let memory = plugin.memory_peak().unwrap_or(0);
        println!(
            "| {what} (`{name}`) | {:.1} MB | {:.0} ms | {:.1} ms | {:.1} MiB | {per_span:.2} |",
            size as f64 / 1e6,
            compile.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e3,
            memory as f64 / (1 << 20) as f64,
        );
    }
}
