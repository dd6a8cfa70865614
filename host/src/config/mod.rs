//! The pipeline TOML: parse, substitute the environment, type-check and validate — all before
//! anything is built — and report every problem at once with its line and column.
//!
//! # Layout
//! - [`schema`]: the typed config, one struct per table, with TOML examples.
//! - [`env`](mod@env): `${VAR}` / `${VAR:-default}` substitution that keeps error positions true.
//! - [`units`]: sizes (`"4MiB"`) and durations (`"10s"`).
//! - [`diagnostic`]: errors with a file, line, column and caret.
//! - `load`: reads the file and drives the rest; `parsed`: what parsing produced;
//!   `validate`: checks that span components, reading `parsed`.

pub mod diagnostic;
pub mod env;
mod load;
mod parsed;
pub mod schema;
pub mod units;
mod validate;

pub use diagnostic::{Diagnostic, Diagnostics};
pub(crate) use load::Parser as TableParser;
pub use load::{LoadError, Loaded, PluginCheck, load_file, parse, parse_with};
pub use schema::*;
pub(crate) use validate::{duplicate_signals, is_loopback_host, is_sensitive_header, written_secret};
