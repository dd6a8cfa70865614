//! A remote write 1.0 `WriteRequest` written straight from the store's samples: no message
//! structs, no label copies, one buffer kept from batch to batch. Byte for byte what prost
//! writes for the same message (the tests hold it to that).

use sluice_wire::wire::{bytes_field_len, put_bytes_field, put_varint, varint_len};

use crate::exporters::prometheus::store::Sample;

/// `WriteRequest.timeseries`, `TimeSeries.labels`, `Label.name`: field 1, length-delimited.
const FIELD_1_BYTES: u8 = 1 << 3 | 2;
/// `TimeSeries.samples`, `Label.value`: field 2, length-delimited.
const FIELD_2_BYTES: u8 = 2 << 3 | 2;
/// `Sample.value`: field 1, 64-bit.
const SAMPLE_VALUE: u8 = 1 << 3 | 1;
/// `Sample.timestamp`: field 2, varint.
const SAMPLE_TIMESTAMP: u8 = 2 << 3;

/// Builds one `WriteRequest` at a time, reusing its buffers.
#[derive(Debug, Default)]
pub struct WriteRequestEncoder {
    request: Vec<u8>,
    series: Vec<u8>,
}

impl WriteRequestEncoder {
    /// Starts a new request, keeping the buffers' capacity.
    pub fn clear(&mut self) {
        self.request.clear();
    }

    /// Adds `sample` as one time series with one sample at `timestamp` (ms since the epoch). Its
    /// labels are the series' labels without the empty ones, the extra `le`/`quantile` label and
    /// `__name__`, sorted by name as remote write requires.
    pub fn push(&mut self, sample: Sample<'_>, timestamp: i64) {
        let series = &mut self.series;
        series.clear();
        // The store's labels are sorted; `__name__` and the extra label are merged in, each after
        // any store label of the same name (the order a stable sort of the appended list gives).
        // Bytes throughout: the store's labels are copied as they are, not checked as UTF-8 again.
        let mut inserted = [
            Some((&b"__name__"[..], sample.name.as_bytes(), sample.suffix.as_bytes())),
            sample
                .extra
                .filter(|(_, value)| !value.is_empty())
                .map(|(key, value)| (key.as_bytes(), value.as_bytes(), &b""[..])),
        ];
        if let [Some(name), Some(extra)] = inserted
            && extra.0 < name.0
        {
            inserted.swap(0, 1);
        }
        let mut pending = inserted.iter().flatten().peekable();
        for (key, value) in sample.labels.raw_pairs() {
            while let Some((k, v1, v2)) = pending.next_if(|(k, _, _)| *k < key) {
                label(series, k, v1, v2);
            }
            if !value.is_empty() {
                label(series, key, value, b"");
            }
        }
        for (k, v1, v2) in pending {
            label(series, k, v1, v2);
        }
        let value_len = if sample.value != 0.0 { 9 } else { 0 };
        let timestamp_len = if timestamp != 0 { 1 + varint_len(timestamp as u64) } else { 0 };
        series.push(FIELD_2_BYTES);
        put_varint(series, (value_len + timestamp_len) as u64);
        if value_len != 0 {
            series.push(SAMPLE_VALUE);
            series.extend_from_slice(&sample.value.to_le_bytes());
        }
        if timestamp_len != 0 {
            series.push(SAMPLE_TIMESTAMP);
            put_varint(series, timestamp as u64);
        }
        self.request.push(FIELD_1_BYTES);
        put_varint(&mut self.request, self.series.len() as u64);
        self.request.extend_from_slice(&self.series);
    }

    /// The encoded request.
    pub fn bytes(&self) -> &[u8] {
        &self.request
    }
}

/// A `Label { name, value }` whose value is `value` followed by `suffix`; an empty value is
/// left out, as prost leaves out default fields.
fn label(out: &mut Vec<u8>, name: &[u8], value: &[u8], suffix: &[u8]) {
    let value_len = value.len() + suffix.len();
    let name_field = if name.is_empty() { 0 } else { bytes_field_len(1, name.len()) };
    let value_field = if value_len == 0 { 0 } else { bytes_field_len(2, value_len) };
    out.push(FIELD_1_BYTES);
    put_varint(out, (name_field + value_field) as u64);
    if name_field != 0 {
        put_bytes_field(out, 1, name);
    }
    if value_field != 0 {
        out.push(FIELD_2_BYTES);
        put_varint(out, value_len as u64);
        out.extend_from_slice(value);
        out.extend_from_slice(suffix);
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::exporters::prometheus::labels::from_pairs as labels;

    #[derive(Clone, PartialEq, Message)]
    struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        samples: Vec<PromSample>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct Label {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(string, tag = "2")]
        value: String,
    }

    #[derive(Clone, PartialEq, Message)]
    struct PromSample {
        #[prost(double, tag = "1")]
        value: f64,
        #[prost(int64, tag = "2")]
        timestamp: i64,
    }

    /// The message as the exporter built it before: labels without empty values, the extra
    /// label and `__name__` appended, then a stable sort by name.
    fn reference(sample: Sample<'_>, timestamp: i64) -> TimeSeries {
        let mut labels: Vec<Label> = sample
            .labels
            .pairs()
            .filter(|(_, v)| !v.is_empty())
            .map(|(name, value)| Label { name: name.into(), value: value.into() })
            .collect();
        if let Some((name, value)) = sample.extra {
            labels.push(Label { name: name.into(), value: value.into() });
        }
        labels.push(Label { name: "__name__".into(), value: format!("{}{}", sample.name, sample.suffix) });
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        TimeSeries { labels, samples: vec![PromSample { value: sample.value, timestamp }] }
    }

    #[test]
    fn writes_what_prost_writes() {
        let long = "v".repeat(300);
        let label_sets = [
            labels(&[]),
            labels(&[("job", "bench"), ("instance", ""), ("gpu", "3")]),
            labels(&[("A_upper", "x"), ("_under", "y"), ("le", "user"), ("zz", &long)]),
            labels(&[("__name__", "clash"), ("quantile", "q")]),
        ];
        let extras = [None, Some(("le", "0.5")), Some(("le", "+Inf")), Some(("quantile", "0.99"))];
        let values = [0.0, -0.0, 1.5, f64::INFINITY, -3e300];
        let timestamps = [0, 1, 1_700_000_000_123, -5];
        let mut encoder = WriteRequestEncoder::default();
        let mut expected = WriteRequest { timeseries: Vec::new() };
        for labels in &label_sets {
            for extra in extras {
                for (value, timestamp) in values.iter().zip(timestamps.iter().cycle()) {
                    for suffix in ["", "_bucket"] {
                        let sample = Sample { name: "gpu_temp", suffix, labels, extra, value: *value };
                        encoder.push(sample, *timestamp);
                        expected.timeseries.push(reference(sample, *timestamp));
                    }
                }
            }
        }
        assert_eq!(encoder.bytes(), expected.encode_to_vec().as_slice());
        encoder.clear();
        assert!(encoder.bytes().is_empty());
    }
}
