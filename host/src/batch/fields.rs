//! Readers of single protobuf fields, for the walks that read encoded requests in place of an
//! owned decode (the OTLP/JSON renderer, the Prometheus translation). Each takes exactly the
//! wire type the schema gives its field and leaves anything else to the owned decoder.

use sluice_wire::{Field, Value};

/// Why a request is left to the owned decoder: it is malformed, or it needs one of protobuf's
/// merge rules (a singular message field or a oneof given twice), which only a decoder that
/// builds the messages can apply.
#[derive(Debug)]
pub(crate) struct NotCanonical;

impl From<sluice_wire::Error> for NotCanonical {
    fn from(_: sluice_wire::Error) -> Self {
        NotCanonical
    }
}

/// The encodings of a repeated 64-bit scalar field.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scalar {
    /// `fixed64` and `double`.
    Fixed64,
    /// `uint64`.
    Varint,
}

/// Hands `each` the values of one occurrence of a repeated scalar field: one value, or a
/// packed run of them (decoders must take both).
pub(crate) fn scalars(
    field: &Field<'_>,
    kind: Scalar,
    mut each: impl FnMut(u64),
) -> Result<(), NotCanonical> {
    match (kind, field.value) {
        (Scalar::Fixed64, Value::Fixed64(v)) | (Scalar::Varint, Value::Varint(v)) => each(v),
        (Scalar::Fixed64, Value::Bytes(packed)) => {
            if packed.len() % 8 != 0 {
                return Err(NotCanonical);
            }
            for chunk in packed.chunks_exact(8) {
                each(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
            }
        }
        (Scalar::Varint, Value::Bytes(packed)) => {
            let mut pos = 0;
            while pos < packed.len() {
                each(sluice_wire::wire::read_varint(packed, &mut pos)?);
            }
        }
        _ => return Err(NotCanonical),
    }
    Ok(())
}

/// A length-delimited field's bytes.
#[inline]
pub(crate) fn bytes<'a>(field: &Field<'a>) -> Result<&'a [u8], NotCanonical> {
    match field.value {
        Value::Bytes(b) => Ok(b),
        _ => Err(NotCanonical),
    }
}

/// A varint field's value.
#[inline]
pub(crate) fn varint(field: &Field<'_>) -> Result<u64, NotCanonical> {
    match field.value {
        Value::Varint(v) => Ok(v),
        _ => Err(NotCanonical),
    }
}

/// A 64-bit fixed field's bits (`fixed64`, `sfixed64`, `double`).
#[inline]
pub(crate) fn fixed64(field: &Field<'_>) -> Result<u64, NotCanonical> {
    match field.value {
        Value::Fixed64(v) => Ok(v),
        _ => Err(NotCanonical),
    }
}

/// A 32-bit fixed field's bits.
#[inline]
pub(crate) fn fixed32(field: &Field<'_>) -> Result<u32, NotCanonical> {
    match field.value {
        Value::Fixed32(v) => Ok(v),
        _ => Err(NotCanonical),
    }
}

/// A `sint32` as the reference decoder reads it (zigzag over the low 32 bits).
pub(crate) fn sint32(field: &Field<'_>) -> Result<i32, NotCanonical> {
    let value = varint(field)? as u32;
    Ok(((value >> 1) as i32) ^ (-((value & 1) as i32)))
}

/// Sets a singular message field, which protobuf merges when it comes twice: that is left to
/// the owned decoder.
#[inline]
pub(crate) fn once<'a>(slot: &mut Option<&'a [u8]>, field: &Field<'a>) -> Result<(), NotCanonical> {
    if slot.is_some() {
        return Err(NotCanonical);
    }
    *slot = Some(bytes(field)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
    use prost::Message as _;
    use sluice_wire::Fields;
    use sluice_wire::wire::put_varint_field;

    use super::sint32;

    /// A `sint32` sent as a wider varint keeps its low 32 bits, as the reference decoder reads
    /// it (`Buckets.offset` is field 1).
    #[test]
    fn sint32_reads_as_the_reference_decoder_does() {
        for value in [0, 1, 2, 3, u64::from(u32::MAX), (1 << 32) | 3, u64::MAX] {
            let mut buf = Vec::new();
            put_varint_field(&mut buf, 1, value);
            let field = Fields::new(&buf).next().expect("a field").expect("well formed");
            let reference = Buckets::decode(buf.as_slice()).expect("decodes").offset;
            assert_eq!(sint32(&field).ok(), Some(reference), "{value:#x}");
        }
    }
}

/// Where the occurrences of a repeated field lie in a message: from the first one's tag to the
/// end of the last, so reading the list walks only that stretch (other fields may lie within it).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Run {
    start: usize,
    end: usize,
}

impl Run {
    /// All of `buf` (a message whose only field is the repeated one).
    pub(crate) fn whole(buf: &[u8]) -> Self {
        Self { start: 0, end: buf.len() }
    }

    /// Takes in one more occurrence.
    #[inline]
    pub(crate) fn add(&mut self, field: &Field<'_>) {
        if self.end == 0 {
            self.start = field.offset;
        }
        self.end = field.offset + field.raw.len();
    }

    /// The stretch of `buf` it covers.
    pub(crate) fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start..self.end]
    }
}
