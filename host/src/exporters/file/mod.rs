//! `type = "file"`: OTLP JSON Lines, as the OpenTelemetry file exporter writes them — one
//! `Export*ServiceRequest` JSON object per line and one file per signal (`traces.jsonl`,
//! `metrics.jsonl`, `logs.jsonl`).
//!
//! A file that would grow past `max_file_size` is rotated first: `traces.jsonl` becomes
//! `traces.jsonl.1`, older rotations shift up, and those beyond `max_files` are deleted. The
//! batches waiting in the queue together are written with one `write` per file (a batch is settled
//! only once its line is written), so a crash of the process loses none it settled. One write of
//! ~1 MiB costs the kernel about two thirds of what writes of ~64 KiB each cost for the same
//! bytes: it fills the page cache in larger pages (`bench/file_write_cost.py --line-size`).

pub mod config;

use super::BuildError;
use super::registry::{ExporterType, Start};
use crate::config::Problem;
use crate::config::units::ByteSize;
use tokio::task::JoinHandle;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

    /// Appends `batch`'s line to the lines in hand; on failure they are as they were.
    fn render(&mut self, batch: &Batch) -> Result<(), ExportError> {
        let start = self.line.len();
        let rendered = crate::batch::write_json(batch.signal(), &[batch.payload()], &mut self.line);
        if let Err(error) = rendered {
            self.line.truncate(start);
            return Err(error.into());
        }
        self.line.push(b'\n');
        Ok(())
    }

    /// Whether `len` more bytes after `held` bytes of lines in hand still fit `signal`'s live file
    /// (an empty file takes a line of any size).
    fn fits(&self, signal: Signal, held: usize, len: usize) -> bool {
        let size = self.files[signal.index()].as_ref().map_or(0, |file| file.size) + held as u64;
        size == 0 || size + len as u64 <= self.max_file_size
    }

    /// Writes the first `len` bytes of the lines in hand, all of `signal`, to its live file with
    /// one `write`, rotating it first if they would not fit; they leave the lines in hand either
    /// way.
    fn write_lines(&mut self, signal: Signal, len: usize) -> Result<(), ExportError> {
        let result = self.write_all_lines(signal, len);
        self.line.drain(..len);
        result
    }

    fn write_all_lines(&mut self, signal: Signal, len: usize) -> Result<(), ExportError> {
        if !self.fits(signal, 0, len) {
            self.rotate(signal)?;
        }
        if self.files[signal.index()].is_none() {
            self.files[signal.index()] = Some(self.open(signal)?);
        }
        let file = self.files[signal.index()].as_mut().expect("opened above");
        let lines = &self.line[..len];
        file.file.write_all(lines).map_err(io_error(format!("cannot write {}", file.path.display())))?;
        file.size += len as u64;
        Ok(())
    }
}

/// Each batch whose line went out in one write takes that write's outcome; a batch that could
/// not be rendered keeps its own error.
fn settle_written(outcomes: &mut [Result<(), ExportError>], written: Result<(), ExportError>) {
    let Err(error) = written else { return };
    for outcome in outcomes.iter_mut().filter(|outcome| outcome.is_ok()) {
        *outcome = Err(copy_error(&error));
    }
}

/// The same error again, for another batch (`io::Error` cannot be cloned: its kind and text are).
fn copy_error(error: &ExportError) -> ExportError {
    match error {
        ExportError::Decode(error) => ExportError::Decode(error.clone()),
        ExportError::Io { context, source } => ExportError::Io {
            context: context.clone(),
            source: io::Error::new(source.kind(), source.to_string()),
        },
    }
}

impl Exporter for FileExporter {
    fn export(&mut self, batch: &Batch) -> Result<(), ExportError> {
        self.line.clear();
        self.render(batch)?;
        self.write_lines(batch.signal(), self.line.len())
    }

    /// Consecutive batches of one signal are rendered one after another and written with one
    /// `write`, as long as they fit the live file together.
    fn export_all(&mut self, batches: &[Arc<Batch>], outcomes: &mut Vec<Result<(), ExportError>>) {
        self.line.clear();
        // The signal of the lines in hand, and the outcome of the first batch among them.
        let mut in_hand: Option<(Signal, usize)> = None;
        for batch in batches {
            let signal = batch.signal();
            let held = self.line.len();
            if let Err(error) = self.render(batch) {
                outcomes.push(Err(error));
                continue;
            }
            let len = self.line.len() - held;
            let joins = in_hand.is_some_and(|(of, _)| of == signal) && self.fits(signal, held, len);
            if !joins && let Some((of, first)) = in_hand.take() {
                // The lines before this one go out now; this one starts the next write.
                let result = self.write_lines(of, held);
                settle_written(&mut outcomes[first..], result);
            }
            in_hand.get_or_insert((signal, outcomes.len()));
            outcomes.push(Ok(()));
        }
        if let Some((of, first)) = in_hand {
            let result = self.write_lines(of, self.line.len());
            settle_written(&mut outcomes[first..], result);
        }
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

    fn exporter_in(dir: &Path, max_file_size: u64) -> FileExporter {
        let config = FileExporterConfig {
            directory: Spanned::new(0..0, dir.to_path_buf()),
            max_file_size: Spanned::new(0..0, ByteSize(max_file_size)),
            max_files: 5,
        };
        FileExporter::new(&ComponentId::new("f").expect("id"), &config).expect("new")
    }

    /// The span names in `file`'s lines, in order.
    fn names_in(file: &Path) -> Vec<String> {
        let text = fs::read_to_string(file).unwrap_or_default();
        text.lines()
            .map(|line| {
                let line: serde_json::Value = serde_json::from_str(line).expect("json");
                line["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"]
                    .as_str()
                    .expect("a name")
                    .to_string()
            })
            .collect()
    }

    /// Batches handed over together land as if written one by one: in order, rotated at the same
    /// size, a batch that cannot be rendered failing alone.
    #[test]
    fn batches_written_together_land_in_order_and_rotate_alike() {
        let line_len = {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut exporter = exporter_in(dir.path(), 1 << 20);
            exporter.export(&batch("span-0")).expect("export");
            fs::metadata(dir.path().join("traces.jsonl")).expect("written").len()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        // Three lines to a file.
        let mut exporter = exporter_in(dir.path(), 3 * line_len + 1);
        let mut batches: Vec<Arc<Batch>> = (0..8).map(|i| Arc::new(batch(&format!("span-{i}")))).collect();
        batches.insert(4, Arc::new(Batch::from_encoded(Signal::Traces, Bytes::from_static(b"\x0a\xff"), 1)));
        let mut outcomes = Vec::new();
        exporter.export_all(&batches, &mut outcomes);
        let failed: Vec<usize> = (0..outcomes.len()).filter(|&i| outcomes[i].is_err()).collect();
        assert_eq!(failed, [4], "only the unreadable batch fails");
        let file = |suffix: &str| dir.path().join(format!("traces.jsonl{suffix}"));
        assert_eq!(names_in(&file(".2")), ["span-0", "span-1", "span-2"]);
        assert_eq!(names_in(&file(".1")), ["span-3", "span-4", "span-5"]);
        assert_eq!(names_in(&file("")), ["span-6", "span-7"]);
    }

    /// When the write fails, every batch that was to go out with it fails.
    #[test]
    fn a_failed_write_fails_each_batch_in_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut exporter = exporter_in(dir.path(), 1 << 20);
        // The live file's name is taken by a directory: it cannot be opened.
        fs::create_dir(dir.path().join("traces.jsonl")).expect("mkdir");
        let batches: Vec<Arc<Batch>> = (0..3).map(|i| Arc::new(batch(&format!("span-{i}")))).collect();
        let mut outcomes = Vec::new();
        exporter.export_all(&batches, &mut outcomes);
        assert_eq!(outcomes.len(), 3);
        for outcome in outcomes {
            let error = outcome.expect_err("failed").to_string();
            assert!(error.contains("cannot open"), "{error}");
        }
    }
}
