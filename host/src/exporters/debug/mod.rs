//! `type = "debug"`: what is flowing, on stdout.
//!
//! The summary reads only resource attributes through the wire views, so watching a pipeline
//! this way costs no decode; `detailed` decodes and prints the batch as OTLP JSON.

pub mod config;

use super::BuildError;
use super::registry::{ExporterType, Start};
use tokio::task::JoinHandle;

use std::io::Write;

use super::{ExportError, Exporter};
use crate::batch::Batch;
use crate::config::{ComponentId, DebugExporterConfig, Verbosity};

/// Prints batches to stdout.
#[derive(Debug)]
pub struct DebugExporter {
    name: ComponentId,
    verbosity: Verbosity,
}

impl DebugExporter {
    /// An exporter named `name`.
    pub fn new(name: &ComponentId, config: &DebugExporterConfig) -> Self {
        Self { name: name.clone(), verbosity: config.verbosity }
    }

    fn render(&self, batch: &Batch) -> Result<Vec<u8>, ExportError> {
        let mut out = Vec::with_capacity(128);
        match self.verbosity {
            Verbosity::Summary => {
                let services = sluice_wire::otlp::service_names(batch.signal(), batch.payload())
                    .map_err(|e| crate::batch::DecodeError(e.to_string()))?;
                let services = if services.is_empty() { "-".to_string() } else { services.join(",") };
                let _ = writeln!(
                    out,
                    "{} {} service.name={} items={}",
                    self.name,
                    batch.signal(),
                    services,
                    batch.items()
                );
            }
            Verbosity::Detailed => {
                let _ = writeln!(out, "{} {} items={}", self.name, batch.signal(), batch.items());
                batch.decoded().map_err(|e| e.clone())?.write_json(&mut out, true).map_err(|e| {
                    ExportError::Io { context: "cannot render JSON".into(), source: e.into() }
                })?;
                out.push(b'\n');
            }
        }
        Ok(out)
    }
}

impl Exporter for DebugExporter {
    fn export(&mut self, batch: &Batch) -> Result<(), ExportError> {
        let text = self.render(batch)?;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&text)
            .and_then(|()| stdout.flush())
            .map_err(|source| ExportError::Io { context: "cannot write to stdout".into(), source })
    }

    fn flush(&mut self) -> Result<(), ExportError> {
        std::io::stdout()
            .flush()
            .map_err(|source| ExportError::Io { context: "cannot flush stdout".into(), source })
    }
}

impl ExporterType for DebugExporterConfig {
    async fn start(&self, start: Start<'_>) -> Result<JoinHandle<()>, BuildError> {
        let exporter = DebugExporter::new(start.name, self);
        Ok(start.run(exporter))
    }
}
