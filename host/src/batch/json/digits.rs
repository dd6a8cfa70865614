//! Hex digits of trace and span IDs, a 64-bit word of digits at a time.
//!
//! Every span carries 32 bytes of IDs. Looked up a byte at a time in a table of digit pairs,
//! they were 7% of the renderer's time; here four bytes' eight digits are computed in one
//! register with shifts, masks and adds over all its lanes at once, and stored with one write.

/// `0x0101…01`: one in every byte.
const BYTE_ONES: u64 = 0x0101_0101_0101_0101;

/// The lowercase hex digits of `bytes`, two per byte, most significant nibble first.
#[inline]
pub(super) fn hex8(bytes: [u8; 8]) -> [u8; 16] {
    let word = u64::from_le_bytes(bytes);
    let mut digits = [0; 16];
    digits[..8].copy_from_slice(&hex4(word as u32).to_le_bytes());
    digits[8..].copy_from_slice(&hex4((word >> 32) as u32).to_le_bytes());
    digits
}

/// The eight hex digits of the four bytes of `word` (little-endian), as ASCII in a word whose
/// bytes, little-endian, are the digits in writing order.
#[inline]
fn hex4(word: u32) -> u64 {
    // Byte i to bits 16i..16i+8: each byte gets a 16-bit lane for its two digits.
    let spread = u64::from(word);
    let spread = (spread | spread << 16) & 0x0000_ffff_0000_ffff;
    let spread = (spread | spread << 8) & 0x00ff_00ff_00ff_00ff;
    // The high nibble to the lane's low byte (written first), the low nibble to its high byte.
    let nibbles = (spread >> 4 & 0x000f_000f_000f_000f) | (spread & 0x000f_000f_000f_000f) << 8;
    // A nibble of 10 or more carries into bit 4 once 6 is added: those take 'a' - 10, not '0'.
    let letters = (nibbles + 6 * BYTE_ONES) >> 4 & BYTE_ONES;
    nibbles + u64::from(b'0') * BYTE_ONES + letters * u64::from(b'a' - b'0' - 10)
}

#[cfg(test)]
mod tests {
    use super::hex8;

    /// A spread of 64-bit words, every nibble value in every position among them.
    fn samples() -> impl Iterator<Item = u64> {
        (0..10_000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).chain([
            0,
            u64::MAX,
            0x0123_4567_89ab_cdef,
        ])
    }

    #[test]
    fn hex_digits_are_lowercase_and_in_byte_order() {
        for seed in samples() {
            let bytes = seed.to_le_bytes();
            assert_eq!(hex8(bytes), hex::encode(bytes).as_bytes(), "{bytes:?}");
        }
        for byte in 0..=255u8 {
            assert_eq!(hex8([byte; 8]), hex::encode([byte; 8]).as_bytes(), "{byte}");
        }
    }
}
