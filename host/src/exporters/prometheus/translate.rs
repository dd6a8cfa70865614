//! OTLP metrics as the store's updates, read from the encoded request: no owned decode.
//!
//! Decoding a request into prost's messages allocated every name, attribute and data point only
//! to drop them once the series were found; that was most of what a data point cost before the
//! store looked at it. Here the request's fields are walked in place and each point's labels
//! are written straight into the reused [`LabelsBuilder`].
//!
//! A request is read whole before the store changes: one that leans on protobuf's merge rules
//! (a singular message field or a oneof sent twice) is found part-way, and applying half of it
//! and then all of it would count delta points twice. [`Store::update`](super::store::Store)
//! hands such a request to the owned decoder and reads its canonical encoding instead.

use std::borrow::Cow;
use std::ops::Range;

use opentelemetry_proto::tonic::common::v1::AnyValue as OwnedAnyValue;
use prost::Message as _;
use sluice_wire::Fields;
use sluice_wire::otlp::AnyValue;

use super::labels::{LabelsBuilder, write_display};
use super::names::{metric_name, sanitize_label, write_label};
use super::store::{HistogramValue, Kind, Options, SummaryValue, Value};
use crate::batch::fields::{NotCanonical, Scalar, bytes, fixed64, once, scalars, sint32, varint};

/// One metric's family, and where its points lie in [`Updates::points`].
#[derive(Debug)]
pub(super) struct FamilyUpdate<'a> {
    /// The Prometheus name.
    pub name: Cow<'a, str>,
    pub kind: Kind,
    /// The metric's description.
    pub help: &'a str,
    /// Whether the points are deltas, to be added to what their series hold.
    pub delta: bool,
    pub points: Range<usize>,
}

/// One point: its series' encoded label set (a range of [`Updates::labels`]) and its value.
#[derive(Debug)]
pub(super) struct PointUpdate {
    pub labels: Range<usize>,
    pub value: Value,
}

/// The points of one request, in buffers reused from request to request.
#[derive(Debug, Default)]
pub(super) struct Updates {
    pub points: Vec<PointUpdate>,
    /// Every point's encoded label set, one after another.
    pub labels: Vec<u8>,
    builder: LabelsBuilder,
}

/// A label value read from an attribute's `AnyValue`.
enum LabelValue<'a> {
    Text(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    /// An array, key-value list or bytes, written as the owned value's debug form.
    Other(String),
    Empty,
}

impl LabelValue<'_> {
    /// Reads an encoded `AnyValue` (empty when the attribute has none).
    fn read(value: &[u8]) -> Result<LabelValue<'_>, NotCanonical> {
        Ok(match AnyValue::parse(value)? {
            AnyValue::String(text) => LabelValue::Text(utf8(text)?),
            AnyValue::Bool(b) => LabelValue::Bool(b),
            AnyValue::Int(i) => LabelValue::Int(i),
            AnyValue::Double(d) => LabelValue::Double(d),
            AnyValue::Empty => LabelValue::Empty,
            // Rare as labels, and nested: the owned decoder reads them as it always did.
            AnyValue::Array(_) | AnyValue::KvList(_) | AnyValue::Bytes(_) => {
                let owned = OwnedAnyValue::decode(value).map_err(|_| NotCanonical)?;
                owned.value.map_or(LabelValue::Empty, |v| LabelValue::Other(format!("{v:?}")))
            }
        })
    }

    fn write(&self, out: &mut String) {
        match self {
            LabelValue::Text(text) => out.push_str(text),
            LabelValue::Bool(b) => write_display(out, b),
            LabelValue::Int(i) => write_display(out, i),
            LabelValue::Double(d) => write_display(out, d),
            LabelValue::Other(text) => out.push_str(text),
            LabelValue::Empty => {}
        }
    }

    fn to_label(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }
}

fn utf8(text: &[u8]) -> Result<&str, NotCanonical> {
    std::str::from_utf8(text).map_err(|_| NotCanonical)
}

/// The `KeyValue`s in field `number` of `message`: each key and its encoded `AnyValue`.
fn attributes(message: &[u8], number: u32) -> impl Iterator<Item = Result<(&str, &[u8]), NotCanonical>> {
    Fields::new(message).filter_map(move |field| match field {
        Ok(field) if field.number == number => Some(bytes(&field).and_then(key_value)),
        Ok(_) => None,
        Err(error) => Some(Err(error.into())),
    })
}

fn key_value(buf: &[u8]) -> Result<(&str, &[u8]), NotCanonical> {
    let (mut key, mut value) = ("", None);
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            1 => key = utf8(bytes(&field)?)?,
            2 => once(&mut value, &field)?,
            _ => {}
        }
    }
    Ok((key, value.unwrap_or_default()))
}

/// The first value of attribute `key`, as a label value.
fn find(resource: &[u8], key: &str) -> Result<Option<String>, NotCanonical> {
    for attribute in attributes(resource, 1) {
        let (name, value) = attribute?;
        if name == key {
            return Ok(Some(LabelValue::read(value)?.to_label()));
        }
    }
    Ok(None)
}

/// A message field's bytes, if it occurs once (none when it doesn't occur).
fn single(message: &[u8], number: u32) -> Result<&[u8], NotCanonical> {
    let mut found = None;
    for field in Fields::new(message) {
        let field = field?;
        if field.number == number {
            once(&mut found, &field)?;
        }
    }
    Ok(found.unwrap_or_default())
}

impl Updates {
    /// Reads an encoded `ExportMetricsServiceRequest` into [`points`](Self::points) and
    /// [`labels`](Self::labels), returning its families in order; `NotCanonical` leaves nothing
    /// that should be applied.
    pub(super) fn read<'a>(
        &mut self,
        request: &'a [u8],
        options: &Options,
    ) -> Result<Vec<FamilyUpdate<'a>>, NotCanonical> {
        self.points.clear();
        self.labels.clear();
        let mut families = Vec::new();
        for field in Fields::new(request) {
            let field = field?;
            if field.number == 1 {
                self.resource_metrics(bytes(&field)?, options, &mut families)?;
            }
        }
        Ok(families)
    }

    /// A `ResourceMetrics`: its resource's `target_info` and every metric of its scopes.
    fn resource_metrics<'a>(
        &mut self,
        buf: &'a [u8],
        options: &Options,
        families: &mut Vec<FamilyUpdate<'a>>,
    ) -> Result<(), NotCanonical> {
        let resource = single(buf, 1)?;
        // `job` and `instance` as the compatibility spec derives them.
        let name = find(resource, "service.name")?.unwrap_or_default();
        let job = match find(resource, "service.namespace")? {
            Some(namespace) if !namespace.is_empty() => format!("{namespace}/{name}"),
            _ => name,
        };
        let instance = find(resource, "service.instance.id")?.unwrap_or_default();
        let mut copied = Vec::new();
        for key in &options.resource_to_labels {
            if let Some(value) = find(resource, key)? {
                copied.push((sanitize_label(key), value));
            }
        }
        // target_info carries the resource attributes that are not job and instance.
        let start = self.points.len();
        self.builder.set_base([("instance", instance.as_str()), ("job", job.as_str())]);
        self.builder.clear();
        for attribute in attributes(resource, 1) {
            let (key, value) = attribute?;
            if !matches!(key, "service.name" | "service.namespace" | "service.instance.id") {
                self.attribute(key, value)?;
            }
        }
        self.end(Value::Number(1.0));
        let name = Cow::Borrowed("target_info");
        let info = FamilyUpdate {
            name,
            kind: Kind::Gauge,
            help: "Target metadata",
            delta: false,
            points: start..start + 1,
        };
        families.push(info);
        // Every point's set starts from these; a constant label wins over a derived one.
        let constant = options.const_labels.iter().map(|(name, value)| (name.as_str(), value.as_str()));
        let derived = [("job", job.as_str()), ("instance", instance.as_str())].into_iter();
        let copied_pairs = copied.iter().map(|(name, value)| (name.as_str(), value.as_str()));
        self.builder.set_base(constant.chain(derived).chain(copied_pairs));
        for scope in Fields::new(buf) {
            let scope = scope?;
            if scope.number != 2 {
                continue;
            }
            for metric in Fields::new(bytes(&scope)?) {
                let metric = metric?;
                if metric.number == 2 {
                    self.metric(bytes(&metric)?, families)?;
                }
            }
        }
        Ok(())
    }

    /// A `Metric`: its family and its points.
    fn metric<'a>(
        &mut self,
        buf: &'a [u8],
        families: &mut Vec<FamilyUpdate<'a>>,
    ) -> Result<(), NotCanonical> {
        let (mut name, mut help, mut unit) = ("", "", "");
        let mut data = None;
        for field in Fields::new(buf) {
            let field = field?;
            match field.number {
                1 => name = utf8(bytes(&field)?)?,
                2 => help = utf8(bytes(&field)?)?,
                3 => unit = utf8(bytes(&field)?)?,
                // The data is a oneof of messages: a second one is merged or replaces the first.
                5 | 7 | 9 | 10 | 11 if data.is_none() => data = Some((field.number, bytes(&field)?)),
                5 | 7 | 9 | 10 | 11 => return Err(NotCanonical),
                _ => {}
            }
        }
        let Some((kind_field, data)) = data else { return Ok(()) };
        let start = self.points.len();
        // `aggregation_temporality` (2) and `is_monotonic` (3), where the kind has them.
        let (mut temporality, mut monotonic) = (0, false);
        for field in Fields::new(data) {
            let field = field?;
            match field.number {
                1 => {
                    let point = bytes(&field)?;
                    match kind_field {
                        5 | 7 => self.number_point(point)?,
                        9 => self.histogram_point(point)?,
                        10 => self.exponential_point(point)?,
                        _ => self.summary_point(point)?,
                    }
                }
                2 if kind_field != 5 && kind_field != 11 => temporality = varint(&field)? as i32,
                3 if kind_field == 7 => monotonic = varint(&field)? != 0,
                _ => {}
            }
        }
        const DELTA: i32 = 1;
        let (kind, name, delta) = match kind_field {
            5 => (Kind::Gauge, metric_name(name, unit, true, false), false),
            7 => (
                if monotonic { Kind::Counter } else { Kind::Gauge },
                metric_name(name, unit, !monotonic, monotonic),
                temporality == DELTA,
            ),
            9 | 10 => (Kind::Histogram, metric_name(name, unit, false, false), temporality == DELTA),
            _ => (Kind::Summary, metric_name(name, unit, false, false), false),
        };
        let points = start..self.points.len();
        families.push(FamilyUpdate { name: Cow::Owned(name), kind, help, delta, points });
        Ok(())
    }

    /// Adds one attribute to the point's label set.
    fn attribute(&mut self, key: &str, value: &[u8]) -> Result<(), NotCanonical> {
        let value = LabelValue::read(value)?;
        self.builder.attribute(|out| write_label(out, key), |out| value.write(out));
        Ok(())
    }

    /// Ends the point begun last: its label set is encoded after the others'.
    fn end(&mut self, value: Value) {
        let start = self.labels.len();
        self.builder.encode_into(&mut self.labels);
        self.points.push(PointUpdate { labels: start..self.labels.len(), value });
    }

    /// A `NumberDataPoint`: attributes 7, `as_double` 4 or `as_int` 6 (none reads as 0).
    fn number_point(&mut self, buf: &[u8]) -> Result<(), NotCanonical> {
        self.builder.clear();
        let mut value = 0.0;
        for field in Fields::new(buf) {
            let field = field?;
            match field.number {
                7 => self.attribute_field(&field)?,
                4 => value = f64::from_bits(fixed64(&field)?),
                6 => value = fixed64(&field)? as i64 as f64,
                _ => {}
            }
        }
        self.end(Value::Number(value));
        Ok(())
    }

    /// A `HistogramDataPoint`: attributes 9, count 4, sum 5, bucket counts 6, bounds 7. Missing
    /// counts read as 0, one per bound and one for +Inf.
    fn histogram_point(&mut self, buf: &[u8]) -> Result<(), NotCanonical> {
        self.builder.clear();
        let mut histogram = HistogramValue { bounds: Vec::new(), counts: Vec::new(), sum: 0.0, count: 0 };
        for field in Fields::new(buf) {
            let field = field?;
            match field.number {
                9 => self.attribute_field(&field)?,
                4 => histogram.count = fixed64(&field)?,
                5 => histogram.sum = f64::from_bits(fixed64(&field)?),
                6 => scalars(&field, Scalar::Fixed64, |count| histogram.counts.push(count))?,
                7 => scalars(&field, Scalar::Fixed64, |bits| histogram.bounds.push(f64::from_bits(bits)))?,
                _ => {}
            }
        }
        histogram.counts.resize(histogram.bounds.len() + 1, 0);
        self.end(Value::Histogram(Box::new(histogram)));
        Ok(())
    }

    /// An `ExponentialHistogramDataPoint` (attributes 1, count 4, sum 5, scale 6, zero count 7,
    /// positive 8, negative 9, zero threshold 14) as classic buckets: each populated bucket's
    /// upper bound is base^(index+1), base = 2^(2^-scale); negative buckets and the zero bucket
    /// count below the first bound.
    fn exponential_point(&mut self, buf: &[u8]) -> Result<(), NotCanonical> {
        self.builder.clear();
        let (mut count, mut sum, mut scale, mut zero_count, mut zero_threshold) = (0, 0.0, 0, 0u64, 0.0);
        let (mut positive, mut negative) = (None, None);
        for field in Fields::new(buf) {
            let field = field?;
            match field.number {
                1 => self.attribute_field(&field)?,
                4 => count = fixed64(&field)?,
                5 => sum = f64::from_bits(fixed64(&field)?),
                6 => scale = sint32(&field)?,
                7 => zero_count = fixed64(&field)?,
                8 => once(&mut positive, &field)?,
                9 => once(&mut negative, &field)?,
                14 => zero_threshold = f64::from_bits(fixed64(&field)?),
                _ => {}
            }
        }
        let base = 2f64.powf(2f64.powi(scale.saturating_neg()));
        let (mut bounds, mut counts) = (Vec::new(), Vec::new());
        // Counts come off the wire as any u64: saturate rather than wrap.
        let mut negatives = 0u64;
        buckets(negative.unwrap_or_default(), |_, count| negatives = negatives.saturating_add(count))?;
        let below = zero_count.saturating_add(negatives);
        buckets(positive.unwrap_or_default(), |index, count| {
            bounds.push(base.powi((index + 1) as i32));
            counts.push(count);
        })?;
        if let Some(first) = counts.first_mut() {
            *first = first.saturating_add(below);
        } else {
            bounds.push(zero_threshold.max(0.0));
            counts.push(below);
        }
        counts.push(0); // +Inf holds nothing beyond the last bucket
        self.end(Value::Histogram(Box::new(HistogramValue { bounds, counts, sum, count })));
        Ok(())
    }

    /// A `SummaryDataPoint`: attributes 7, count 4, sum 5, quantile values 6.
    fn summary_point(&mut self, buf: &[u8]) -> Result<(), NotCanonical> {
        self.builder.clear();
        let mut summary = SummaryValue { quantiles: Vec::new(), sum: 0.0, count: 0 };
        for field in Fields::new(buf) {
            let field = field?;
            match field.number {
                7 => self.attribute_field(&field)?,
                4 => summary.count = fixed64(&field)?,
                5 => summary.sum = f64::from_bits(fixed64(&field)?),
                6 => {
                    let (mut quantile, mut value) = (0.0, 0.0);
                    for part in Fields::new(bytes(&field)?) {
                        let part = part?;
                        match part.number {
                            1 => quantile = f64::from_bits(fixed64(&part)?),
                            2 => value = f64::from_bits(fixed64(&part)?),
                            _ => {}
                        }
                    }
                    summary.quantiles.push((quantile, value));
                }
                _ => {}
            }
        }
        self.end(Value::Summary(Box::new(summary)));
        Ok(())
    }

    fn attribute_field(&mut self, field: &sluice_wire::Field<'_>) -> Result<(), NotCanonical> {
        let (key, value) = key_value(bytes(field)?)?;
        self.attribute(key, value)
    }
}

/// Hands `each` every bucket of an exponential histogram's `Buckets` (offset 1, counts 2) with
/// its index.
fn buckets(buf: &[u8], mut each: impl FnMut(i64, u64)) -> Result<(), NotCanonical> {
    let mut offset = 0;
    for field in Fields::new(buf) {
        let field = field?;
        if field.number == 1 {
            offset = sint32(&field)?;
        }
    }
    let mut index = i64::from(offset);
    for field in Fields::new(buf) {
        let field = field?;
        if field.number == 2 {
            scalars(&field, Scalar::Varint, |count| {
                each(index, count);
                index += 1;
            })?;
        }
    }
    Ok(())
}
