//! `type = "file"`: its table.

use std::path::PathBuf;

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::config::units::ByteSize;

/// `type = "file"`: writes `traces.jsonl`, `metrics.jsonl` and `logs.jsonl` in `directory`.
///
/// ```toml
/// [exporters.archive]
/// type = "file"
/// directory = "${SLUICE_DATA_DIR:-./data}"
/// max_file_size = "100MiB"
/// max_files = 5
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileExporterConfig {
    /// The folder the files go in; created if missing.
    pub directory: Spanned<PathBuf>,
    /// A file is rotated once it reaches this size: `max_file_size = "100MiB"`.
    #[serde(default = "default_max_file_size")]
    pub max_file_size: Spanned<ByteSize>,
    /// Rotated files kept per signal beside the live one; older ones are deleted.
    #[serde(default = "default_max_files")]
    pub max_files: usize,
}

fn default_max_file_size() -> Spanned<ByteSize> {
    Spanned::new(0..0, ByteSize::mib(100))
}

fn default_max_files() -> usize {
    5
}
