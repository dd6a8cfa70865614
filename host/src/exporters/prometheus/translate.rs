//! OTLP metrics as the store's updates, read from the encoded request: no owned decode.
//!
//! Decoding a request into prost's messages allocated every name, attribute and data point only
//! to drop them once the series were found; that was most of what a data point cost before the
//! store looked at it. Here the request's fields are walked in place and each point's labels
//! are written straight into the reused [`LabelsBuilder`].
//!
//! Most points don't need even that: the store remembers, for each series, the attribute bytes
//! and resource labels that named it last, and which series came next. When a point's
//! attribute fields are byte for byte the memo of the series after the last point's, that is its
//! series, and its label set is not built at all. A point that is not is looked up by its label
//! set, as before.
//!
//! A request is read whole before the store changes: one that leans on protobuf's merge rules
//! (a singular message field or a oneof sent twice) is found part-way, and applying half of it
//! and then all of it would count delta points twice. [`Store::update`](super::store::Store)
//! hands such a request to the owned decoder and reads its canonical encoding instead.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::AnyValue as OwnedAnyValue;
use prost::Message as _;
use sluice_wire::Fields;
use sluice_wire::otlp::AnyValue;

use super::labels::{LabelsBuilder, write_display};
use super::names::{metric_name, sanitize_label, write_label};
use super::store::{Family, HistogramValue, Kind, Options, SummaryValue, Value};
use crate::batch::fields::{NotCanonical, Run, Scalar, bytes, fixed64, once, scalars, sint32, varint};

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
    /// The label set every point's set starts from (its resource's, encoded as a `LabelSet`).
    pub base: Arc<[u8]>,
}

/// What a point's series is, as [`Updates::read`] found it.
#[derive(Debug)]
pub(super) enum Target {
    /// The family's series at this position; `remember`: its memo is not this point's.
    Held { at: u32, remember: bool },
    /// A series not held before this request: its encoded label set, a range of
    /// [`Updates::labels`], and that set's hash where its family was looked in.
    New { labels: Range<usize>, hash: Option<u32> },
}

/// One point: its series, its attributes and its value.
#[derive(Debug)]
pub(super) struct PointUpdate {
    pub target: Target,
    /// The stretch of the point's attribute fields as sent, a range of the request: under the
    /// family's base they name the series. None for `target_info`, whose set is not built from
    /// its own.
    pub attributes: Option<Range<usize>>,
    pub value: Value,
}

/// The points of one request, in buffers reused from request to request.
#[derive(Debug, Default)]
pub(super) struct Updates {
    pub points: Vec<PointUpdate>,
    /// The encoded label sets of new series, one after another.
    pub labels: Vec<u8>,
    builder: LabelsBuilder,
}

/// What reading a request looks at besides the message in hand.
struct Context<'c> {
    /// The whole request, which points' attribute ranges are of.
    request: &'c [u8],
    options: &'c Options,
    /// The families the store holds.
    known: &'c BTreeMap<Arc<str>, Family>,
}

/// A point's attribute fields (each a `KeyValue`), gathered as its fields are walked.
struct PointAttributes<'a> {
    point: &'a [u8],
    number: u32,
    run: Run,
}

impl<'a> PointAttributes<'a> {
    /// The attributes of `point`, field `number`, none found yet.
    fn new(point: &'a [u8], number: u32) -> Self {
        Self { point, number, run: Run::default() }
    }

    /// Takes note of an attribute field.
    fn add(&mut self, field: &sluice_wire::Field<'a>) {
        self.run.add(field);
    }

    /// From the first attribute field to the end of the last (empty when there are none).
    /// Equal stretches hold equal attributes, whatever else lies between them: this is what a
    /// memo compares.
    fn stretch(&self) -> &'a [u8] {
        self.run.of(self.point)
    }

    /// Each attribute's key and encoded value.
    fn each(&self) -> impl Iterator<Item = Result<(&'a str, &'a [u8]), NotCanonical>> + use<'a> {
        attributes(self.stretch(), self.number)
    }
}

/// Where `part`, a slice of `whole`, lies in it.
fn range_in(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    debug_assert!(start + part.len() <= whole.len(), "a slice of the request");
    start..start + part.len()
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
    ///
    /// The points' series are looked for in `known`, which this does not change.
    pub(super) fn read<'a>(
        &mut self,
        request: &'a [u8],
        options: &Options,
        known: &BTreeMap<Arc<str>, Family>,
    ) -> Result<Vec<FamilyUpdate<'a>>, NotCanonical> {
        self.points.clear();
        self.labels.clear();
        let mut families = Vec::new();
        let context = Context { request, options, known };
        for field in Fields::new(request) {
            let field = field?;
            if field.number == 1 {
                self.resource_metrics(bytes(&field)?, &context, &mut families)?;
            }
        }
        Ok(families)
    }

    /// A `ResourceMetrics`: its resource's `target_info` and every metric of its scopes.
    fn resource_metrics<'a>(
        &mut self,
        buf: &'a [u8],
        context: &Context<'_>,
        families: &mut Vec<FamilyUpdate<'a>>,
    ) -> Result<(), NotCanonical> {
        let options = context.options;
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
        let name = Cow::Borrowed("target_info");
        let family = context.known.get(&*name).filter(|family| family.takes(Kind::Gauge));
        let target = self.target(family, None);
        self.points.push(PointUpdate { target, attributes: None, value: Value::Number(1.0) });
        // Every point's set starts from these; a constant label wins over a derived one.
        let constant = options.const_labels.iter().map(|(name, value)| (name.as_str(), value.as_str()));
        let derived = [("job", job.as_str()), ("instance", instance.as_str())].into_iter();
        let copied_pairs = copied.iter().map(|(name, value)| (name.as_str(), value.as_str()));
        self.builder.set_base(constant.chain(derived).chain(copied_pairs));
        self.builder.clear();
        let mut base = Vec::new();
        self.builder.encode_into(&mut base);
        let base: Arc<[u8]> = base.into();
        let info = FamilyUpdate {
            name,
            kind: Kind::Gauge,
            help: "Target metadata",
            delta: false,
            points: start..start + 1,
            base: base.clone(),
        };
        families.push(info);
        for scope in Fields::new(buf) {
            let scope = scope?;
            if scope.number != 2 {
                continue;
            }
            for metric in Fields::new(bytes(&scope)?) {
                let metric = metric?;
                if metric.number == 2 {
                    self.metric(bytes(&metric)?, context, &base, families)?;
                }
            }
        }
        Ok(())
    }

    /// A `Metric`: its family and its points.
    fn metric<'a>(
        &mut self,
        buf: &'a [u8],
        context: &Context<'_>,
        base: &Arc<[u8]>,
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
        // `aggregation_temporality` (2) and `is_monotonic` (3), where the kind has them: the
        // family, and so where its points' series are, depends on them.
        let (mut temporality, mut monotonic) = (0, false);
        for field in Fields::new(data) {
            let field = field?;
            match field.number {
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
        let family = context.known.get(name.as_str()).filter(|family| family.takes(kind));
        // Where the family's memos hold this resource's base: none names a point's series
        // under another.
        let memo_base = family.and_then(|family| family.memo_base(base));
        let start = self.points.len();
        // The series of the point before, where it is held.
        let mut last = None;
        for field in Fields::new(data) {
            let field = field?;
            if field.number != 1 {
                continue;
            }
            let point = bytes(&field)?;
            let (value, attributes) = match kind_field {
                5 | 7 => number_point(point)?,
                9 => histogram_point(point)?,
                10 => exponential_point(point)?,
                _ => summary_point(point)?,
            };
            let stretch = attributes.stretch();
            // A client sends its series in the same order request after request: the series
            // after the last point's is the likely one, and the memo says whether it is.
            let follows = family
                .zip(last)
                .zip(memo_base)
                .and_then(|((family, last), base)| family.follows(last, base, stretch));
            let target = match follows {
                Some(at) => Target::Held { at, remember: false },
                None => {
                    self.builder.clear();
                    for attribute in attributes.each() {
                        let (key, value) = attribute?;
                        self.attribute(key, value)?;
                    }
                    self.target(family, Some((base, stretch)))
                }
            };
            last = match target {
                Target::Held { at, .. } => Some(at),
                Target::New { .. } => None,
            };
            let attributes = Some(range_in(context.request, stretch));
            self.points.push(PointUpdate { target, attributes, value });
        }
        let points = start..self.points.len();
        families.push(FamilyUpdate { name: Cow::Owned(name), kind, help, delta, points, base: base.clone() });
        Ok(())
    }

    /// The series of the label set built: where `family` holds it, or its encoding for a new
    /// one. `memo`: the base and attributes the set was built from, where they name it.
    fn target(&mut self, family: Option<&Family>, memo: Option<(&Arc<[u8]>, &[u8])>) -> Target {
        let start = self.labels.len();
        self.builder.encode_into(&mut self.labels);
        let found = family.map(|family| family.position(&self.labels[start..], memo));
        match found {
            Some(Ok((at, remember))) => {
                self.labels.truncate(start);
                Target::Held { at, remember }
            }
            Some(Err(hash)) => Target::New { labels: start..self.labels.len(), hash: Some(hash) },
            None => Target::New { labels: start..self.labels.len(), hash: None },
        }
    }

    /// Adds one attribute to the point's label set.
    fn attribute(&mut self, key: &str, value: &[u8]) -> Result<(), NotCanonical> {
        let value = LabelValue::read(value)?;
        self.builder.attribute(|out| write_label(out, key), |out| value.write(out));
        Ok(())
    }
}

/// A `NumberDataPoint`: attributes 7, `as_double` 4 or `as_int` 6 (none reads as 0).
fn number_point(buf: &[u8]) -> Result<(Value, PointAttributes<'_>), NotCanonical> {
    let mut attributes = PointAttributes::new(buf, 7);
    let mut value = 0.0;
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            7 => attributes.add(&field),
            4 => value = f64::from_bits(fixed64(&field)?),
            6 => value = fixed64(&field)? as i64 as f64,
            _ => {}
        }
    }
    Ok((Value::Number(value), attributes))
}

/// A `HistogramDataPoint`: attributes 9, count 4, sum 5, bucket counts 6, bounds 7. Missing
/// counts read as 0, one per bound and one for +Inf.
fn histogram_point(buf: &[u8]) -> Result<(Value, PointAttributes<'_>), NotCanonical> {
    let mut attributes = PointAttributes::new(buf, 9);
    let mut histogram = HistogramValue { bounds: Vec::new(), counts: Vec::new(), sum: 0.0, count: 0 };
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            9 => attributes.add(&field),
            4 => histogram.count = fixed64(&field)?,
            5 => histogram.sum = f64::from_bits(fixed64(&field)?),
            6 => scalars(&field, Scalar::Fixed64, |count| histogram.counts.push(count))?,
            7 => scalars(&field, Scalar::Fixed64, |bits| histogram.bounds.push(f64::from_bits(bits)))?,
            _ => {}
        }
    }
    histogram.counts.resize(histogram.bounds.len() + 1, 0);
    Ok((Value::Histogram(Box::new(histogram)), attributes))
}

/// An `ExponentialHistogramDataPoint` (attributes 1, count 4, sum 5, scale 6, zero count 7,
/// positive 8, negative 9, zero threshold 14) as classic buckets: each populated bucket's
/// upper bound is base^(index+1), base = 2^(2^-scale); negative buckets and the zero bucket
/// count below the first bound.
fn exponential_point(buf: &[u8]) -> Result<(Value, PointAttributes<'_>), NotCanonical> {
    let mut attributes = PointAttributes::new(buf, 1);
    let (mut count, mut sum, mut scale, mut zero_count, mut zero_threshold) = (0, 0.0, 0, 0u64, 0.0);
    let (mut positive, mut negative) = (None, None);
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            1 => attributes.add(&field),
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
    Ok((Value::Histogram(Box::new(HistogramValue { bounds, counts, sum, count })), attributes))
}

/// A `SummaryDataPoint`: attributes 7, count 4, sum 5, quantile values 6.
fn summary_point(buf: &[u8]) -> Result<(Value, PointAttributes<'_>), NotCanonical> {
    let mut attributes = PointAttributes::new(buf, 7);
    let mut summary = SummaryValue { quantiles: Vec::new(), sum: 0.0, count: 0 };
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            7 => attributes.add(&field),
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
    Ok((Value::Summary(Box::new(summary)), attributes))
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
