//! `type = "discard"`: counts and drops, for benchmarks and tests.

use super::{ExportError, Exporter};
use crate::batch::Batch;

/// Drops every batch; the runner still counts its items as sent.
#[derive(Debug, Default)]
pub struct DiscardExporter;

impl Exporter for DiscardExporter {
    const BLOCKING: bool = false;

    fn export(&mut self, _batch: &Batch) -> Result<(), ExportError> {
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ExportError> {
        Ok(())
    }
}
