//! Rendering wire values as JSON, for exporters that speak JSON (webhooks, Loki, search
//! engines). IDs become lowercase hex, as the OTLP/JSON encoding writes them; times stay Unix
//! nanoseconds.

use serde_json::{Map, Value};
use sluice_wire::otlp::{AnyValue, Attributes};
use sluice_wire::{Fields, Value as Wire};

/// An attribute value as JSON: strings, numbers and booleans as themselves, arrays and
/// key/value lists recursively, bytes as lowercase hex.
pub fn value(value: AnyValue<'_>) -> Value {
    match value {
        AnyValue::String(bytes) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        AnyValue::Bool(b) => Value::Bool(b),
        AnyValue::Int(n) => Value::from(n),
        AnyValue::Double(x) => serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number),
        AnyValue::Array(encoded) => Value::Array(
            Fields::new(encoded)
                .map_while(Result::ok)
                .filter(|f| f.number == 1)
                .filter_map(|f| match f.value {
                    Wire::Bytes(b) => AnyValue::parse(b).ok(),
                    _ => None,
                })
                .map(self::value)
                .collect(),
        ),
        AnyValue::KvList(encoded) => Value::Object(attributes(Attributes::new(encoded, 1))),
        AnyValue::Bytes(bytes) => Value::String(hex(bytes)),
        AnyValue::Empty => Value::Null,
    }
}

/// Attributes as a JSON object (the last of repeated keys wins; malformed ones are skipped).
pub fn attributes(attributes: Attributes<'_>) -> Map<String, Value> {
    attributes
        .map_while(Result::ok)
        .map(|kv| (String::from_utf8_lossy(kv.key).into_owned(), value(kv.value)))
        .collect()
}

/// A value as one line of text: a string as it is, anything else as compact JSON.
pub fn text(value: AnyValue<'_>) -> String {
    match value {
        AnyValue::String(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        AnyValue::Empty => String::new(),
        other => self::value(other).to_string(),
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

    #[test]
    fn renders_scalars_and_ids() {
        assert_eq!(value(AnyValue::String(b"a")), Value::from("a"));
        assert_eq!(value(AnyValue::Int(-3)), Value::from(-3));
        assert_eq!(value(AnyValue::Double(f64::NAN)), Value::Null);
        assert_eq!(text(AnyValue::Bool(true)), "true");
        assert_eq!(text(AnyValue::String(b"line")), "line");
        assert_eq!(hex(&[0x01, 0xab]), "01ab");
    }

    #[test]
    fn renders_nested_lists() {
        // ArrayValue { values: [AnyValue { int_value: 1 }, AnyValue { string_value: "x" }] }
        let array = [0x0a, 0x02, 0x18, 0x01, 0x0a, 0x03, 0x0a, 0x01, b'x'];
        assert_eq!(value(AnyValue::Array(&array)), serde_json::json!([1, "x"]));
        // KeyValueList { values: [KeyValue { key: "k", value: { bool_value: true } }] }
        let kvlist = [0x0a, 0x07, 0x0a, 0x01, b'k', 0x12, 0x02, 0x10, 0x01];
        assert_eq!(value(AnyValue::KvList(&kvlist)), serde_json::json!({"k": true}));
    }
}
