//! Attribute and name edits on single encoded messages, for the items and resources a plugin
//! asks to change. Untouched fields are copied verbatim; only the edited message is rewritten.

use std::borrow::Cow;

use crate::wire::{Error, Fields, put_bytes_field, put_fixed64_field, put_varint_field};

/// An attribute value to write.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue<'a> {
    /// `string_value`.
    Str(Cow<'a, str>),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `bool_value`.
    Bool(bool),
}

impl AttrValue<'_> {
    /// Encodes this value as an `AnyValue` message.
    pub fn encode_any_value(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            AttrValue::Str(s) => put_bytes_field(&mut out, 1, s.as_bytes()),
            AttrValue::Bool(b) => put_varint_field(&mut out, 2, u64::from(*b)),
            AttrValue::Int(i) => put_varint_field(&mut out, 3, *i as u64),
            AttrValue::Double(d) => put_fixed64_field(&mut out, 4, d.to_bits()),
        }
        out
    }
}

/// How a set treats an existing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    /// Only if absent.
    Insert,
    /// Only if present.
    Update,
    /// Either way.
    Upsert,
}

/// One attribute edit.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrEdit<'a> {
    /// Set `key` to `value` according to `mode`.
    Set {
        /// The key.
        key: Cow<'a, str>,
        /// The value.
        value: AttrValue<'a>,
        /// Insert, update or upsert.
        mode: SetMode,
    },
    /// Remove every attribute named `key`.
    Delete {
        /// The key.
        key: Cow<'a, str>,
    },
    /// Rename `key` to `new_key`, keeping the value.
    Rename {
        /// The old key.
        key: Cow<'a, str>,
        /// The new key.
        new_key: Cow<'a, str>,
    },
}

/// An attribute's key and its encoded `AnyValue`, borrowed until an edit writes one.
type KeyAndValue<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// Applies `edits`, in order, to the attributes held in field `attr_field` of `msg`.
pub fn edit_attributes(msg: &[u8], attr_field: u32, edits: &[AttrEdit<'_>]) -> Result<Vec<u8>, Error> {
    // The attribute list as (key, encoded AnyValue), borrowed until an edit writes one.
    let mut attrs: Vec<KeyAndValue<'_>> = Vec::new();
    let mut others: Vec<&[u8]> = Vec::new();
    for field in Fields::new(msg) {
        let field = field?;
        if field.number != attr_field {
            others.push(field.raw);
            continue;
        }
        let (mut key, mut value) = (&[][..], &[][..]);
        for part in Fields::new(field.bytes()?) {
            let part = part?;
            match part.number {
                1 => key = part.bytes()?,
                2 => value = part.bytes()?,
                _ => {}
            }
        }
        attrs.push((Cow::Borrowed(key), Cow::Borrowed(value)));
    }
    for edit in edits {
        match edit {
            AttrEdit::Set { key, value, mode } => {
                let present = attrs.iter().any(|(k, _)| k.as_ref() == key.as_bytes());
                let write = match mode {
                    SetMode::Insert => !present,
                    SetMode::Update => present,
                    SetMode::Upsert => true,
                };
                if write {
                    attrs.retain(|(k, _)| k.as_ref() != key.as_bytes());
                    attrs.push((Cow::Owned(key.as_bytes().to_vec()), Cow::Owned(value.encode_any_value())));
                }
            }
            AttrEdit::Delete { key } => attrs.retain(|(k, _)| k.as_ref() != key.as_bytes()),
            AttrEdit::Rename { key, new_key } => {
                if attrs.iter().any(|(k, _)| k.as_ref() == key.as_bytes()) {
                    attrs.retain(|(k, _)| k.as_ref() != new_key.as_bytes());
                    for (k, _) in attrs.iter_mut().filter(|(k, _)| k.as_ref() == key.as_bytes()) {
                        *k = Cow::Owned(new_key.as_bytes().to_vec());
                    }
                }
            }
        }
    }
    let mut out = Vec::with_capacity(msg.len() + 64);
    for raw in others {
        out.extend_from_slice(raw);
    }
    let mut kv = Vec::new();
    for (key, value) in &attrs {
        kv.clear();
        put_bytes_field(&mut kv, 1, key);
        put_bytes_field(&mut kv, 2, value);
        put_bytes_field(&mut out, attr_field, &kv);
    }
    Ok(out)
}

/// Replaces every occurrence of length-delimited field `number` in `msg` with `f`'s output.
pub fn map_field(
    msg: &[u8],
    number: u32,
    mut f: impl FnMut(&[u8]) -> Result<Vec<u8>, Error>,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(msg.len() + 64);
    for field in Fields::new(msg) {
        let field = field?;
        if field.number == number {
            let replaced = f(field.bytes()?)?;
            put_bytes_field(&mut out, number, &replaced);
        } else {
            out.extend_from_slice(field.raw);
        }
    }
    Ok(out)
}

/// Sets string field `number` of `msg` to `value` (replacing any occurrence).
pub fn set_string_field(msg: &[u8], number: u32, value: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(msg.len() + value.len());
    for field in Fields::new(msg) {
        let field = field?;
        if field.number != number {
            out.extend_from_slice(field.raw);
        }
    }
    put_bytes_field(&mut out, number, value.as_bytes());
    Ok(out)
}

/// The attribute field of each metric data-point type, by the `Metric` field holding it:
/// gauge and sum hold `NumberDataPoint` (attributes 7), histogram `HistogramDataPoint` (9),
/// exponential histogram `ExponentialHistogramDataPoint` (1), summary `SummaryDataPoint` (7).
const METRIC_POINT_ATTRIBUTES: [(u32, u32); 5] = [(5, 7), (7, 7), (9, 9), (10, 1), (11, 7)];

/// Applies `edits` to the attributes of every data point of an encoded `Metric`.
pub fn edit_metric_points(metric: &[u8], edits: &[AttrEdit<'_>]) -> Result<Vec<u8>, Error> {
    let mut out = metric.to_vec();
    for (data_field, attr_field) in METRIC_POINT_ATTRIBUTES {
        if Fields::new(&out).any(|f| matches!(f, Ok(f) if f.number == data_field)) {
            out = map_field(&out, data_field, |data| {
                map_field(data, 1, |point| edit_attributes(point, attr_field, edits))
            })?;
        }
    }
    Ok(out)
}
