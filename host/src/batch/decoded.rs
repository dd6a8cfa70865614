//! Owned OTLP requests (prost types), for the stages that need them.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;

use crate::config::Signal;

/// Why a payload could not be decoded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// An owned export request of any signal.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Traces.
    Traces(ExportTraceServiceRequest),
    /// Metrics.
    Metrics(ExportMetricsServiceRequest),
    /// Logs.
    Logs(ExportLogsServiceRequest),
}

impl Decoded {
    /// Decodes protobuf bytes.
    pub fn from_protobuf(signal: Signal, bytes: &[u8]) -> Result<Self, DecodeError> {
        let err = |e: prost::DecodeError| DecodeError(format!("invalid protobuf {signal} request: {e}"));
        Ok(match signal {
            Signal::Traces => Decoded::Traces(ExportTraceServiceRequest::decode(bytes).map_err(err)?),
            Signal::Metrics => Decoded::Metrics(ExportMetricsServiceRequest::decode(bytes).map_err(err)?),
            Signal::Logs => Decoded::Logs(ExportLogsServiceRequest::decode(bytes).map_err(err)?),
        })
    }

    /// Decodes the OTLP/JSON mapping. Unknown fields are ignored, as the spec requires.
    pub fn from_json(signal: Signal, bytes: &[u8]) -> Result<Self, DecodeError> {
        let err = |e: serde_json::Error| DecodeError(format!("invalid JSON {signal} request: {e}"));
        Ok(match signal {
            Signal::Traces => Decoded::Traces(serde_json::from_slice(bytes).map_err(err)?),
            Signal::Metrics => Decoded::Metrics(serde_json::from_slice(bytes).map_err(err)?),
            Signal::Logs => Decoded::Logs(serde_json::from_slice(bytes).map_err(err)?),
        })
    }

    /// The signal.
    pub fn signal(&self) -> Signal {
        match self {
            Decoded::Traces(_) => Signal::Traces,
            Decoded::Metrics(_) => Signal::Metrics,
            Decoded::Logs(_) => Signal::Logs,
        }
    }

    /// Encodes to protobuf.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Decoded::Traces(r) => r.encode_to_vec(),
            Decoded::Metrics(r) => r.encode_to_vec(),
            Decoded::Logs(r) => r.encode_to_vec(),
        }
    }

    /// Writes the OTLP/JSON mapping (one object, no trailing newline).
    pub fn write_json(&self, out: &mut Vec<u8>, pretty: bool) -> Result<(), serde_json::Error> {
        match (self, pretty) {
            (Decoded::Traces(r), false) => serde_json::to_writer(out, r),
            (Decoded::Metrics(r), false) => serde_json::to_writer(out, r),
            (Decoded::Logs(r), false) => serde_json::to_writer(out, r),
            (Decoded::Traces(r), true) => serde_json::to_writer_pretty(out, r),
            (Decoded::Metrics(r), true) => serde_json::to_writer_pretty(out, r),
            (Decoded::Logs(r), true) => serde_json::to_writer_pretty(out, r),
        }
    }

    /// Counts items: spans, metric data points or log records.
    pub fn items(&self) -> u64 {
        let count: usize = match self {
            Decoded::Traces(r) => {
                r.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum()
            }
            Decoded::Logs(r) => {
                r.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum()
            }
            Decoded::Metrics(r) => r
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .map(|m| match &m.data {
                    Some(Data::Gauge(g)) => g.data_points.len(),
                    Some(Data::Sum(s)) => s.data_points.len(),
                    Some(Data::Histogram(h)) => h.data_points.len(),
                    Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                    Some(Data::Summary(s)) => s.data_points.len(),
                    None => 0,
                })
                .sum(),
        };
        count as u64
    }

    /// Removes the items the OTLP spec says a receiver must reject (spans without a 16-byte
    /// trace ID and 8-byte span ID; log records with IDs of the wrong length; number data
    /// points without a value; histogram data points whose bucket counts don't number one more
    /// than their bounds) and returns how many it removed. Mirrors [`sluice_wire::summarize`]'s
    /// `invalid_items`.
    pub fn remove_invalid_items(&mut self) -> u64 {
        let mut removed = 0;
        match self {
            Decoded::Traces(r) => {
                for spans in r.resource_spans.iter_mut().flat_map(|r| &mut r.scope_spans) {
                    let before = spans.spans.len();
                    spans.spans.retain(|s| s.trace_id.len() == 16 && s.span_id.len() == 8);
                    removed += before - spans.spans.len();
                }
            }
            Decoded::Logs(r) => {
                for logs in r.resource_logs.iter_mut().flat_map(|r| &mut r.scope_logs) {
                    let before = logs.log_records.len();
                    logs.log_records
                        .retain(|l| matches!(l.trace_id.len(), 0 | 16) && matches!(l.span_id.len(), 0 | 8));
                    removed += before - logs.log_records.len();
                }
            }
            Decoded::Metrics(r) => {
                let metrics = r.resource_metrics.iter_mut().flat_map(|r| &mut r.scope_metrics);
                for metric in metrics.flat_map(|s| &mut s.metrics) {
                    removed += match &mut metric.data {
                        Some(Data::Gauge(g)) => retain_counting(&mut g.data_points, |p| p.value.is_some()),
                        Some(Data::Sum(s)) => retain_counting(&mut s.data_points, |p| p.value.is_some()),
                        Some(Data::Histogram(h)) => retain_counting(&mut h.data_points, |p| {
                            p.bucket_counts.is_empty() || p.bucket_counts.len() == p.explicit_bounds.len() + 1
                        }),
                        _ => 0,
                    };
                }
            }
        }
        removed as u64
    }
}

/// Keeps the items `keep` accepts; returns how many went.
fn retain_counting<T>(items: &mut Vec<T>, keep: impl Fn(&T) -> bool) -> usize {
    let before = items.len();
    items.retain(keep);
    before - items.len()
}
