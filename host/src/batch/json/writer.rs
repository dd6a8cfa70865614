//! The JSON writer and the field readers the renderers share.
//!
//! Every value is written exactly as `serde_json` writes the owned messages (the renderer's
//! output must not change by a byte when it replaces them): strings go through `serde_json`'s
//! escaping unless they need none, floats through `serde_json` itself, integers through `itoa`,
//! IDs through `digits`, eight bytes at a time.

use sluice_wire::Fields;

use super::digits::hex8;
use crate::batch::fields::scalars;
pub(super) use crate::batch::fields::{
    NotCanonical, Run, Scalar, bytes, fixed32, fixed64, once, sint32, varint,
};

/// What every renderer returns.
pub(super) type Render = Result<(), NotCanonical>;

/// How deeply `AnyValue`s may nest (the reference decoder's recursion limit counts every
/// message level, so a checked request stays well inside it).
pub(super) const DEPTH_LIMIT: u32 = 100;

/// Appends JSON to a buffer.
pub(super) struct Writer<'o> {
    out: &'o mut Vec<u8>,
}

impl<'o> Writer<'o> {
    pub(super) fn new(out: &'o mut Vec<u8>) -> Self {
        Self { out }
    }

    /// How much has been written.
    pub(super) fn len(&self) -> usize {
        self.out.len()
    }

    /// Takes back what was written after `len`.
    pub(super) fn truncate(&mut self, len: usize) {
        self.out.truncate(len);
    }

    /// Literal JSON: punctuation and keys.
    #[inline]
    pub(super) fn raw(&mut self, json: &[u8]) {
        self.out.extend_from_slice(json);
    }

    /// A protobuf `string` as a JSON string.
    #[inline(always)]
    pub(super) fn string(&mut self, bytes: &[u8]) -> Render {
        // ASCII without control characters, quotes or backslashes (nearly every name and
        // attribute) is valid UTF-8 and escapes to itself.
        if is_plain(bytes) {
            self.append_quoted(bytes);
            return Ok(());
        }
        let text = std::str::from_utf8(bytes).map_err(|_| NotCanonical)?;
        serde_json::to_writer(&mut *self.out, text).map_err(|_| NotCanonical)
    }

    /// Bytes as lowercase hex in a JSON string (trace and span IDs).
    pub(super) fn hex(&mut self, bytes: &[u8]) {
        // Trace and span IDs (16 and 8 bytes) are written eight bytes' digits at a time, in one
        // copy.
        if let Ok(id) = <&[u8; 16]>::try_from(bytes) {
            let (high, low) = (hex8(id[..8].try_into().expect("8")), hex8(id[8..].try_into().expect("8")));
            self.append_pieces([b"\"", &high, &low, b"\""]);
        } else if let Ok(id) = <[u8; 8]>::try_from(bytes) {
            self.append_pieces([b"\"", &hex8(id), b"\""]);
        } else {
            self.out.push(b'"');
            self.out.extend_from_slice(hex::encode(bytes).as_bytes());
            self.out.push(b'"');
        }
    }

    /// Bytes as standard, padded base64 in a JSON string (`bytesValue`).
    pub(super) fn base64(&mut self, bytes: &[u8]) {
        use base64::Engine;
        let len = base64::encoded_len(bytes.len(), true).expect("a batch's bytes fit base64 in memory");
        self.out.push(b'"');
        let start = self.out.len();
        self.out.resize(start + len, 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(bytes, &mut self.out[start..])
            .expect("the slice is as long as the encoding");
        self.out.truncate(start + written);
        self.out.push(b'"');
    }

    /// An integer as a JSON number.
    #[inline]
    pub(super) fn int(&mut self, value: impl itoa::Integer) {
        self.append(itoa::Buffer::new().format(value).as_bytes());
    }

    /// An integer as a JSON string (OTLP/JSON writes 64-bit integers so), with one reservation.
    #[inline]
    pub(super) fn quoted(&mut self, value: impl itoa::Integer) {
        self.append_pieces([b"\"", itoa::Buffer::new().format(value).as_bytes(), b"\""]);
    }

    /// A double as a JSON number (`null` when not finite, as `serde_json` writes it).
    pub(super) fn float(&mut self, value: f64) {
        serde_json::to_writer(&mut *self.out, &value).expect("writing to a Vec cannot fail");
    }

    /// A double that may be NaN or infinite, those written as the strings OTLP/JSON names.
    pub(super) fn special_float(&mut self, value: f64) {
        match value {
            v if v.is_nan() => self.raw(b"\"NaN\""),
            f64::INFINITY => self.raw(b"\"Infinity\""),
            f64::NEG_INFINITY => self.raw(b"\"-Infinity\""),
            v => self.float(v),
        }
    }

    /// `true` or `false`.
    pub(super) fn bool(&mut self, value: bool) {
        self.raw(if value { b"true" } else { b"false" });
    }

    /// An optional double: the number, or `null`.
    pub(super) fn optional_float(&mut self, value: Option<f64>) {
        match value {
            Some(v) => self.float(v),
            None => self.raw(b"null"),
        }
    }

    /// An optional message rendered by `render`, or `null`.
    pub(super) fn optional<'a>(
        &mut self,
        message: Option<&'a [u8]>,
        render: impl FnOnce(&mut Self, &'a [u8]) -> Render,
    ) -> Render {
        match message {
            Some(bytes) => render(self, bytes),
            None => {
                self.raw(b"null");
                Ok(())
            }
        }
    }

    /// The messages of repeated field `number` in `run` of `buf`, as a JSON array.
    pub(super) fn list<'a>(
        &mut self,
        buf: &'a [u8],
        run: Run,
        number: u32,
        render: impl FnMut(&mut Self, &'a [u8]) -> Render,
    ) -> Render {
        self.out.push(b'[');
        self.items(run.of(buf), number, true, render)?;
        self.out.push(b']');
        Ok(())
    }

    /// The messages of repeated field `number` in `fields`, each written by `render` and
    /// separated by commas (one before the first too, unless `first`).
    pub(super) fn items<'a>(
        &mut self,
        fields: &'a [u8],
        number: u32,
        mut first: bool,
        mut render: impl FnMut(&mut Self, &'a [u8]) -> Render,
    ) -> Render {
        for field in Fields::new(fields) {
            let field = field?;
            if field.number == number {
                if !first {
                    self.out.push(b',');
                }
                first = false;
                render(self, bytes(&field)?)?;
            }
        }
        Ok(())
    }

    /// Appends `bytes`, up to 32 of them without a call (see [`copy_short`]).
    #[inline(always)]
    fn append(&mut self, bytes: &[u8]) {
        self.append_pieces([bytes]);
    }

    /// Appends `bytes` between double quotes.
    #[inline(always)]
    fn append_quoted(&mut self, bytes: &[u8]) {
        self.append_pieces([b"\"", bytes, b"\""]);
    }

    /// `{"key":"KEY","value":{"stringValue":"VALUE"}}`, for a key and value that need no
    /// escaping ([`is_plain`]): the attribute nearly every one is, written with one reservation.
    #[inline]
    pub(super) fn plain_string_attribute(&mut self, key: &[u8], value: &[u8]) {
        self.append_pieces([b"{\"key\":\"", key, b"\",\"value\":{\"stringValue\":\"", value, b"\"}}"]);
    }

    /// Appends `pieces` one after another with one reservation, each of up to 32 bytes copied
    /// without a call (see [`copy_short`]).
    #[inline(always)]
    #[allow(unsafe_code)] // copies into room reserved just before; see SAFETY
    fn append_pieces<const N: usize>(&mut self, pieces: [&[u8]; N]) {
        let len: usize = pieces.iter().map(|piece| piece.len()).sum();
        self.out.reserve(len);
        let start = self.out.len();
        // SAFETY: `reserve` made room for `len` bytes after `start`. The pieces add up to `len`
        // and are copied one after another into that room, so `set_len` covers only bytes
        // written here.
        unsafe {
            let mut at = self.out.as_mut_ptr().add(start);
            for piece in pieces {
                copy_short(piece, at);
                at = at.add(piece.len());
            }
            self.out.set_len(start + len);
        }
    }

    /// The 64-bit scalars of repeated field `number` in `run` of `buf`, packed or not, each
    /// written by `render`, as a JSON array.
    pub(super) fn scalars(
        &mut self,
        buf: &[u8],
        run: Run,
        number: u32,
        kind: Scalar,
        mut render: impl FnMut(&mut Self, u64),
    ) -> Render {
        self.out.push(b'[');
        let mut first = true;
        let mut each = |w: &mut Self, value: u64| {
            if !first {
                w.out.push(b',');
            }
            first = false;
            render(w, value);
        };
        for field in Fields::new(run.of(buf)) {
            let field = field?;
            if field.number == number {
                scalars(&field, kind, |value| each(self, value))?;
            }
        }
        self.out.push(b']');
        Ok(())
    }
}

/// Copies `src` to `dst`. Keys and values are a few dozen bytes at most, and a call to
/// `memcpy` for each was a sixth of the renderer's time: up to 32 bytes are copied inline, as
/// two overlapping loads and stores of the widest size that fits.
///
/// # Safety
/// `dst` must be valid for writes of `src.len()` bytes that do not overlap `src`.
#[inline(always)]
#[allow(unsafe_code)] // unaligned loads and stores within `src` and `dst`'s stated lengths
unsafe fn copy_short(src: &[u8], dst: *mut u8) {
    use std::ptr::{read_unaligned, write_unaligned};
    let (len, from) = (src.len(), src.as_ptr());
    // SAFETY: every load is of `len` bytes or fewer, starting inside `src` and ending at or
    // before its end; every store is at the same offsets of `dst`, which the caller
    // guarantees holds `len` bytes.
    unsafe {
        match len {
            0 => {}
            1..=3 => {
                *dst = src[0];
                *dst.add(len / 2) = src[len / 2];
                *dst.add(len - 1) = src[len - 1];
            }
            4..=7 => {
                let (head, tail) =
                    (read_unaligned(from.cast::<u32>()), read_unaligned(from.add(len - 4).cast::<u32>()));
                write_unaligned(dst.cast::<u32>(), head);
                write_unaligned(dst.add(len - 4).cast::<u32>(), tail);
            }
            8..=15 => {
                let (head, tail) =
                    (read_unaligned(from.cast::<u64>()), read_unaligned(from.add(len - 8).cast::<u64>()));
                write_unaligned(dst.cast::<u64>(), head);
                write_unaligned(dst.add(len - 8).cast::<u64>(), tail);
            }
            16..=32 => {
                let (head, tail) =
                    (read_unaligned(from.cast::<u128>()), read_unaligned(from.add(len - 16).cast::<u128>()));
                write_unaligned(dst.cast::<u128>(), head);
                write_unaligned(dst.add(len - 16).cast::<u128>(), tail);
            }
            _ => std::ptr::copy_nonoverlapping(from, dst, len),
        }
    }
}

/// Whether `bytes` are ASCII that JSON needs no escape for: no control character (below
/// 0x20), quote or backslash. Eight bytes at a time, as bit tricks over a word.
#[inline]
pub(super) fn is_plain(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `word` below `n` (n ≤ 128) sets its high bit here; so does a byte ≥ 0x80.
    let below = |word: u64, n: u64| word.wrapping_sub(ONES * n) & !word & HIGH;
    let escaped = |word: u64| {
        (word & HIGH)
            | below(word, 0x20)
            | below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1)
    };
    let word = |chunk: &[u8]| u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
    if bytes.len() < 8 {
        // Spaces (plain) where the string has no byte; built in a register, not through memory.
        let short = bytes.iter().enumerate().fold(ONES * u64::from(b' '), |word, (i, &b)| {
            word & !(0xff << (8 * i)) | u64::from(b) << (8 * i)
        });
        return escaped(short) == 0;
    }
    let mut chunks = bytes.chunks_exact(8);
    let whole = chunks.by_ref().fold(0, |found, chunk| found | escaped(word(chunk)));
    // The last eight bytes, overlapping the chunks: the remainder without a copy.
    whole | escaped(word(&bytes[bytes.len() - 8..])) == 0
}

#[cfg(test)]
mod tests {
    use super::{Writer, is_plain};

    #[test]
    fn ids_of_any_length_are_lowercase_hex() {
        for len in [0, 8, 16, 17, 40] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37) as u8).collect();
            let mut out = Vec::new();
            Writer::new(&mut out).hex(&bytes);
            assert_eq!(out, format!("\"{}\"", hex::encode(&bytes)).into_bytes(), "{len} bytes");
        }
    }

    #[test]
    fn plain_attributes_of_every_short_length_are_written_whole() {
        let text: Vec<u8> = (0..80u8).map(|i| b'a' + i % 26).collect();
        for key_len in 0..40 {
            for value_len in 0..70 {
                let (key, value) = (&text[..key_len], &text[10..10 + value_len]);
                let mut out = b"[".to_vec();
                Writer::new(&mut out).plain_string_attribute(key, value);
                let expected = format!(
                    "[{{\"key\":\"{}\",\"value\":{{\"stringValue\":\"{}\"}}}}",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(value)
                );
                assert_eq!(String::from_utf8_lossy(&out), expected, "key {key_len}, value {value_len}");
            }
        }
    }

    #[test]
    fn a_string_is_plain_exactly_when_no_byte_needs_an_escape_or_a_utf8_check() {
        let needs = |b: u8| !(0x20..0x80).contains(&b) || b == b'"' || b == b'\\';
        for len in [1, 7, 8, 9, 17] {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut text = vec![b'a'; len];
                    text[at] = byte;
                    assert_eq!(is_plain(&text), !needs(byte), "byte {byte:#x} at {at} of {len}");
                }
            }
        }
        assert!(is_plain(b""));
    }
}
