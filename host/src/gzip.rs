//! Gzip for whole request bodies, the exporters' one compressor.
//!
//! Built with the `isal` feature (the Makefile turns it on where `nasm` and autotools are
//! installed, and the container image always has it), bodies go through ISA-L's igzip at level 1:
//! on the load generator's batches it takes 0.64 µs per span where zlib-rs's fastest level takes
//! 1.1 µs, and its output is a fifth smaller (docs/BENCHMARKS.md, `--example compress_cost`).
//! Without it, zlib-rs at level 1. Both write standard gzip that any receiver reads.

/// Which compressor this build uses, for the start-up log.
pub const ENGINE: &str = if cfg!(feature = "isal") { "ISA-L igzip, level 1" } else { "zlib-rs, level 1" };

/// `data` as one gzip member.
pub fn compress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    compress_parts(&[data], &mut out)?;
    Ok(out)
}

/// `parts`, one after the other, as one gzip member appended to `out` (which may already hold
/// a frame's prefix): merged requests are compressed without first being copied together.
pub fn compress_parts(parts: &[&[u8]], out: &mut Vec<u8>) -> std::io::Result<()> {
    #[cfg(feature = "isal")]
    if igzip::compress_parts(parts, out).is_some() {
        return Ok(());
    }
    zlib_parts(parts, out)
}

/// `data` through zlib-rs at its fastest level.
pub fn zlib(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    zlib_parts(&[data], &mut out)?;
    Ok(out)
}

fn zlib_parts(parts: &[&[u8]], out: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::Write;
    let total: usize = parts.iter().map(|part| part.len()).sum();
    out.reserve(total / 3);
    let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    for part in parts {
        encoder.write_all(part)?;
    }
    encoder.finish().map(|_| ())
}

#[cfg(feature = "isal")]
mod igzip {
    use std::cell::RefCell;
    use std::mem::MaybeUninit;

    use isal::isal_sys::igzip_lib as ffi;

    /// Level 1's working memory at ISA-L's default size (`--example compress_cost` measured the
    /// smaller sizes no faster on 100-span batches, and the smallest twice as slow).
    const LEVEL_BUFFER: usize = ffi::ISAL_DEF_LVL1_DEFAULT as usize;

    thread_local! {
        /// One working buffer per thread, reused: allocating and zeroing it per call costs
        /// more than compressing a small batch.
        static LEVEL_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; LEVEL_BUFFER]);
    }

    /// `parts` as one gzip member appended to `out`, or `None` (and `out` as it was) when ISA-L
    /// refused; the caller then falls back to zlib-rs.
    #[allow(unsafe_code)] // a C library's calls; what they are given is checked below
    pub fn compress_parts(parts: &[&[u8]], out: &mut Vec<u8>) -> Option<()> {
        let total: usize = parts.iter().map(|part| part.len()).sum();
        // Incompressible input is stored: 5 bytes per 64 KiB block, plus gzip's 18-byte frame.
        let bound = total + total / 16_000 * 5 + 1024;
        let avail_out = u32::try_from(bound).ok()?;
        let start = out.len();
        out.reserve(bound);
        let written = LEVEL_BUF.with_borrow_mut(|level_buf| {
            let mut stream = MaybeUninit::<ffi::isal_zstream>::uninit();
            // SAFETY: `isal_deflate_init` initialises every field of the stream. Every pointer
            // handed to ISA-L outlives the calls: the parts, `out`'s spare capacity (at least
            // `bound` bytes, reserved above) and the level buffer, each with its own length.
            unsafe {
                ffi::isal_deflate_init(stream.as_mut_ptr());
                let stream = stream.assume_init_mut();
                stream.level = 1;
                stream.level_buf = level_buf.as_mut_ptr();
                stream.level_buf_size = level_buf.len() as u32;
                stream.gzip_flag = ffi::IGZIP_GZIP as u16;
                stream.flush = ffi::NO_FLUSH as u16;
                stream.next_out = out.as_mut_ptr().add(start);
                stream.avail_out = avail_out;
                let last = parts.len().saturating_sub(1);
                for (i, part) in parts.iter().copied().chain(parts.is_empty().then_some(&[][..])).enumerate()
                {
                    stream.next_in = part.as_ptr().cast_mut();
                    stream.avail_in = u32::try_from(part.len()).ok()?;
                    stream.end_of_stream = u16::from(i == last);
                    loop {
                        if ffi::isal_deflate(stream) != ffi::COMP_OK as i32 {
                            return None;
                        }
                        let done = if i == last {
                            stream.internal_state.state == ffi::isal_zstate_state_ZSTATE_END
                        } else {
                            stream.avail_in == 0
                        };
                        if done {
                            break;
                        }
                        if stream.avail_out == 0 {
                            return None;
                        }
                    }
                }
                Some(stream.total_out as usize)
            }
        })?;
        // SAFETY: ISA-L wrote `written` bytes (at most the `bound` reserved) after `start`.
        #[allow(unsafe_code)]
        unsafe {
            out.set_len(start + written)
        };
        Some(())
    }
}

/// What the receivers make of `data`, for tests that check what was compressed.
#[cfg(test)]
pub(crate) fn gunzip(data: &[u8]) -> Vec<u8> {
    use crate::receivers::otlp::compression::{Encoding, decompress};
    let body = bytes::Bytes::copy_from_slice(data);
    decompress(Encoding::Gzip, body, usize::MAX - 1).expect("valid gzip").to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_compressed_comes_back() {
        let text: Vec<u8> =
            (0..300_000u32).flat_map(|i| format!("span {} attribute {}\n", i % 97, i).into_bytes()).collect();
        // Incompressible bytes too: a xorshift stream.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..200_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        for data in [&b""[..], b"x", &text, &noise, &text[..70_000]] {
            let compressed = compress(data).expect("compresses");
            assert_eq!(gunzip(&compressed), data, "{} bytes", data.len());
        }
        // In parts, after a prefix: one member holding the parts in order, the prefix untouched.
        let parts = [&text[..1000], &b""[..], &noise[..50_000], &text[1000..200_000]];
        let mut out = b"head!".to_vec();
        compress_parts(&parts, &mut out).expect("compresses");
        assert_eq!(&out[..5], b"head!");
        assert_eq!(gunzip(&out[5..]), parts.concat());
        let mut empty = Vec::new();
        compress_parts(&[], &mut empty).expect("compresses");
        assert!(gunzip(&empty).is_empty());
        // zlib-rs, the fallback and the build without ISA-L, whichever this build uses.
        assert_eq!(gunzip(&zlib(&noise).expect("compresses")), noise);
        let mut zlib_out = b"head!".to_vec();
        zlib_parts(&parts, &mut zlib_out).expect("compresses");
        assert_eq!(gunzip(&zlib_out[5..]), parts.concat());
        assert!(compress(&text).expect("compresses").len() < text.len() / 3);
    }
}
