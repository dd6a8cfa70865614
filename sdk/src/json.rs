//! Wire values as JSON, for exporters that speak JSON (webhooks, Loki, search engines).
//!
//! [`Value`] and [`Attributes`] serialize straight from the batch's bytes with serde: put them in
//! a `#[derive(Serialize)]` struct and `serde_json::to_vec` writes the document in one pass,
//! without building a `serde_json::Value` tree first (which costs several allocations per
//! attribute). IDs become lowercase hex, as the OTLP/JSON encoding writes them; times stay Unix
//! nanoseconds.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use sluice_wire::otlp::{self, AnyValue};
use sluice_wire::{Fields, Value as Wire};

/// An attribute value or body as JSON: strings, numbers and booleans as themselves, arrays and
/// key/value lists recursively, bytes as lowercase hex, NaN and infinities as `null`.
#[derive(Debug, Clone, Copy)]
pub struct Value<'a>(pub AnyValue<'a>);

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            AnyValue::String(bytes) => serializer.serialize_str(&String::from_utf8_lossy(bytes)),
            AnyValue::Bool(b) => serializer.serialize_bool(b),
            AnyValue::Int(n) => serializer.serialize_i64(n),
            AnyValue::Double(x) if x.is_finite() => serializer.serialize_f64(x),
            AnyValue::Double(_) | AnyValue::Empty => serializer.serialize_none(),
            AnyValue::Array(encoded) => {
                let mut seq = serializer.serialize_seq(None)?;
                let elements = Fields::new(encoded).map_while(Result::ok).filter(|f| f.number == 1);
                for element in elements.filter_map(|f| match f.value {
                    Wire::Bytes(b) => AnyValue::parse(b).ok(),
                    _ => None,
                }) {
                    seq.serialize_element(&Value(element))?;
                }
                seq.end()
            }
            AnyValue::KvList(encoded) => Attributes(otlp::Attributes::new(encoded, 1)).serialize(serializer),
            AnyValue::Bytes(bytes) => serializer.serialize_str(&hex(bytes)),
        }
    }
}

/// Attributes as a JSON object, keys in wire order (malformed entries are skipped).
#[derive(Debug, Clone)]
pub struct Attributes<'a>(pub otlp::Attributes<'a>);

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for kv in self.0.clone().map_while(Result::ok) {
            map.serialize_entry(&String::from_utf8_lossy(kv.key), &Value(kv.value))?;
        }
        map.end()
    }
}

/// A value as one line of text: a string as it is, anything else as compact JSON.
pub fn text(value: AnyValue<'_>) -> String {
    match value {
        AnyValue::String(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        AnyValue::Empty => String::new(),
        other => serde_json::to_string(&Value(other)).unwrap_or_default(),
    }
}

/// Bytes (trace and span IDs) as lowercase hex; empty for none.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(value: AnyValue<'_>) -> String {
        serde_json::to_string(&Value(value)).expect("serializes")
    }

    #[test]
    fn renders_scalars_and_ids() {
        assert_eq!(json(AnyValue::String(b"a")), r#""a""#);
        assert_eq!(json(AnyValue::Int(-3)), "-3");
        assert_eq!(json(AnyValue::Double(f64::NAN)), "null");
        assert_eq!(json(AnyValue::Bytes(&[0x01, 0xab])), r#""01ab""#);
        assert_eq!(text(AnyValue::Bool(true)), "true");
        assert_eq!(text(AnyValue::String(b"line")), "line");
        assert_eq!(hex(&[0x01, 0xab]), "01ab");
    }

    #[test]
    fn renders_nested_lists() {
        // ArrayValue { values: [AnyValue { int_value: 1 }, AnyValue { string_value: "x" }] }
        let array = [0x0a, 0x02, 0x18, 0x01, 0x0a, 0x03, 0x0a, 0x01, b'x'];
        assert_eq!(json(AnyValue::Array(&array)), r#"[1,"x"]"#);
        // KeyValueList { values: [KeyValue { key: "k", value: { bool_value: true } }] }
        let kvlist = [0x0a, 0x07, 0x0a, 0x01, b'k', 0x12, 0x02, 0x10, 0x01];
        assert_eq!(json(AnyValue::KvList(&kvlist)), r#"{"k":true}"#);
    }
}
