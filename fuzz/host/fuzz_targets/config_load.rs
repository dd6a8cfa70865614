//! The config loader never panics on any text: every problem is a diagnostic.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lookup = |name: &str| (name == "SET").then(|| "value".to_string());
    if let Err(diagnostics) = sluice::config::parse(Path::new("/nonexistent/sluice.toml"), text, &lookup) {
        // Rendering the errors (line, column, the source line) must not panic either.
        let _ = diagnostics.to_string();
    }
});
