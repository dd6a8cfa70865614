//! The protobuf wire format: tags, varints and a borrowing field iterator.
//!
//! The rules are the reference decoder's (prost): field number 0, keys past 32 bits, wire types
//! 6 and 7, truncated values, varints longer than ten bytes or past 64 bits, and an end-group tag
//! without its start are malformed. A deprecated group (wire types 3 and 4), which no proto3
//! encoder writes but decoders skip, is read as one field, [`Value::Group`].

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
    /// A varint's ten bytes hold more than 64 bits.
    VarintOverflow,
    /// A tag's varint is wider than 32 bits.
    KeyTooLarge,
    /// An end-group tag with no group open, or closing another field's group.
    UnmatchedEndGroup,
    /// A `string` field holds bytes that are not UTF-8.
    InvalidUtf8 {
        /// The field number.
        field: u32,
    },
    /// Messages (or groups) nested deeper than the reference decoder's recursion limit.
    TooDeep,
    /// A packed repeated field's length is not a whole number of its elements.
    BadPackedLength {
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
            ErrorKind::VarintOverflow => write!(f, "varint past 64 bits at byte {}", self.offset),
            ErrorKind::KeyTooLarge => write!(f, "field key wider than 32 bits at byte {}", self.offset),
            ErrorKind::UnmatchedEndGroup => write!(f, "unmatched end-group tag at byte {}", self.offset),
            ErrorKind::InvalidUtf8 { field } => {
                write!(f, "string field {field} is not valid UTF-8 at byte {}", self.offset)
            }
            ErrorKind::TooDeep => write!(f, "messages nested too deeply at byte {}", self.offset),
            ErrorKind::BadPackedLength { field } => {
                write!(f, "packed field {field} has a partial element at byte {}", self.offset)
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
    /// Wire types 3 and 4: a deprecated group, its fields between the start and end tags.
    Group(&'a [u8]),
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
        read_varint(self.buf, &mut self.pos)
    }

    fn take(&mut self, len: usize, offset: usize) -> Result<&'a [u8], Error> {
        take(self.buf, &mut self.pos, len, offset)
    }

    #[inline(always)]
    fn next_field(&mut self) -> Result<Field<'a>, Error> {
        let offset = self.pos;
        let (number, wire_type) = read_key(self.buf, &mut self.pos)?;
        let value = match wire_type {
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
            3 => {
                let start = self.pos;
                let end = skip_group(self.buf, &mut self.pos, number, GROUP_DEPTH_LIMIT)?;
                Value::Group(&self.buf[start..end])
            }
            4 => return Err(Error { offset, kind: ErrorKind::UnmatchedEndGroup }),
            _ => {
                let raw = self.take(4, offset)?;
                Value::Fixed32(u32::from_le_bytes(raw.try_into().expect("4 bytes")))
            }
        };
        Ok(Field { number, value, offset, raw: &self.buf[offset..self.pos] })
    }

    /// The value of the next length-delimited field numbered `number`, stepping over the
    /// fields before it: what `find` over the iterator gives, but without building a [`Field`]
    /// for each field passed. Nearly every field of a span is short and length-delimited (IDs,
    /// names, attributes), with a one-byte tag and length: those are stepped over in a few
    /// comparisons. A field numbered `number` of another wire type is an error, as
    /// [`Field::bytes`] says.
    #[inline]
    pub fn next_bytes_of(&mut self, number: u32) -> Option<Result<&'a [u8], Error>> {
        let wanted = u64::from(number) << 3 | 2;
        while !self.failed && self.pos < self.buf.len() {
            if let [tag, len, ..] = self.buf[self.pos..]
                && tag < 0x80
                && tag & 7 == 2
                && tag >= 8
                && len < 0x80
            {
                let start = self.pos + 2;
                let end = start + usize::from(len);
                if end <= self.buf.len() {
                    self.pos = end;
                    if u64::from(tag) == wanted {
                        return Some(Ok(&self.buf[start..end]));
                    }
                    continue;
                }
            }
            match self.next_field() {
                Ok(field) if field.number == number => return Some(field.bytes()),
                Ok(_) => {}
                Err(error) => {
                    self.failed = true;
                    return Some(Err(error));
                }
            }
        }
        None
    }
}

/// How deep groups may nest inside one another when [`Fields`] steps over them (the reference
/// decoder's recursion limit; a checked request never comes near it).
const GROUP_DEPTH_LIMIT: u32 = 100;

/// Reads a varint at `*pos`, as the reference decoder does: at most ten bytes, and the tenth
/// may carry only the 64th bit. Advances `*pos` past it.
#[inline]
pub fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, Error> {
    // Tags and the lengths of small fields fit in one byte: take that path without the loop.
    if let Some(&byte) = buf.get(*pos)
        && byte < 0x80
    {
        *pos += 1;
        return Ok(u64::from(byte));
    }
    read_long_varint(buf, pos)
}

#[cold]
fn read_long_varint(buf: &[u8], pos: &mut usize) -> Result<u64, Error> {
    let start = *pos;
    let mut value: u64 = 0;
    for i in 0..10 {
        let Some(&byte) = buf.get(*pos) else {
            return Err(Error { offset: start, kind: ErrorKind::Truncated });
        };
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // The tenth byte holds only the 64th bit.
            if i == 9 && byte > 1 {
                return Err(Error { offset: start, kind: ErrorKind::VarintOverflow });
            }
            return Ok(value);
        }
    }
    Err(Error { offset: start, kind: ErrorKind::VarintTooLong })
}

/// Reads a field's key at `*pos`: its number and wire type (0 to 5).
#[inline]
pub(crate) fn read_key(buf: &[u8], pos: &mut usize) -> Result<(u32, u8), Error> {
    let offset = *pos;
    let key = read_varint(buf, pos)?;
    let key = u32::try_from(key).map_err(|_| Error { offset, kind: ErrorKind::KeyTooLarge })?;
    let (number, wire_type) = (key >> 3, (key & 7) as u8);
    if wire_type > 5 {
        return Err(Error { offset, kind: ErrorKind::BadWireType(wire_type) });
    }
    if number == 0 {
        return Err(Error { offset, kind: ErrorKind::ZeroFieldNumber });
    }
    Ok((number, wire_type))
}

/// Takes the next `len` bytes at `*pos`; `offset` is where the field they belong to starts.
#[inline]
pub(crate) fn take<'a>(buf: &'a [u8], pos: &mut usize, len: usize, offset: usize) -> Result<&'a [u8], Error> {
    let end = pos
        .checked_add(len)
        .filter(|&end| end <= buf.len())
        .ok_or(Error { offset, kind: ErrorKind::Truncated })?;
    let slice = &buf[*pos..end];
    *pos = end;
    Ok(slice)
}

/// Steps over the fields of group `number`, whose start tag has just been read, and its end
/// tag; returns where its fields end (the end tag's offset). `depth` is how many levels may
/// still open: each field inside needs one, as the reference decoder counts them.
pub(crate) fn skip_group(buf: &[u8], pos: &mut usize, number: u32, depth: u32) -> Result<usize, Error> {
    loop {
        let offset = *pos;
        if offset >= buf.len() {
            return Err(Error { offset, kind: ErrorKind::Truncated });
        }
        let (inner, wire_type) = read_key(buf, pos)?;
        if wire_type == 4 {
            if inner == number {
                return Ok(offset);
            }
            return Err(Error { offset, kind: ErrorKind::UnmatchedEndGroup });
        }
        if depth == 0 {
            return Err(Error { offset, kind: ErrorKind::TooDeep });
        }
        match wire_type {
            0 => {
                read_varint(buf, pos)?;
            }
            1 => {
                take(buf, pos, 8, offset)?;
            }
            2 => {
                let len = read_varint(buf, pos)?;
                let len = usize::try_from(len).map_err(|_| Error { offset, kind: ErrorKind::Truncated })?;
                take(buf, pos, len, offset)?;
            }
            3 => {
                skip_group(buf, pos, inner, depth - 1)?;
            }
            _ => {
                take(buf, pos, 4, offset)?;
            }
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, Error>;

    #[inline]
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

    /// `next_bytes_of` finds what the plain walk finds, errors included, on every prefix of a
    /// message mixing short and long fields, groups and damage.
    #[test]
    fn next_bytes_of_finds_what_the_walk_finds() {
        let long = [b'x'; 200];
        let mut buf = vec![0x08, 0x96, 0x01, 0x0a, 0x02, b'h', b'i', 0x12, 0xc8, 0x01];
        buf.extend_from_slice(&long);
        buf.extend_from_slice(&[0x0b, 0x10, 0x05, 0x0c, 0x12, 0x01, b'a', 0x19, 7, 0, 0, 0, 0, 0, 0, 0]);
        buf.extend_from_slice(&[0x0a, 0x00, 0x10, 0x02, 0x02, 0x01, 0x00, 0x12, 0x05, b'b']);
        for end in 0..=buf.len() {
            let message = &buf[..end];
            for number in [1, 2, 3, 0] {
                let walked: Vec<Result<&[u8], Error>> = {
                    let mut fields = Fields::new(message);
                    std::iter::from_fn(|| match fields.next()? {
                        Ok(field) if field.number != number => Some(None),
                        Ok(field) => Some(Some(field.bytes())),
                        Err(error) => Some(Some(Err(error))),
                    })
                    .flatten()
                    .collect()
                };
                let mut fields = Fields::new(message);
                let found: Vec<_> = std::iter::from_fn(|| fields.next_bytes_of(number)).collect();
                assert_eq!(found, walked, "field {number} of the first {end} bytes");
            }
        }
    }

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
    fn steps_over_groups_and_refuses_stray_end_tags() {
        // field 1 group { field 2 varint 5, field 3 group {} }, then field 4 varint 1
        let buf = [0x0b, 0x10, 0x05, 0x1b, 0x1c, 0x0c, 0x20, 0x01];
        let fields: Vec<_> = Fields::new(&buf).collect::<Result<_, _>>().expect("valid");
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[0].value, Value::Group(&[0x10, 0x05, 0x1b, 0x1c]));
        assert_eq!(fields[1].value, Value::Varint(1));
        for bad in [&[0x0c][..], &[0x0b, 0x14], &[0x0b, 0x10, 0x05]] {
            assert!(Fields::new(bad).any(|f| f.is_err()), "{bad:?}");
        }
    }

    #[test]
    fn refuses_what_the_reference_decoder_refuses() {
        let overflow = [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(
            Fields::new(&overflow).next().map(|r| r.map_err(|e| e.kind)),
            Some(Err(ErrorKind::VarintOverflow))
        );
        let max = [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(Fields::new(&max).next().map(|r| r.map(|f| f.value)), Some(Ok(Value::Varint(u64::MAX))));
        // A key of 2^32 (field 2^29, varint): wider than 32 bits.
        let wide = [0x80, 0x80, 0x80, 0x80, 0x10, 0x00];
        assert_eq!(
            Fields::new(&wide).next().map(|r| r.map_err(|e| e.kind)),
            Some(Err(ErrorKind::KeyTooLarge))
        );
    }

    #[test]
    fn rejects_truncation_bad_wire_types_and_field_zero() {
        let truncated = [0x12, 0x05, b'h'];
        assert_eq!(
            Fields::new(&truncated).last().map(|r| r.map_err(|e| e.kind)),
            Some(Err(ErrorKind::Truncated))
        );
        let wire_type_six = [0x0e];
        assert_eq!(
            Fields::new(&wire_type_six).next().map(|r| r.map_err(|e| e.kind)),
            Some(Err(ErrorKind::BadWireType(6)))
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
        let buf = [0x0e, 0x08, 0x01];
        assert_eq!(Fields::new(&buf).count(), 1);
    }
}
