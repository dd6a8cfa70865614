//! The series a Prometheus scrape sees: OTLP metrics translated per the OpenTelemetry
//! "Prometheus and OpenMetrics compatibility" spec, accumulated (delta → cumulative) and expired
//! when their source stops sending.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, NumberDataPoint,
    SummaryDataPoint, metric, number_data_point,
};

use super::labels::{LabelSet, LabelsBuilder, intern, write_display};
use super::names::{metric_name, sanitize_label, write_label};
use crate::config::SeriesConfig;

/// Label pairs a resource gives all its series.
type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// A series' value. The rare, large kinds are boxed so a number series' entry stays small: a
/// store of 100,000 new series spent a third of its time having the kernel zero the pages its
/// growing table took.
#[derive(Debug, Clone)]
enum Value {
    Number(f64),
    Histogram(Box<HistogramValue>),
    Summary(Box<SummaryValue>),
}

#[derive(Debug, Clone)]
struct HistogramValue {
    /// Upper bounds.
    bounds: Vec<f64>,
    /// Per-bucket (not cumulative) counts; the last count is the +Inf bucket.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Clone)]
struct SummaryValue {
    quantiles: Vec<(f64, f64)>,
    sum: f64,
    count: u64,
}

#[derive(Debug)]
struct Series {
    value: Value,
    updated: Instant,
    /// Updated since the last [`Store::take_updated`] (and so listed in `touched` once).
    pending: bool,
}

/// A family's identity, as a point being stored names it.
struct Meta<'a> {
    name: &'a str,
    kind: Kind,
    help: &'a str,
}

#[derive(Debug)]
struct Family {
    /// Its name, shared with the list of series updated since the last take.
    name: Arc<str>,
    kind: Kind,
    help: String,
    /// Keyed with hashbrown's seeded foldhash: hashing label sets with SipHash was a sixth of
    /// remote write's time.
    series: HashMap<LabelSet, Series>,
}

/// What the exporter's settings add to every series.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Resource attributes copied onto every series as labels.
    pub resource_to_labels: Vec<String>,
    /// Labels added to every series.
    pub const_labels: Vec<(String, String)>,
    /// How long a series lives without an update.
    pub expiry: Duration,
    /// Remember which series each update touched (remote write sends just those).
    pub track_updates: bool,
}

impl Options {
    /// The options `series` sets, each constant label's name passed through `label_name`;
    /// `track_updates` as remote write needs it.
    pub fn of(series: &SeriesConfig, label_name: impl Fn(&str) -> String, track_updates: bool) -> Self {
        Options {
            resource_to_labels: series.resource_to_labels.clone(),
            const_labels: series.const_labels.iter().map(|(k, v)| (label_name(k), v.clone())).collect(),
            expiry: series.expiry.0,
            track_updates,
        }
    }
}

/// Every series, by family.
#[derive(Debug, Default)]
pub struct Store {
    families: BTreeMap<Arc<str>, Family>,
    options: Options,
    touched: Vec<(Arc<str>, LabelSet)>,
    builder: LabelsBuilder,
}

/// One flat sample as the store holds it: the family's name and the suffix (`_bucket`, `_sum`,
/// `_count` or none) that make the metric's name, the series' labels sorted by name, the extra
/// label a bucket or quantile adds (`le`, `quantile`), and the value.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// The family's name.
    pub name: &'a str,
    /// What follows the family's name in this sample's metric name.
    pub suffix: &'static str,
    /// The series' labels, sorted by name.
    pub labels: &'a LabelSet,
    /// `le` or `quantile` and its value, for a bucket or a quantile.
    pub extra: Option<(&'static str, &'a str)>,
    /// The sample's value.
    pub value: f64,
}

fn any_to_string(value: &Option<AnyValue>) -> String {
    let mut out = String::new();
    write_any(&mut out, value);
    out
}

/// Appends an attribute's value as a label value.
fn write_any(out: &mut String, value: &Option<AnyValue>) {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => out.push_str(s),
        Some(any_value::Value::BoolValue(b)) => write_display(out, b),
        Some(any_value::Value::IntValue(i)) => write_display(out, i),
        Some(any_value::Value::DoubleValue(d)) => write_display(out, d),
        Some(other) => write_display(out, format_args!("{other:?}")),
        None => {}
    }
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Option<AnyValue>> {
    attributes.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
}

/// `job` and `instance` from the resource, as the spec derives them.
fn job_and_instance(resource: &[KeyValue]) -> (String, String) {
    let name = find(resource, "service.name").map(any_to_string).unwrap_or_default();
    let job = match find(resource, "service.namespace").map(any_to_string) {
        Some(namespace) if !namespace.is_empty() => format!("{namespace}/{name}"),
        _ => name,
    };
    let instance = find(resource, "service.instance.id").map(any_to_string).unwrap_or_default();
    (job, instance)
}

/// A data point of any kind: its attributes are what make its series.
trait DataPoint {
    fn attributes(&self) -> &[KeyValue];
}

macro_rules! data_points {
    ($($point:ty),*) => {
        $(impl DataPoint for $point {
            fn attributes(&self) -> &[KeyValue] {
                &self.attributes
            }
        })*
    };
}

data_points!(NumberDataPoint, HistogramDataPoint, ExponentialHistogramDataPoint, SummaryDataPoint);

/// Each point's attributes and value.
type Points<'a> = Vec<(&'a [KeyValue], Value)>;

/// The points of one metric as [`Points`].
fn points_of<P: DataPoint>(points: &[P], value: impl Fn(&P) -> Value) -> Points<'_> {
    points.iter().map(|p| (p.attributes(), value(p))).collect()
}

/// Writes the labels of a series into `builder`: `base` first, then the attributes.
fn build_labels(builder: &mut LabelsBuilder, base: &Labels, attributes: &[KeyValue]) {
    builder.clear();
    for (name, value) in base {
        builder.base(name, value);
    }
    for kv in attributes {
        builder.attribute(|out| write_label(out, &kv.key), |out| write_any(out, &kv.value));
    }
}

/// Classic buckets from an exponential histogram: each populated bucket's upper bound is
/// base^(index+1), base = 2^(2^-scale); negative buckets and the zero bucket count below the
/// first bound.
fn exponential_to_classic(point: &ExponentialHistogramDataPoint) -> (Vec<f64>, Vec<u64>) {
    let base = 2f64.powf(2f64.powi(-point.scale));
    let mut bounds = Vec::new();
    let mut counts = Vec::new();
    // Counts come off the wire as any u64: saturate rather than wrap.
    let negative =
        point.negative.as_ref().map_or(0, |b| b.bucket_counts.iter().fold(0u64, |a, b| a.saturating_add(*b)));
    let below = point.zero_count.saturating_add(negative);
    if let Some(positive) = &point.positive {
        for (i, count) in positive.bucket_counts.iter().enumerate() {
            let index = positive.offset as i64 + i as i64;
            bounds.push(base.powi((index + 1) as i32));
            counts.push(*count);
        }
    }
    if let Some(first) = counts.first_mut() {
        *first = first.saturating_add(below);
    } else {
        bounds.push(point.zero_threshold.max(0.0));
        counts.push(below);
    }
    counts.push(0); // +Inf holds nothing beyond the last bucket
    (bounds, counts)
}

/// The family `meta` names, created if new; `None` when the name is taken by another type.
fn family<'a>(families: &'a mut BTreeMap<Arc<str>, Family>, meta: &Meta<'_>) -> Option<&'a mut Family> {
    // Look up by `&str` first: the name is only allocated when the family is new.
    if !families.contains_key(meta.name) {
        let name: Arc<str> = meta.name.into();
        let family = Family {
            name: name.clone(),
            kind: meta.kind,
            help: meta.help.to_string(),
            series: HashMap::new(),
        };
        families.insert(name, family);
    }
    let family = families.get_mut(meta.name)?;
    // A name reused with another type keeps its first type; the newcomer is skipped.
    (family.kind == meta.kind).then_some(family)
}

impl Store {
    /// A store applying `options`.
    pub fn new(options: Options) -> Self {
        Self { families: BTreeMap::new(), options, touched: Vec::new(), builder: LabelsBuilder::default() }
    }

    /// Stores `points` in the family `meta` names (looked up once for all of them).
    fn put(&mut self, meta: &Meta<'_>, base: &Labels, points: Points<'_>, delta: bool, now: Instant) {
        let track = self.options.track_updates;
        let Some(family) = family(&mut self.families, meta) else { return };
        for (attributes, value) in points {
            build_labels(&mut self.builder, base, attributes);
            let labels = self.builder.encode();
            // A series is listed once however often a batch updates it: no sorting or
            // deduplicating when the updates are taken (a sort of every touched label set was
            // 40% of remote write).
            let Some((interned, series)) = family.series.get_key_value_mut(labels) else {
                let labels = intern(labels);
                if track {
                    self.touched.push((family.name.clone(), labels.clone()));
                }
                family.series.insert(labels, Series { value, updated: now, pending: track });
                continue;
            };
            series.value = match (&series.value, value) {
                (Value::Number(old), Value::Number(add)) if delta => Value::Number(old + add),
                (Value::Histogram(old), Value::Histogram(mut new)) if delta && old.bounds == new.bounds => {
                    // Counts come off the wire as any u64: saturate rather than wrap.
                    for (count, old) in new.counts.iter_mut().zip(&old.counts) {
                        *count = count.saturating_add(*old);
                    }
                    new.sum += old.sum;
                    new.count = new.count.saturating_add(old.count);
                    Value::Histogram(new)
                }
                (_, value) => value,
            };
            series.updated = now;
            if track && !std::mem::replace(&mut series.pending, true) {
                self.touched.push((family.name.clone(), interned.clone()));
            }
        }
    }

    /// Adds a batch of metrics.
    pub fn update(&mut self, request: &ExportMetricsServiceRequest, now: Instant) {
        let delta = AggregationTemporality::Delta as i32;
        for resource_metrics in &request.resource_metrics {
            let resource = resource_metrics.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[]);
            let (job, instance) = job_and_instance(resource);
            let mut base: Labels = self.options.const_labels.clone();
            base.push(("job".into(), job.clone()));
            base.push(("instance".into(), instance.clone()));
            for key in &self.options.resource_to_labels {
                if let Some(value) = find(resource, key) {
                    base.push((sanitize_label(key), any_to_string(value)));
                }
            }
            // target_info carries the resource attributes that are not job and instance.
            let info: Vec<KeyValue> = resource
                .iter()
                .filter(|kv| {
                    !matches!(kv.key.as_str(), "service.name" | "service.namespace" | "service.instance.id")
                })
                .cloned()
                .collect();
            let info_base: Labels = vec![("instance".into(), instance), ("job".into(), job)];
            let meta = Meta { name: "target_info", kind: Kind::Gauge, help: "Target metadata" };
            self.put(&meta, &info_base, vec![(&info, Value::Number(1.0))], false, now);
            for scope in &resource_metrics.scope_metrics {
                for m in &scope.metrics {
                    self.add_metric(m, &base, delta, now);
                }
            }
        }
    }

    fn add_metric(
        &mut self,
        m: &opentelemetry_proto::tonic::metrics::v1::Metric,
        base: &Labels,
        delta: i32,
        now: Instant,
    ) {
        let number = |p: &NumberDataPoint| match p.value {
            Some(number_data_point::Value::AsDouble(d)) => Value::Number(d),
            Some(number_data_point::Value::AsInt(i)) => Value::Number(i as f64),
            None => Value::Number(0.0),
        };
        // Each data kind gives its family's type, naming, temporality and points; the series
        // are then stored alike.
        let (kind, name, is_delta, points): (Kind, String, bool, Points<'_>) = match &m.data {
            Some(metric::Data::Gauge(g)) => (
                Kind::Gauge,
                metric_name(&m.name, &m.unit, true, false),
                false,
                points_of(&g.data_points, number),
            ),
            Some(metric::Data::Sum(s)) => (
                if s.is_monotonic { Kind::Counter } else { Kind::Gauge },
                metric_name(&m.name, &m.unit, !s.is_monotonic, s.is_monotonic),
                s.aggregation_temporality == delta,
                points_of(&s.data_points, number),
            ),
            Some(metric::Data::Histogram(h)) => (
                Kind::Histogram,
                metric_name(&m.name, &m.unit, false, false),
                h.aggregation_temporality == delta,
                points_of(&h.data_points, |p| {
                    let mut counts = p.bucket_counts.clone();
                    counts.resize(p.explicit_bounds.len() + 1, 0);
                    let bounds = p.explicit_bounds.clone();
                    let (sum, count) = (p.sum.unwrap_or(0.0), p.count);
                    Value::Histogram(Box::new(HistogramValue { bounds, counts, sum, count }))
                }),
            ),
            Some(metric::Data::ExponentialHistogram(h)) => (
                Kind::Histogram,
                metric_name(&m.name, &m.unit, false, false),
                h.aggregation_temporality == delta,
                points_of(&h.data_points, |p| {
                    let (bounds, counts) = exponential_to_classic(p);
                    let (sum, count) = (p.sum.unwrap_or(0.0), p.count);
                    Value::Histogram(Box::new(HistogramValue { bounds, counts, sum, count }))
                }),
            ),
            Some(metric::Data::Summary(s)) => (
                Kind::Summary,
                metric_name(&m.name, &m.unit, false, false),
                false,
                points_of(&s.data_points, |p| {
                    let quantiles = p.quantile_values.iter().map(|q| (q.quantile, q.value)).collect();
                    Value::Summary(Box::new(SummaryValue { quantiles, sum: p.sum, count: p.count }))
                }),
            ),
            None => return,
        };
        let meta = Meta { name: &name, kind, help: &m.description };
        self.put(&meta, base, points, is_delta, now);
    }

    /// Hands `emit` the current samples of every series updated since the last call, each
    /// series once; returns how many series that was.
    pub fn take_updated(&mut self, mut emit: impl FnMut(Sample<'_>)) -> usize {
        let touched = std::mem::take(&mut self.touched);
        let mut series_taken = 0;
        for (name, labels) in &touched {
            let Some(series) = self.families.get_mut(name).and_then(|f| f.series.get_mut(labels)) else {
                continue;
            };
            // Listed twice only if it expired and came back since: send it once.
            if !std::mem::replace(&mut series.pending, false) {
                continue;
            }
            series_taken += 1;
            flatten(&series.value, |suffix, extra, value| {
                let extra = extra.as_ref().map(|(key, label)| (*key, label.as_str()));
                emit(Sample { name, suffix, labels, extra, value });
            });
        }
        // Keep the list's allocation for the next batch.
        self.touched = touched;
        self.touched.clear();
        series_taken
    }

    /// Drops series not updated within the expiry, and families left empty.
    pub fn expire(&mut self, now: Instant) {
        let expiry = self.options.expiry;
        for family in self.families.values_mut() {
            family.series.retain(|_, s| now.duration_since(s.updated) <= expiry);
        }
        self.families.retain(|_, f| !f.series.is_empty());
    }

    /// Number of live series.
    pub fn len(&self) -> usize {
        self.families.values().map(|f| f.series.len()).sum()
    }

    /// Whether there are no series.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        if self.is_empty() {
            return String::new();
        }
        let mut out = String::with_capacity(self.len() * 96);
        for (name, family) in &self.families {
            let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {name} {help}");
            }
            let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
            let mut series: Vec<_> = family.series.iter().collect();
            series.sort_unstable_by(|a, b| a.0.cmp_pairs(b.0));
            for (labels, s) in series {
                flatten(&s.value, |suffix, extra, value| {
                    sample(
                        &mut out,
                        name,
                        suffix,
                        labels,
                        extra.as_ref().map(|(k, v)| (*k, v.as_str())),
                        value,
                    );
                });
            }
        }
        out
    }
}

/// Every sample of one series value: `(suffix, extra label, value)` — a number as itself, a
/// histogram as cumulative `_bucket{le}`s, `_sum` and `_count`, a summary as `{quantile}`s,
/// `_sum` and `_count`. The scrape text and remote write both read series through this.
fn flatten(value: &Value, mut emit: impl FnMut(&'static str, Option<(&'static str, String)>, f64)) {
    match value {
        Value::Number(v) => emit("", None, *v),
        Value::Histogram(histogram) => {
            let HistogramValue { bounds, counts, sum, count } = &**histogram;
            let mut cumulative: u64 = 0;
            for (bound, c) in bounds.iter().zip(counts) {
                cumulative = cumulative.saturating_add(*c);
                emit("_bucket", Some(("le", format_float(*bound))), cumulative as f64);
            }
            emit("_bucket", Some(("le", "+Inf".into())), *count as f64);
            emit("_sum", None, *sum);
            emit("_count", None, *count as f64);
        }
        Value::Summary(summary) => {
            let SummaryValue { quantiles, sum, count } = &**summary;
            for (q, v) in quantiles {
                emit("", Some(("quantile", format_float(*q))), *v);
            }
            emit("_sum", None, *sum);
            emit("_count", None, *count as f64);
        }
    }
}

fn format_float(v: f64) -> String {
    let mut out = String::new();
    write_float(&mut out, v);
    out
}

/// Appends `v` as the text format writes values and bounds.
fn write_float(out: &mut String, v: f64) {
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.is_nan() {
        out.push_str("NaN");
    } else {
        write_display(out, v);
    }
}

/// Appends a label value with `\`, `"` and newlines escaped.
fn write_escaped(out: &mut String, value: &str) {
    let mut rest = value;
    while let Some(at) = rest.find(['\\', '"', '\n']) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'\\' => r"\\",
            b'"' => r#"\""#,
            _ => r"\n",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &LabelSet,
    extra: Option<(&str, &str)>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    let mut pairs = labels.pairs().filter(|(_, v)| !v.is_empty()).chain(extra).peekable();
    if pairs.peek().is_some() {
        out.push('{');
        for (i, (k, v)) in pairs.enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            write_escaped(out, v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    write_float(out, value);
    out.push('\n');
}
