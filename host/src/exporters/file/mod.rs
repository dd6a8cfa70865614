//! `type = "file"`: OTLP JSON Lines, as the OpenTelemetry file exporter writes them — one
//! `Export*ServiceRequest` JSON object per line and one file per signal (`traces.jsonl`,
//! `metrics.jsonl`, `logs.jsonl`).
//!
//! A file that would grow past `max_file_size` is rotated first: `traces.jsonl` becomes
//! `traces.jsonl.1`, older rotations shift up, and those beyond `max_files` are deleted. Each
//! batch is written with one `write` and flushed, so a crash loses at most the batch in hand.

pub mod config;

use super::BuildError;
use super::registry::{ExporterType, Start};
use crate::config::Problem;
use crate::config::units::ByteSize;
use tokio::task::JoinHandle;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{ExportError, Exporter};
use crate::batch::Batch;
use crate::config::{ComponentId, FileExporterConfig, Signal};

/// Writes batches as OTLP JSON Lines.
#[derive(Debug)]
pub struct FileExporter {
    name: ComponentId,
    directory: PathBuf,
    max_file_size: u64,
    max_files: usize,
    files: [Option<SignalFile>; 3],
    line: Vec<u8>,
}

#[derive(Debug)]
struct SignalFile {
    path: PathBuf,
    file: File,
    size: u64,
}

fn io_error(context: String) -> impl FnOnce(io::Error) -> ExportError {
    move |source| ExportError::Io { context, source }
}

impl FileExporter {
    /// Creates the directory if needed; files are opened on first use.
    pub fn new(name: &ComponentId, config: &FileExporterConfig) -> Result<Self, ExportError> {
        let directory = config.directory.get_ref().clone();
        fs::create_dir_all(&directory)
            .map_err(io_error(format!("cannot create directory {}", directory.display())))?;
        Ok(Self {
            name: name.clone(),
            directory,
            max_file_size: config.max_file_size.get_ref().0,
            max_files: config.max_files,
            files: [None, None, None],
            line: Vec::new(),
        })
    }

    /// The live file of `signal` in `directory`.
    pub fn path_for(directory: &Path, signal: Signal) -> PathBuf {
        directory.join(format!("{signal}.jsonl"))
    }

    fn open(&self, signal: Signal) -> Result<SignalFile, ExportError> {
        let path = Self::path_for(&self.directory, signal);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(format!("cannot open {}", path.display())))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(SignalFile { path, file, size })
    }

    fn rotate(&mut self, signal: Signal) -> Result<(), ExportError> {
        let Some(current) = self.files[signal.index()].take() else { return Ok(()) };
        drop(current.file);
        let rotated = |n: usize| PathBuf::from(format!("{}.{n}", current.path.display()));
        if self.max_files == 0 {
            fs::remove_file(&current.path)
                .map_err(io_error(format!("cannot remove {}", current.path.display())))?;
        } else {
            let _ = fs::remove_file(rotated(self.max_files));
            for n in (1..self.max_files).rev() {
                let from = rotated(n);
                if from.exists() {
                    fs::rename(&from, rotated(n + 1))
                        .map_err(io_error(format!("cannot rotate {}", from.display())))?;
                }
            }
            fs::rename(&current.path, rotated(1))
                .map_err(io_error(format!("cannot rotate {}", current.path.display())))?;
        }
        tracing::info!(exporter = %self.name, file = %current.path.display(), "Rotated file");
        Ok(())
    }

    fn write_line(&mut self, batch: &Batch) -> Result<(), ExportError> {
        let signal = batch.signal();
        self.line.clear();
        crate::batch::write_json(signal, &[batch.payload()], &mut self.line)?;
        self.line.push(b'\n');
        let len = self.line.len() as u64;
        if let Some(file) = &self.files[signal.index()]
            && file.size > 0
            && file.size + len > self.max_file_size
        {
            self.rotate(signal)?;
        }
        if self.files[signal.index()].is_none() {
            self.files[signal.index()] = Some(self.open(signal)?);
        }
        let file = self.files[signal.index()].as_mut().expect("opened above");
        file.file.write_all(&self.line).map_err(io_error(format!("cannot write {}", file.path.display())))?;
        file.size += len;
        Ok(())
    }
}

impl Exporter for FileExporter {
    fn export(&mut self, batch: &Batch) -> Result<(), ExportError> {
        self.write_line(batch)
    }

    fn flush(&mut self) -> Result<(), ExportError> {
        for file in self.files.iter_mut().flatten() {
            file.file.sync_data().map_err(io_error(format!("cannot sync {}", file.path.display())))?;
        }
        Ok(())
    }
}

impl ExporterType for FileExporterConfig {
    fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.directory.get_ref().as_os_str().is_empty() {
            problems.push((Some(self.directory.span()), "`directory` is empty".to_string()));
        }
        if *self.max_file_size.get_ref() < ByteSize(1024) {
            // A default carries no span: the exporter's header stands in.
            let span = Some(self.max_file_size.span()).filter(|s| !s.is_empty());
            problems.push((span, "`max_file_size` must be at least 1KiB".to_string()));
        }
        problems
    }

    async fn start(&self, start: Start<'_>) -> Result<JoinHandle<()>, BuildError> {
        let exporter = FileExporter::new(start.name, self).map_err(|e| start.failed(e))?;
        Ok(start.run(exporter))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    use serde_spanned::Spanned;

    use super::*;
    use crate::config::units::ByteSize;

    fn batch(name: &str) -> Batch {
        let span =
            Span { trace_id: vec![1; 16], span_id: vec![2; 8], name: name.into(), ..Default::default() };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
                ..Default::default()
            }],
        };
        Batch::from_encoded(Signal::Traces, Bytes::from(request.encode_to_vec()), 1)
    }

    #[test]
    fn writes_json_lines_and_rotates_by_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = FileExporterConfig {
            directory: Spanned::new(0..0, dir.path().to_path_buf()),
            max_file_size: Spanned::new(0..0, ByteSize(300)),
            max_files: 2,
        };
        let mut exporter = FileExporter::new(&ComponentId::new("f").expect("id"), &config).expect("new");
        for i in 0..10 {
            exporter.export(&batch(&format!("span-{i}"))).expect("export");
        }
        exporter.flush().expect("flush");
        let live = fs::read_to_string(dir.path().join("traces.jsonl")).expect("live file");
        let first: serde_json::Value =
            serde_json::from_str(live.lines().next().expect("a line")).expect("json");
        assert_eq!(first["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"], "01".repeat(16));
        assert!(dir.path().join("traces.jsonl.1").exists());
        assert!(dir.path().join("traces.jsonl.2").exists());
        assert!(!dir.path().join("traces.jsonl.3").exists());
        let newest = live.lines().last().expect("a line");
        assert!(newest.contains("span-9"), "{newest}");
    }
}
