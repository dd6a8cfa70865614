//! Splitting a request by routing key, on the wire: each item's key is read from its encoded
//! bytes, and each backend's part is written by [`rewrite::rebuild`], which copies the items it
//! keeps verbatim and re-frames their groups. Nothing is decoded.
//!
//! A request whose items all belong to one backend is not rewritten at all: the caller sends the
//! batch as it is (and with it the body its client compressed).

use sluice_wire::otlp::{METRIC_DATA, METRIC_DATA_POINTS, Request, ResourceGroup, Signal};
use sluice_wire::rewrite::{self, ItemAction};
use sluice_wire::wire::{Error, Fields, put_bytes_field};

use super::config::RoutingKey;
use super::ring::{Hasher, Ring, hash};

const SPAN_TRACE_ID: u32 = 1;
const LOG_TRACE_ID: u32 = 9;
const METRIC_NAME: u32 = 1;
const RESOURCE_ATTRIBUTES: u32 = 1;

/// Where a request's items go.
#[derive(Debug, PartialEq, Eq)]
pub enum Split {
    /// Every item to this backend: send the request as it is.
    Whole(u32),
    /// One encoded request per backend, with its item count (data points for metrics).
    Parts(Vec<Part>),
}

/// One backend's share of a request.
#[derive(Debug, PartialEq, Eq)]
pub struct Part {
    /// The backend's index in the ring's list.
    pub backend: u32,
    /// The encoded request holding its items.
    pub payload: Vec<u8>,
    /// Spans, data points or log records in it.
    pub items: u64,
}

/// Who owns one item.
#[derive(Debug)]
enum Owner {
    /// The whole item.
    One(u32),
    /// A metric routed per data point: each point's owner, in order.
    Points(Vec<u32>),
}

/// Splits `buf`, an encoded request of `signal`, among the ring's backends by `key`.
pub fn split(signal: Signal, buf: &[u8], key: RoutingKey, ring: &Ring) -> Result<Split, Error> {
    let mut owners = Vec::new();
    let mut items = vec![0u64; ring.backends()];
    // Reused for every data point's attributes (sorted before hashing).
    let mut scratch = Vec::new();
    for group in Request::new(signal, buf).resources() {
        let group = group?;
        let mut fallback = None;
        let mut group_key = || -> Result<u64, Error> {
            if let Some(hashed) = fallback {
                return Ok(hashed);
            }
            let hashed = match key {
                RoutingKey::Resource => resource_hash(&group)?,
                _ => service_hash(&group)?,
            };
            fallback = Some(hashed);
            Ok(hashed)
        };
        for scope in group.scopes() {
            for item in scope?.items() {
                let item = item?;
                let owner = match (signal, key) {
                    (Signal::Traces, RoutingKey::TraceId | RoutingKey::Metric) => {
                        let hashed = match trace_id(item, SPAN_TRACE_ID)? {
                            Some(id) => hash(&[id]),
                            None => group_key()?,
                        };
                        Owner::One(ring.owner(hashed))
                    }
                    (Signal::Logs, RoutingKey::TraceId | RoutingKey::Metric) => {
                        let hashed = match trace_id(item, LOG_TRACE_ID)? {
                            Some(id) => hash(&[id]),
                            None => group_key()?,
                        };
                        Owner::One(ring.owner(hashed))
                    }
                    (Signal::Metrics, RoutingKey::Metric | RoutingKey::TraceId) => {
                        metric_owners(item, ring, &mut scratch)?
                    }
                    _ => Owner::One(ring.owner(group_key()?)),
                };
                match &owner {
                    Owner::One(backend) => {
                        let count =
                            if signal == Signal::Metrics { sluice_wire::otlp::data_points(item)? } else { 1 };
                        items[*backend as usize] += count;
                    }
                    Owner::Points(points) => points.iter().for_each(|backend| items[*backend as usize] += 1),
                }
                owners.push(owner);
            }
        }
    }
    let receiving: Vec<u32> = items
        .iter()
        .enumerate()
        .filter(|(_, count)| **count > 0)
        .map(|(backend, _)| backend as u32)
        .collect();
    match receiving.as_slice() {
        // A request without items goes whole to whoever owns the empty key.
        [] => Ok(Split::Whole(ring.owner(hash(&[])))),
        [only] => Ok(Split::Whole(*only)),
        several => several
            .iter()
            .map(|&backend| {
                let payload = part_for(signal, buf, &owners, backend)?;
                Ok(Part { backend, payload, items: items[backend as usize] })
            })
            .collect::<Result<Vec<_>, Error>>()
            .map(Split::Parts),
    }
}

/// The request holding `backend`'s items of `buf`.
fn part_for(signal: Signal, buf: &[u8], owners: &[Owner], backend: u32) -> Result<Vec<u8>, Error> {
    let mut failed = None;
    let rebuilt = rewrite::rebuild(
        signal,
        buf,
        |_, _| None,
        |n, item| match &owners[n as usize] {
            Owner::One(owner) if *owner == backend => ItemAction::Keep,
            Owner::One(_) => ItemAction::Drop,
            Owner::Points(points) if points.iter().all(|p| *p == backend) => ItemAction::Keep,
            Owner::Points(points) if points.iter().all(|p| *p != backend) => ItemAction::Drop,
            Owner::Points(points) => match metric_with_points(item, points, backend) {
                Ok(metric) => ItemAction::Replace(metric),
                Err(error) => {
                    failed = Some(error);
                    ItemAction::Drop
                }
            },
        },
    )?;
    failed.map_or(Ok(rebuilt), Err)
}

/// The trace ID in field `number` of an encoded span or log record; `None` when absent or
/// empty.
fn trace_id(item: &[u8], number: u32) -> Result<Option<&[u8]>, Error> {
    for field in Fields::new(item) {
        let field = field?;
        if field.number == number {
            let id = field.bytes()?;
            return Ok((!id.is_empty()).then_some(id));
        }
    }
    Ok(None)
}

/// The hash of a resource's `service.name` (empty when it has none).
fn service_hash(group: &ResourceGroup<'_>) -> Result<u64, Error> {
    let name = group.attributes()?.get("service.name")?.and_then(|value| value.as_str()).unwrap_or("");
    Ok(hash(&[name.as_bytes()]))
}

/// The hash of a resource's attributes, whatever order they were written in.
fn resource_hash(group: &ResourceGroup<'_>) -> Result<u64, Error> {
    let mut hasher = Hasher::new();
    hash_attributes(&mut hasher, group.resource()?, RESOURCE_ATTRIBUTES, &mut Vec::new())?;
    Ok(hasher.finish())
}

/// Feeds the encoded `KeyValue`s in field `number` of `message` to `hasher`, sorted, so two
/// senders listing the same attributes in different orders agree. `attributes` is scratch
/// space, so that hashing a point per item allocates nothing.
fn hash_attributes<'a>(
    hasher: &mut Hasher,
    message: &'a [u8],
    number: u32,
    attributes: &mut Vec<&'a [u8]>,
) -> Result<(), Error> {
    attributes.clear();
    for field in Fields::new(message) {
        let field = field?;
        if field.number == number {
            attributes.push(field.bytes()?);
        }
    }
    attributes.sort_unstable();
    for attribute in attributes.iter() {
        hasher.write(attribute);
    }
    Ok(())
}

/// Who owns each data point of an encoded `Metric`, routed by its name and the point's
/// attributes. A metric whose points all go one way is owned whole.
fn metric_owners<'a>(metric: &'a [u8], ring: &Ring, scratch: &mut Vec<&'a [u8]>) -> Result<Owner, Error> {
    let mut name: &[u8] = &[];
    for field in Fields::new(metric) {
        let field = field?;
        if field.number == METRIC_NAME {
            name = field.bytes()?;
        }
    }
    let mut points = Vec::new();
    for field in Fields::new(metric) {
        let field = field?;
        let Some(&(_, attributes)) = METRIC_DATA.iter().find(|(number, _)| *number == field.number) else {
            continue;
        };
        for point in Fields::new(field.bytes()?) {
            let point = point?;
            if point.number != METRIC_DATA_POINTS {
                continue;
            }
            let mut hasher = Hasher::new();
            hasher.write(name);
            hash_attributes(&mut hasher, point.bytes()?, attributes, scratch)?;
            points.push(ring.owner(hasher.finish()));
        }
    }
    match points.first() {
        Some(first) if points.iter().any(|p| p != first) => Ok(Owner::Points(points)),
        Some(first) => Ok(Owner::One(*first)),
        None => Ok(Owner::One(ring.owner(hash(&[name])))),
    }
}

/// An encoded `Metric` with only the data points `points` assigns to `backend` (in order),
/// every other field as it was.
fn metric_with_points(metric: &[u8], points: &[u32], backend: u32) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(metric.len());
    let mut next = points.iter();
    for field in Fields::new(metric) {
        let field = field?;
        if !METRIC_DATA.iter().any(|(number, _)| *number == field.number) {
            out.extend_from_slice(field.raw);
            continue;
        }
        let mut data = Vec::with_capacity(field.raw.len());
        for part in Fields::new(field.bytes()?) {
            let part = part?;
            let keep = part.number != METRIC_DATA_POINTS || next.next() == Some(&backend);
            if keep {
                data.extend_from_slice(part.raw);
            }
        }
        put_bytes_field(&mut out, field.number, &data);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    use super::*;

    fn ring(n: usize) -> Ring {
        let urls: Vec<String> = (0..n).map(|i| format!("http://10.0.0.{i}:4317")).collect();
        Ring::new(&urls).expect("backends")
    }

    fn attribute(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
            ..Default::default()
        }
    }

    fn resource(service: &str) -> Option<Resource> {
        Some(Resource { attributes: vec![attribute("service.name", service)], ..Default::default() })
    }

    /// Two resources of 50 spans each over 20 traces, interleaved.
    fn spans() -> ExportTraceServiceRequest {
        let group = |service: &str, offset: u8| ResourceSpans {
            resource: resource(service),
            scope_spans: vec![ScopeSpans {
                spans: (0..50u8)
                    .map(|i| Span {
                        trace_id: vec![(i + offset) % 20; 16],
                        span_id: vec![i + 1; 8],
                        name: format!("span-{i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        ExportTraceServiceRequest { resource_spans: vec![group("a", 0), group("b", 7)] }
    }

    fn parts(split: Split) -> Vec<Part> {
        match split {
            Split::Parts(parts) => parts,
            Split::Whole(_) => panic!("expected the request split"),
        }
    }

    #[test]
    fn spans_go_to_their_trace_owner_and_none_is_lost_or_doubled() {
        let ring = ring(3);
        let buf = spans().encode_to_vec();
        let parts = parts(split(Signal::Traces, &buf, RoutingKey::TraceId, &ring).expect("valid"));
        assert_eq!(parts.len(), 3, "20 traces reach all of 3 backends");
        let mut seen = BTreeMap::new();
        for part in &parts {
            let request =
                ExportTraceServiceRequest::decode(part.payload.as_slice()).expect("a valid request");
            let spans: Vec<&Span> =
                request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect();
            assert_eq!(spans.len() as u64, part.items);
            for span in spans {
                assert_eq!(ring.owner(hash(&[&span.trace_id])), part.backend, "span on its trace's owner");
                *seen.entry((span.trace_id.clone(), span.span_id.clone())).or_insert(0) += 1;
            }
            assert!(request.resource_spans.iter().all(|r| r.resource.is_some()), "resources kept");
        }
        assert_eq!(seen.len(), 100, "every span arrives");
        assert!(seen.values().all(|count| *count == 1), "and only once");
    }

    #[test]
    fn one_owner_means_the_request_is_sent_whole() {
        let ring = ring(3);
        let buf = spans().encode_to_vec();
        let by_service = split(Signal::Traces, &buf, RoutingKey::Service, &ring).expect("valid");
        let (a, b) = (ring.owner(hash(&[b"a"])), ring.owner(hash(&[b"b"])));
        if a == b {
            assert_eq!(by_service, Split::Whole(a));
        } else {
            let parts = parts(by_service);
            assert_eq!(parts.iter().map(|p| (p.backend, p.items)).collect::<Vec<_>>().len(), 2);
            assert!(parts.iter().all(|p| p.items == 50), "each service's 50 spans together");
        }
        let ring = self::ring(1);
        assert_eq!(split(Signal::Traces, &buf, RoutingKey::TraceId, &ring).expect("valid"), Split::Whole(0));
    }

    #[test]
    fn metric_streams_split_by_name_and_point_attributes() {
        let ring = ring(4);
        let point = |host: &str| NumberDataPoint {
            attributes: vec![attribute("host", host), attribute("gpu", "0")],
            value: Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(1)),
            ..Default::default()
        };
        let metric = Metric {
            name: "gpu_util".into(),
            unit: "1".into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: (0..40).map(|i| point(&format!("h{i}"))).collect(),
            })),
            ..Default::default()
        };
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource("dcgm"),
                scope_metrics: vec![ScopeMetrics { metrics: vec![metric], ..Default::default() }],
                ..Default::default()
            }],
        };
        let buf = request.encode_to_vec();
        let parts = parts(split(Signal::Metrics, &buf, RoutingKey::Metric, &ring).expect("valid"));
        let mut total = 0;
        for part in &parts {
            let request = ExportMetricsServiceRequest::decode(part.payload.as_slice()).expect("valid");
            let metric = &request.resource_metrics[0].scope_metrics[0].metrics[0];
            assert_eq!(
                (metric.name.as_str(), metric.unit.as_str()),
                ("gpu_util", "1"),
                "the metric's fields kept"
            );
            let Some(metric::Data::Gauge(gauge)) = &metric.data else { panic!("a gauge") };
            assert_eq!(gauge.data_points.len() as u64, part.items);
            for point in &gauge.data_points {
                let encoded = point.encode_to_vec();
                // The owner depends on the name and the attributes, not their order.
                let mut reversed = point.clone();
                reversed.attributes.reverse();
                let mut hasher = Hasher::new();
                hasher.write(b"gpu_util");
                hash_attributes(&mut hasher, &reversed.encode_to_vec(), 7, &mut Vec::new()).expect("valid");
                assert_eq!(ring.owner(hasher.finish()), part.backend);
                assert_eq!(sluice_wire::otlp::Attributes::new(&encoded, 7).count(), 2);
            }
            total += part.items;
        }
        assert_eq!(total, 40, "every data point arrives once");
    }

    #[test]
    fn a_malformed_request_is_an_error() {
        let ring = ring(2);
        assert!(split(Signal::Traces, &[0x0a, 0x05, 0x01], RoutingKey::TraceId, &ring).is_err());
    }
}
