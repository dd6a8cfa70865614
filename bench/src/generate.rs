//! Random OTLP requests of every signal and every field kind, from a seed: what the property
//! tests that hold Sluice's wire code to prost's feed both sides.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, exemplar, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

/// A small deterministic generator (the field is its seed and state), so a failing case is
/// reproduced from its seed.
pub struct Generator(pub u64);

impl Generator {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A count from 0 to `max`.
    pub fn count(&mut self, max: u64) -> usize {
        self.below(max + 1) as usize
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn string(&mut self) -> String {
        const PIECES: [&str; 8] = ["GET /", "service.name", "é", "日本", "🚀", "", "k8s.pod", "x"];
        (0..self.count(3)).map(|_| PIECES[self.below(8) as usize]).collect()
    }

    fn bytes(&mut self, lengths: &[usize]) -> Vec<u8> {
        let len = lengths[self.below(lengths.len() as u64) as usize];
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// A double that is now and then NaN, an infinity or negative zero.
    fn special_float(&mut self) -> f64 {
        [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 1e300, f64::from_bits(self.next_u64())]
            [self.below(6) as usize]
    }

    /// An attribute value, nested `depth` levels at most.
    fn value(&mut self, depth: u32) -> AnyValue {
        use any_value::Value;
        let kinds = if depth == 0 { 6 } else { 8 };
        let value = match self.below(kinds) {
            5 => Value::StringValueStrindex(self.next_u64() as i32),
            0 => Value::StringValue(self.string()),
            1 => Value::BoolValue(self.chance(50)),
            2 => Value::IntValue(self.next_u64() as i64),
            3 => Value::DoubleValue(f64::from_bits(self.next_u64())),
            4 => Value::BytesValue(self.bytes(&[0, 3, 16])),
            6 => Value::ArrayValue(ArrayValue {
                values: (0..self.count(2)).map(|_| self.value(depth - 1)).collect(),
            }),
            _ => Value::KvlistValue(KeyValueList {
                values: (0..self.count(2)).map(|_| self.attribute(depth - 1)).collect(),
            }),
        };
        AnyValue { value: Some(value).filter(|_| !self.chance(5)) }
    }

    fn attribute(&mut self, depth: u32) -> KeyValue {
        KeyValue {
            key: self.string(),
            value: Some(self.value(depth)).filter(|_| !self.chance(5)),
            key_strindex: if self.chance(5) { self.next_u64() as i32 } else { 0 },
        }
    }

    fn attributes(&mut self) -> Vec<KeyValue> {
        (0..self.count(3)).map(|_| self.attribute(2)).collect()
    }

    fn resource(&mut self) -> Option<Resource> {
        let entity = |rng: &mut Self| EntityRef {
            schema_url: rng.string(),
            r#type: rng.string(),
            id_keys: vec![rng.string()],
            description_keys: Vec::new(),
        };
        self.chance(90).then(|| Resource {
            attributes: self.attributes(),
            dropped_attributes_count: self.below(3) as u32,
            entity_refs: (0..self.count(1)).map(|_| entity(self)).collect(),
        })
    }

    fn scope(&mut self) -> Option<InstrumentationScope> {
        self.chance(70).then(|| InstrumentationScope {
            name: self.string(),
            version: self.string(),
            attributes: self.attributes(),
            dropped_attributes_count: 0,
        })
    }

    fn span(&mut self) -> Span {
        Span {
            trace_id: self.bytes(&[16, 16, 16, 0, 15]),
            span_id: self.bytes(&[8, 8, 8, 0, 9]),
            trace_state: self.string(),
            parent_span_id: self.bytes(&[0, 8]),
            flags: self.next_u64() as u32,
            name: self.string(),
            kind: self.below(6) as i32,
            start_time_unix_nano: self.next_u64(),
            end_time_unix_nano: self.next_u64(),
            attributes: self.attributes(),
            dropped_attributes_count: 0,
            // Most spans have no events, links or status: the shape the check's fast path takes.
            events: (0..if self.chance(30) { self.count(2) } else { 0 })
                .map(|_| Event {
                    time_unix_nano: self.next_u64(),
                    name: self.string(),
                    attributes: self.attributes(),
                    dropped_attributes_count: 0,
                })
                .collect(),
            dropped_events_count: 0,
            links: (0..if self.chance(20) { 1 } else { 0 })
                .map(|_| Link {
                    trace_id: self.bytes(&[16]),
                    span_id: self.bytes(&[8]),
                    trace_state: self.string(),
                    attributes: self.attributes(),
                    dropped_attributes_count: 0,
                    flags: 1,
                })
                .collect(),
            dropped_links_count: 0,
            status: self.chance(20).then(|| Status { message: self.string(), code: self.below(3) as i32 }),
        }
    }

    /// An encoded `ExportTraceServiceRequest`.
    pub fn traces(&mut self) -> Vec<u8> {
        let resource_spans = (0..self.count(2))
            .map(|_| ResourceSpans {
                resource: self.resource(),
                scope_spans: (0..self.count(2))
                    .map(|_| ScopeSpans {
                        scope: self.scope(),
                        spans: (0..self.count(3)).map(|_| self.span()).collect(),
                        schema_url: self.string(),
                    })
                    .collect(),
                schema_url: self.string(),
            })
            .collect();
        ExportTraceServiceRequest { resource_spans }.encode_to_vec()
    }

    fn log(&mut self) -> LogRecord {
        LogRecord {
            time_unix_nano: self.next_u64(),
            observed_time_unix_nano: self.next_u64(),
            severity_number: self.below(25) as i32,
            severity_text: self.string(),
            body: self.chance(80).then(|| self.value(3)),
            attributes: self.attributes(),
            dropped_attributes_count: 0,
            flags: 0,
            trace_id: self.bytes(&[0, 16, 15]),
            span_id: self.bytes(&[0, 8, 7]),
            event_name: self.string(),
        }
    }

    /// An encoded `ExportLogsServiceRequest`.
    pub fn logs(&mut self) -> Vec<u8> {
        let resource_logs = (0..self.count(2))
            .map(|_| ResourceLogs {
                resource: self.resource(),
                scope_logs: (0..self.count(2))
                    .map(|_| ScopeLogs {
                        scope: self.scope(),
                        log_records: (0..self.count(3)).map(|_| self.log()).collect(),
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: self.string(),
            })
            .collect();
        ExportLogsServiceRequest { resource_logs }.encode_to_vec()
    }

    fn exemplars(&mut self) -> Vec<Exemplar> {
        (0..self.count(1))
            .map(|_| Exemplar {
                filtered_attributes: self.attributes(),
                time_unix_nano: self.next_u64(),
                span_id: self.bytes(&[8]),
                trace_id: self.bytes(&[16]),
                value: match self.below(3) {
                    0 => Some(exemplar::Value::AsInt(self.next_u64() as i64)),
                    1 => Some(exemplar::Value::AsDouble(self.special_float())),
                    _ => None,
                },
            })
            .collect()
    }

    fn metric(&mut self) -> Metric {
        let number = |rng: &mut Self| NumberDataPoint {
            attributes: rng.attributes(),
            start_time_unix_nano: rng.next_u64(),
            time_unix_nano: rng.next_u64(),
            exemplars: rng.exemplars(),
            flags: 0,
            value: Some(if rng.chance(50) {
                number_data_point::Value::AsDouble(f64::from_bits(rng.next_u64()))
            } else {
                number_data_point::Value::AsInt(rng.next_u64() as i64)
            }),
        };
        let data = match self.below(5) {
            0 => {
                metric::Data::Gauge(Gauge { data_points: (0..self.count(3)).map(|_| number(self)).collect() })
            }
            1 => metric::Data::Sum(Sum {
                data_points: (0..self.count(3)).map(|_| number(self)).collect(),
                aggregation_temporality: self.below(3) as i32,
                is_monotonic: self.chance(50),
            }),
            2 => metric::Data::Histogram(Histogram {
                data_points: (0..self.count(2))
                    .map(|_| HistogramDataPoint {
                        attributes: self.attributes(),
                        count: self.next_u64(),
                        sum: self.chance(50).then(|| f64::from_bits(self.next_u64())),
                        bucket_counts: (0..self.count(4)).map(|_| self.next_u64()).collect(),
                        explicit_bounds: (0..self.count(3)).map(|_| self.special_float()).collect(),
                        exemplars: self.exemplars(),
                        min: Some(1.0),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: 1,
            }),
            3 => metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: (0..self.count(2))
                    .map(|_| ExponentialHistogramDataPoint {
                        attributes: self.attributes(),
                        count: self.next_u64(),
                        scale: self.below(20) as i32 - 10,
                        positive: Some(Buckets {
                            offset: -(self.below(5) as i32),
                            bucket_counts: (0..self.count(4))
                                .map(|_| self.next_u64() >> self.below(64))
                                .collect(),
                        }),
                        negative: self.chance(50).then(Buckets::default),
                        zero_threshold: 0.5,
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: 2,
            }),
            _ => metric::Data::Summary(Summary {
                data_points: (0..self.count(2))
                    .map(|_| SummaryDataPoint {
                        attributes: self.attributes(),
                        count: self.next_u64(),
                        sum: 1.5,
                        quantile_values: vec![
                            ValueAtQuantile { quantile: 0.5, value: 2.0 },
                            ValueAtQuantile { quantile: self.special_float(), value: self.special_float() },
                        ],
                        ..Default::default()
                    })
                    .collect(),
            }),
        };
        Metric {
            name: self.string(),
            description: self.string(),
            unit: self.string(),
            metadata: self.attributes(),
            data: Some(data).filter(|_| !self.chance(5)),
        }
    }

    /// An encoded `ExportMetricsServiceRequest`.
    pub fn metrics(&mut self) -> Vec<u8> {
        let resource_metrics = (0..self.count(2))
            .map(|_| ResourceMetrics {
                resource: self.resource(),
                scope_metrics: (0..self.count(2))
                    .map(|_| ScopeMetrics {
                        scope: self.scope(),
                        metrics: (0..self.count(3)).map(|_| self.metric()).collect(),
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: self.string(),
            })
            .collect();
        ExportMetricsServiceRequest { resource_metrics }.encode_to_vec()
    }
}
