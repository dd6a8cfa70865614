//! The protobuf wire format: tags, varints and a borrowing field iterator.
//!
//! Only the four wire types that proto3 emits are accepted; the deprecated group types (3 and 4)
//! are rejected as malformed, as are field number 0, truncated values and varints longer than
//! ten bytes.

use std::fmt;

/// Why a buffer is not valid protobuf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    /// Byte offset into the walked message where the problem starts.
    pub offset: usize,
    /// What is wrong there.
    pub kind: ErrorKind,
}

/// The ways a protobuf buffer can be malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A value runs past the end of its enclosing message.
    Truncated,
    /// A varint has more than ten bytes.
    VarintTooLong,
    /// A tag carries a wire type proto3 never emits (groups or 6/7).
    BadWireType(u8),
    /// A tag carries field number zero.
    ZeroFieldNumber,
    /// A field holds a wire type its schema doesn't allow (e.g. a varint where a message is due).
    UnexpectedWireType {
        /// The field number.
        field: u32,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Truncated => write!(f, "truncated value at byte {}", self.offset),
            ErrorKind::VarintTooLong => write!(f, "varint longer than 10 bytes at byte {}", self.offset),
            ErrorKind::BadWireType(t) => write!(f, "invalid wire type {t} at byte {}", self.offset),
            ErrorKind::ZeroFieldNumber => write!(f, "field number 0 at byte {}", self.offset),
            ErrorKind::UnexpectedWireType { field } => {
                write!(f, "field {field} has the wrong wire type at byte {}", self.offset)
            }
        }
    }
}

impl std::error::Error for Error {}

/// One field's value, borrowed from the buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// Wire type 0: int32/64, uint32/64, sint, bool and enums.
    Varint(u64),
    /// Wire type 1: fixed64, sfixed64 and double.
    Fixed64(u64),
    /// Wire type 2: strings, bytes, embedded messages and packed repeated fields.
    Bytes(&'a [u8]),
    /// Wire type 5: fixed32, sfixed32 and float.
    Fixed32(u32),
}

/// One field of a message: its number, its value and where the value starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Field<'a> {
    /// The field number from the tag.
    pub number: u32,
    /// The value.
    pub value: Value<'a>,
    /// Byte offset of the tag within the walked message (for error reports and splicing).
    pub offset: usize,
    /// The whole encoded field — tag, length prefix and value — for copying it verbatim.
    pub raw: &'a [u8],
}

impl<'a> Field<'a> {
    /// The value as a length-delimited slice, or an error naming the field.
    pub fn bytes(&self) -> Result<&'a [u8], Error> {
        match self.value {
            Value::Bytes(b) => Ok(b),
            _ => Err(self.unexpected()),
        }
    }

    /// The value as a varint, or an error naming the field.
    pub fn varint(&self) -> Result<u64, Error> {
        match self.value {
            Value::Varint(v) => Ok(v),
            _ => Err(self.unexpected()),
        }
    }

    fn unexpected(&self) -> Error {
        Error { offset: self.offset, kind: ErrorKind::UnexpectedWireType { field: self.number } }
    }
}

/// Iterates the fields of one message without allocating.
///
/// After the first error the iterator yields that error once and then ends.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    /// Walks the fields of the message encoded in `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0, failed: false }
    }

    #[inline]
    fn read_varint(&mut self) -> Result<u64, Error> {
        // Tags and the lengths of small fields fit in one byte: take that path without the loop.
        if let Some(&byte) = self.buf.get(self.pos)
            && byte < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(byte));
        }
        self.read_long_varint()
    }

    #[cold]
    fn read_long_varint(&mut self) -> Result<u64, Error> {
        let start = self.pos;
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(Error { offset: start, kind: ErrorKind::Truncated });
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Error { offset: start, kind: ErrorKind::VarintTooLong })
    }

    fn take(&mut self, len: usize, offset: usize) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.buf.len())
            .ok_or(Error { offset, kind: ErrorKind::Truncated })?;
        let slice = &self.buf[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn next_field(&mut self) -> Result<Field<'a>, Error> {
        let offset = self.pos;
        let tag = self.read_varint()?;
        let number = u32::try_from(tag >> 3).map_err(|_| Error { offset, kind: ErrorKind::Truncated })?;
        if number == 0 {
            return Err(Error { offset, kind: ErrorKind::ZeroFieldNumber });
        }
        let value = match (tag & 7) as u8 {
            0 => Value::Varint(self.read_varint()?),
            1 => {
                let raw = self.take(8, offset)?;
                Value::Fixed64(u64::from_le_bytes(raw.try_into().expect("8 bytes")))
            }
            2 => {
                let len = self.read_varint()?;
                let len = usize::try_from(len).map_err(|_| Error { offset, kind: ErrorKind::Truncated })?;
                Value::Bytes(self.take(len, offset)?)
            }
            5 => {
                let raw = self.take(4, offset)?;
                Value::Fixed32(u32::from_le_bytes(raw.try_into().expect("4 bytes")))
            }
            other => return Err(Error { offset, kind: ErrorKind::BadWireType(other) }),
        };
        Ok(Field { number, value, offset, raw: &self.buf[offset..self.pos] })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let field = self.next_field();
        self.failed = field.is_err();
        Some(field)
    }
}

/// Appends `value` as a varint.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The encoded size of `value` as a varint.
pub fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends a length-delimited field (a string, bytes or an embedded message).
pub fn put_bytes_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The encoded size of a length-delimited field holding `len` bytes.
pub fn bytes_field_len(number: u32, len: usize) -> usize {
    varint_len((u64::from(number) << 3) | 2) + varint_len(len as u64) + len
}

/// Appends a varint field.
pub fn put_varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, value);
}

/// Appends a fixed64 field.
pub fn put_fixed64_field(out: &mut Vec<u8>, number: u32, value: u64) {
    put_varint(out, (u64::from(number) << 3) | 1);
    out.extend_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_every_wire_type() {
        // field 1 varint 150, field 2 bytes "hi", field 3 fixed64 7, field 4 fixed32 9
        let buf = [0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i', 0x19, 7, 0, 0, 0, 0, 0, 0, 0, 0x25, 9, 0, 0, 0];
        let fields: Vec<_> = Fields::new(&buf).collect::<Result<_, _>>().expect("valid");
        assert_eq!(fields[0].value, Value::Varint(150));
        assert_eq!(fields[1].value, Value::Bytes(b"hi"));
        assert_eq!(fields[2].value, Value::Fixed64(7));
        assert_eq!(fields[3].value, Value::Fixed32(9));
    }

    #[test]
    fn rejects_truncation_groups_and_field_zero() {
        let truncated = [0x12, 0x05, b'h'];
        assert_eq!(
            Fields::new(&truncated).last().map(|r| r.map_err(|e| e.kind)),
            Some(Err(ErrorKind::Truncated))
        );
        let group = [0x0b];
        assert_eq!(
            Fields::new(&group).next().map(|r| r.map_err(|e| e.kind)),
            Some(Err(ErrorKind::BadWireType(3)))
        );
        let zero = [0x00, 0x01];
        assert_eq!(
            Fields::new(&zero).next().map(|r| r.map_err(|e| e.kind)),
            Some(Err(ErrorKind::ZeroFieldNumber))
        );
        let long = [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(
            Fields::new(&long).next().map(|r| r.map_err(|e| e.kind)),
            Some(Err(ErrorKind::VarintTooLong))
        );
    }

    #[test]
    fn writes_what_it_reads() {
        let mut out = Vec::new();
        put_varint_field(&mut out, 1, 300);
        put_bytes_field(&mut out, 2, b"abc");
        put_fixed64_field(&mut out, 3, 9);
        let fields: Vec<_> = Fields::new(&out).collect::<Result<_, _>>().expect("valid");
        assert_eq!(fields[0].value, Value::Varint(300));
        assert_eq!(fields[1].value, Value::Bytes(b"abc"));
        assert_eq!(fields[1].raw, &[0x12, 3, b'a', b'b', b'c']);
        assert_eq!(fields[2].value, Value::Fixed64(9));
        assert_eq!(bytes_field_len(2, 3), 5);
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v), "{v}");
        }
    }

    #[test]
    fn stops_after_the_first_error() {
        let buf = [0x0b, 0x08, 0x01];
        assert_eq!(Fields::new(&buf).count(), 1);
    }
}
