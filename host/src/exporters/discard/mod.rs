//! `type = "discard"`: counts and drops, for benchmarks and tests.

pub mod config;

use super::BuildError;
use super::registry::{ExporterType, Start};
use config::DiscardExporterConfig;
use tokio::task::JoinHandle;

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

impl ExporterType for DiscardExporterConfig {
    async fn start(&self, start: Start<'_>) -> Result<JoinHandle<()>, BuildError> {
        Ok(start.run(DiscardExporter))
    }
}
