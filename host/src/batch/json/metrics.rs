//! Metrics and their five kinds of data points.

use sluice_wire::{Field, Fields};

use super::common::{Shape, attributes};
use super::writer::{NotCanonical, Render, Run, Scalar, Writer, bytes, fixed64, once, sint32, varint};

/// How a metrics request is laid out.
pub(super) const SHAPE: Shape = Shape {
    resources_key: b"{\"resourceMetrics\":",
    scopes_key: b",\"scopeMetrics\":",
    items_key: b",\"metrics\":",
    item: metric,
};

/// A `Metric`: its names, metadata and its data under the kind's key.
fn metric(w: &mut Writer, buf: &[u8]) -> Render {
    let (mut name, mut description, mut unit): (&[u8], &[u8], &[u8]) = (b"", b"", b"");
    let (mut metadata, mut data) = (Run::default(), None::<(u32, &[u8])>);
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            1 => name = bytes(&field)?,
            2 => description = bytes(&field)?,
            3 => unit = bytes(&field)?,
            12 => metadata.add(&field),
            // The data is a oneof of messages: a second one would be merged or replace the first.
            5 | 7 | 9 | 10 | 11 if data.is_none() => data = Some((field.number, bytes(&field)?)),
            5 | 7 | 9 | 10 | 11 => return Err(NotCanonical),
            _ => {}
        }
    }
    w.raw(b"{\"name\":");
    w.string(name)?;
    w.raw(b",\"description\":");
    w.string(description)?;
    w.raw(b",\"unit\":");
    w.string(unit)?;
    w.raw(b",\"metadata\":");
    attributes(w, buf, metadata, 12)?;
    match data {
        None => {}
        Some((5, gauge)) => {
            w.raw(b",\"gauge\":");
            data_points(w, gauge, number_point, Temporality::Absent)?;
        }
        Some((7, sum)) => {
            w.raw(b",\"sum\":");
            data_points(w, sum, number_point, Temporality::WithMonotonic)?;
        }
        Some((9, histogram)) => {
            w.raw(b",\"histogram\":");
            data_points(w, histogram, histogram_point, Temporality::Present)?;
        }
        Some((10, histogram)) => {
            w.raw(b",\"exponentialHistogram\":");
            data_points(w, histogram, exponential_point, Temporality::Present)?;
        }
        Some((_, summary)) => {
            w.raw(b",\"summary\":");
            data_points(w, summary, summary_point, Temporality::Absent)?;
        }
    }
    w.raw(b"}");
    Ok(())
}

/// Which of a kind's fields follow its data points.
#[derive(Clone, Copy, PartialEq)]
enum Temporality {
    /// Gauges and summaries have none.
    Absent,
    /// Histograms have `aggregationTemporality`.
    Present,
    /// Sums have it and `isMonotonic`.
    WithMonotonic,
}

/// A `Gauge`, `Sum`, `Histogram`, `ExponentialHistogram` or `Summary`.
fn data_points(
    w: &mut Writer,
    buf: &[u8],
    point: fn(&mut Writer, &[u8]) -> Render,
    rest: Temporality,
) -> Render {
    let (mut points, mut temporality, mut monotonic) = (Run::default(), 0i32, false);
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            1 => points.add(&field),
            2 if rest != Temporality::Absent => temporality = varint(&field)? as i32,
            3 if rest == Temporality::WithMonotonic => monotonic = varint(&field)? != 0,
            _ => {}
        }
    }
    w.raw(b"{\"dataPoints\":");
    w.list(buf, points, 1, point)?;
    if rest != Temporality::Absent {
        w.raw(b",\"aggregationTemporality\":");
        w.int(temporality);
    }
    if rest == Temporality::WithMonotonic {
        w.raw(b",\"isMonotonic\":");
        w.bool(monotonic);
    }
    w.raw(b"}");
    Ok(())
}

/// A number data point's or exemplar's value: `asDouble` or `asInt` (the last given wins).
#[derive(Clone, Copy)]
enum Number {
    Absent,
    Double(f64),
    Int(i64),
}

impl Number {
    fn read(field: &Field<'_>, double: u32) -> Result<Number, NotCanonical> {
        let bits = fixed64(field)?;
        Ok(if field.number == double {
            Number::Double(f64::from_bits(bits))
        } else {
            Number::Int(bits as i64)
        })
    }

    fn write(self, w: &mut Writer) {
        match self {
            Number::Absent => {}
            Number::Double(value) => {
                w.raw(b",\"asDouble\":");
                w.float(value);
            }
            Number::Int(value) => {
                w.raw(b",\"asInt\":");
                w.quoted(value);
            }
        }
    }
}

/// A `NumberDataPoint` (gauges and sums).
fn number_point(w: &mut Writer, buf: &[u8]) -> Render {
    let (mut attributes_run, mut exemplars) = (Run::default(), Run::default());
    let (mut start, mut time, mut flags, mut value) = (0u64, 0u64, 0u32, Number::Absent);
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            2 => start = fixed64(&field)?,
            3 => time = fixed64(&field)?,
            4 | 6 => value = Number::read(&field, 4)?,
            5 => exemplars.add(&field),
            7 => attributes_run.add(&field),
            8 => flags = varint(&field)? as u32,
            _ => {}
        }
    }
    w.raw(b"{\"attributes\":");
    attributes(w, buf, attributes_run, 7)?;
    times(w, start, time);
    w.raw(b",\"exemplars\":");
    w.list(buf, exemplars, 5, exemplar)?;
    w.raw(b",\"flags\":");
    w.int(flags);
    value.write(w);
    w.raw(b"}");
    Ok(())
}

/// `,"startTimeUnixNano":…,"timeUnixNano":…`.
fn times(w: &mut Writer, start: u64, time: u64) {
    w.raw(b",\"startTimeUnixNano\":");
    w.quoted(start);
    w.raw(b",\"timeUnixNano\":");
    w.quoted(time);
}

/// A `HistogramDataPoint`.
fn histogram_point(w: &mut Writer, buf: &[u8]) -> Render {
    let (mut attributes_run, mut exemplars, mut bucket_counts, mut bounds) =
        (Run::default(), Run::default(), Run::default(), Run::default());
    let (mut start, mut time, mut count, mut flags) = (0u64, 0u64, 0u64, 0u32);
    let (mut sum, mut min, mut max) = (None, None, None);
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            2 => start = fixed64(&field)?,
            3 => time = fixed64(&field)?,
            4 => count = fixed64(&field)?,
            5 => sum = Some(f64::from_bits(fixed64(&field)?)),
            6 => bucket_counts.add(&field),
            7 => bounds.add(&field),
            8 => exemplars.add(&field),
            9 => attributes_run.add(&field),
            10 => flags = varint(&field)? as u32,
            11 => min = Some(f64::from_bits(fixed64(&field)?)),
            12 => max = Some(f64::from_bits(fixed64(&field)?)),
            _ => {}
        }
    }
    w.raw(b"{\"attributes\":");
    attributes(w, buf, attributes_run, 9)?;
    times(w, start, time);
    w.raw(b",\"count\":");
    w.quoted(count);
    w.raw(b",\"sum\":");
    w.optional_float(sum);
    w.raw(b",\"bucketCounts\":");
    w.scalars(buf, bucket_counts, 6, Scalar::Fixed64, |w, count| w.quoted(count))?;
    w.raw(b",\"explicitBounds\":");
    w.scalars(buf, bounds, 7, Scalar::Fixed64, |w, bits| w.float(f64::from_bits(bits)))?;
    w.raw(b",\"exemplars\":");
    w.list(buf, exemplars, 8, exemplar)?;
    w.raw(b",\"flags\":");
    w.int(flags);
    w.raw(b",\"min\":");
    w.optional_float(min);
    w.raw(b",\"max\":");
    w.optional_float(max);
    w.raw(b"}");
    Ok(())
}

/// An `ExponentialHistogramDataPoint`.
fn exponential_point(w: &mut Writer, buf: &[u8]) -> Render {
    let (mut attributes_run, mut exemplars) = (Run::default(), Run::default());
    let (mut start, mut time, mut count, mut zero_count, mut flags, mut scale) =
        (0u64, 0u64, 0u64, 0u64, 0u32, 0i32);
    let (mut sum, mut min, mut max, mut zero_threshold) = (None, None, None, 0f64);
    let (mut positive, mut negative) = (None, None);
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            1 => attributes_run.add(&field),
            2 => start = fixed64(&field)?,
            3 => time = fixed64(&field)?,
            4 => count = fixed64(&field)?,
            5 => sum = Some(f64::from_bits(fixed64(&field)?)),
            6 => scale = sint32(&field)?,
            7 => zero_count = fixed64(&field)?,
            8 => once(&mut positive, &field)?,
            9 => once(&mut negative, &field)?,
            10 => flags = varint(&field)? as u32,
            11 => exemplars.add(&field),
            12 => min = Some(f64::from_bits(fixed64(&field)?)),
            13 => max = Some(f64::from_bits(fixed64(&field)?)),
            14 => zero_threshold = f64::from_bits(fixed64(&field)?),
            _ => {}
        }
    }
    w.raw(b"{\"attributes\":");
    attributes(w, buf, attributes_run, 1)?;
    times(w, start, time);
    w.raw(b",\"count\":");
    w.quoted(count);
    w.raw(b",\"sum\":");
    w.optional_float(sum);
    w.raw(b",\"scale\":");
    w.int(scale);
    w.raw(b",\"zeroCount\":");
    w.quoted(zero_count);
    w.raw(b",\"positive\":");
    w.optional(positive, buckets)?;
    w.raw(b",\"negative\":");
    w.optional(negative, buckets)?;
    w.raw(b",\"flags\":");
    w.int(flags);
    w.raw(b",\"exemplars\":");
    w.list(buf, exemplars, 11, exemplar)?;
    w.raw(b",\"min\":");
    w.optional_float(min);
    w.raw(b",\"max\":");
    w.optional_float(max);
    w.raw(b",\"zeroThreshold\":");
    w.float(zero_threshold);
    w.raw(b"}");
    Ok(())
}

/// An exponential histogram's `Buckets`.
fn buckets(w: &mut Writer, buf: &[u8]) -> Render {
    let (mut offset, mut counts) = (0i32, Run::default());
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            1 => offset = sint32(&field)?,
            2 => counts.add(&field),
            _ => {}
        }
    }
    w.raw(b"{\"offset\":");
    w.int(offset);
    w.raw(b",\"bucketCounts\":");
    w.scalars(buf, counts, 2, Scalar::Varint, |w, count| w.quoted(count))?;
    w.raw(b"}");
    Ok(())
}

/// A `SummaryDataPoint`.
fn summary_point(w: &mut Writer, buf: &[u8]) -> Render {
    let (mut attributes_run, mut quantiles) = (Run::default(), Run::default());
    let (mut start, mut time, mut count, mut sum, mut flags) = (0u64, 0u64, 0u64, 0f64, 0u32);
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            2 => start = fixed64(&field)?,
            3 => time = fixed64(&field)?,
            4 => count = fixed64(&field)?,
            5 => sum = f64::from_bits(fixed64(&field)?),
            6 => quantiles.add(&field),
            7 => attributes_run.add(&field),
            8 => flags = varint(&field)? as u32,
            _ => {}
        }
    }
    w.raw(b"{\"attributes\":");
    attributes(w, buf, attributes_run, 7)?;
    times(w, start, time);
    w.raw(b",\"count\":");
    w.quoted(count);
    w.raw(b",\"sum\":");
    w.float(sum);
    w.raw(b",\"quantileValues\":");
    w.list(buf, quantiles, 6, quantile)?;
    w.raw(b",\"flags\":");
    w.int(flags);
    w.raw(b"}");
    Ok(())
}

/// A summary's `ValueAtQuantile` (NaN and the infinities written as strings).
fn quantile(w: &mut Writer, buf: &[u8]) -> Render {
    let (mut quantile, mut value) = (0f64, 0f64);
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            1 => quantile = f64::from_bits(fixed64(&field)?),
            2 => value = f64::from_bits(fixed64(&field)?),
            _ => {}
        }
    }
    w.raw(b"{\"quantile\":");
    w.special_float(quantile);
    w.raw(b",\"value\":");
    w.special_float(value);
    w.raw(b"}");
    Ok(())
}

/// An `Exemplar`.
fn exemplar(w: &mut Writer, buf: &[u8]) -> Render {
    let (mut attributes_run, mut time, mut value) = (Run::default(), 0u64, Number::Absent);
    let (mut span_id, mut trace_id): (&[u8], &[u8]) = (b"", b"");
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            2 => time = fixed64(&field)?,
            3 | 6 => value = Number::read(&field, 3)?,
            4 => span_id = bytes(&field)?,
            5 => trace_id = bytes(&field)?,
            7 => attributes_run.add(&field),
            _ => {}
        }
    }
    w.raw(b"{\"filteredAttributes\":");
    attributes(w, buf, attributes_run, 7)?;
    w.raw(b",\"timeUnixNano\":");
    w.quoted(time);
    w.raw(b",\"spanId\":");
    w.hex(span_id);
    w.raw(b",\"traceId\":");
    w.hex(trace_id);
    value.write(w);
    w.raw(b"}");
    Ok(())
}
