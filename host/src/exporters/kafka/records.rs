//! A batch as Kafka records: its items grouped by the partition key read from their encoded
//! bytes, every group written as its own export request in one pass by
//! `sluice_wire::rewrite::partition` (items copied verbatim under copies of their resource and
//! scope). Nothing is decoded; a batch whose items share one key is one record holding the
//! batch's bytes as they are.

use std::collections::HashMap;

use bytes::Bytes;
use sluice_wire::otlp::Signal;
use sluice_wire::rewrite::partition;
use sluice_wire::views::{self, LogRecordView, SpanView};
use sluice_wire::wire::Error;

use super::config::PartitionKey;

/// One record: its key (which picks the partition), borrowed from the batch, and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// The key; `None` lets the producer choose the partition.
    pub key: Option<&'a [u8]>,
    /// The encoded export request.
    pub payload: Bytes,
    /// Spans, data points or log records in it.
    pub items: u64,
}

/// The key of one item, borrowed from the request: its trace ID, or its resource's
/// `service.name`.
fn key_of<'a>(signal: Signal, item: &views::Item<'a>, by: PartitionKey) -> &'a [u8] {
    let service = item.resource.service_name().as_bytes();
    match (by, signal) {
        (PartitionKey::TraceId, Signal::Traces) => SpanView::new(item.bytes).trace_id(),
        (PartitionKey::TraceId, Signal::Logs) => {
            let id = LogRecordView::new(item.bytes).trace_id();
            if id.is_empty() { service } else { id }
        }
        _ => service,
    }
}

/// What one encoded item counts for: a span or log record is one; a metric, its data points.
fn weight(signal: Signal, item: &[u8]) -> u64 {
    match signal {
        Signal::Metrics => sluice_wire::otlp::data_points(item).unwrap_or(0),
        Signal::Traces | Signal::Logs => 1,
    }
}

/// Splits `payload`, an encoded request of `signal` holding `items` items, into records by `by`.
pub fn split(
    signal: Signal,
    payload: &Bytes,
    items: u64,
    by: PartitionKey,
) -> Result<Vec<Record<'_>>, Error> {
    if by == PartitionKey::None {
        return Ok(vec![Record { key: None, payload: payload.clone(), items }]);
    }
    // Each item's group, groups in the order their first item comes; keys borrowed from the
    // request, so reading them allocates nothing per item.
    let mut groups: HashMap<&[u8], u32> = HashMap::new();
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    let mut group_of: Vec<u32> = Vec::new();
    for item in views::items(signal, payload) {
        let key = key_of(signal, &item, by);
        let group = *groups.entry(key).or_insert_with(|| {
            keys.push(key);
            counts.push(0);
            keys.len() as u32 - 1
        });
        counts[group as usize] += weight(signal, item.bytes);
        group_of.push(group);
    }
    if keys.len() <= 1 {
        let key = keys.pop();
        return Ok(vec![Record { key, payload: payload.clone(), items }]);
    }
    // One pass however many traces the batch holds. (The views stop at a malformed part, which
    // `partition` then reports; until it does, an item they did not reach goes to the first.)
    let parts = partition(payload, keys.len(), |n, _| group_of.get(n as usize).copied().unwrap_or(0))?;
    Ok(keys
        .into_iter()
        .zip(counts)
        .zip(parts)
        .map(|((key, items), part)| Record { key: Some(key), payload: Bytes::from(part), items })
        .collect())
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message as _;

    use super::*;

    /// Two services, each with spans of the traces named by their first byte.
    fn request(services: &[(&str, &[u8])]) -> Bytes {
        let resource_spans = services
            .iter()
            .map(|(service, traces)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(service.to_string())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: traces
                        .iter()
                        .enumerate()
                        .map(|(i, &trace)| Span {
                            trace_id: vec![trace; 16],
                            span_id: vec![(i as u8).wrapping_add(1); 8],
                            name: format!("{service}-{i}"),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        Bytes::from(ExportTraceServiceRequest { resource_spans }.encode_to_vec())
    }

    fn names(payload: &[u8]) -> Vec<String> {
        views::items(Signal::Traces, payload).map(|i| SpanView::new(i.bytes).name().to_string()).collect()
    }

    #[test]
    fn a_trace_stays_in_one_record_keyed_by_its_id() {
        let payload = request(&[("api", &[1, 2, 1]), ("web", &[2, 3])]);
        let records = split(Signal::Traces, &payload, 5, PartitionKey::TraceId).expect("valid");
        let got: Vec<(Vec<u8>, Vec<String>, u64)> =
            records.iter().map(|r| (r.key.expect("keyed").to_vec(), names(&r.payload), r.items)).collect();
        assert_eq!(
            got,
            [
                (vec![1; 16], vec!["api-0".to_string(), "api-2".into()], 2),
                (vec![2; 16], vec!["api-1".to_string(), "web-0".into()], 2),
                (vec![3; 16], vec!["web-1".to_string()], 1),
            ]
        );
    }

    #[test]
    fn by_service_and_unkeyed_and_one_key_keep_the_bytes_as_they_are() {
        let payload = request(&[("api", &[1, 2]), ("web", &[3])]);
        let by_service = split(Signal::Traces, &payload, 3, PartitionKey::Service).expect("valid");
        let keys: Vec<Vec<u8>> = by_service.iter().map(|r| r.key.expect("keyed").to_vec()).collect();
        assert_eq!(keys, [b"api".to_vec(), b"web".to_vec()]);
        let [whole] =
            <[Record; 1]>::try_from(split(Signal::Traces, &payload, 3, PartitionKey::None).expect("valid"))
                .expect("one record");
        assert_eq!((whole.key, whole.items), (None, 3));
        assert!(whole.payload.as_ptr() == payload.as_ptr(), "not copied");
        let one_trace = request(&[("api", &[7, 7])]);
        let records = split(Signal::Traces, &one_trace, 2, PartitionKey::TraceId).expect("valid");
        assert_eq!(records.len(), 1);
        assert!(records[0].payload.as_ptr() == one_trace.as_ptr(), "one key: the batch as it is");
    }

    #[test]
    fn a_batch_of_many_traces_becomes_one_record_per_trace_in_one_pass() {
        let traces: Vec<u8> = (0..=255).chain(0..=255).collect();
        let payload = request(&[("api", &traces[..300]), ("web", &traces[300..])]);
        let records = split(Signal::Traces, &payload, 512, PartitionKey::TraceId).expect("valid");
        assert_eq!(records.len(), 256);
        for (trace, record) in records.iter().enumerate() {
            assert_eq!(record.key, Some(&[trace as u8; 16][..]));
            assert_eq!(record.items, 2);
            let expected = match trace {
                0..44 => vec![format!("api-{trace}"), format!("api-{}", trace + 256)],
                _ => vec![format!("api-{trace}"), format!("web-{}", trace - 44)],
            };
            assert_eq!(names(&record.payload), expected, "trace {trace}");
        }
    }
}
