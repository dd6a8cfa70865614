//! Gzip for whole request bodies: the exporters' one compressor and the receivers' one
//! decompressor.
//!
//! Built with the `isal` feature (the Makefile turns it on where `nasm` and autotools are
//! installed, and the container image always has it), bodies go through ISA-L's igzip at level 1:
//! on the load generator's batches it takes 0.64 µs per span where zlib-rs's fastest level takes
//! 1.1 µs, and its output is a fifth smaller (docs/BENCHMARKS.md, `--example compress_cost`).
//! Received bodies are inflated by igzip too (zlib-rs's inflate was a third of a host forwarding
//! gzipped requests). Without the feature, zlib-rs both ways. Both write standard gzip that any
//! receiver reads, and read what any sender writes (one member or several).

pub mod splice;

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
    if igzip::compress_parts(parts, out, igzip::Ending::Member).is_some() {
        return Ok(());
    }
    zlib_parts(parts, out)
}

/// `data` as one gzip member, with its map for [`splice::join`] known without inflating it: the
/// data is compressed and sync-flushed (so it ends on a byte), and an empty final block and the
/// trailer follow. A few bytes larger than [`compress`]'s; what a disk queue stores for an
/// exporter that sends gzip, so that the exporter joins or sends it without compressing again.
pub fn compress_joinable(data: &[u8]) -> std::io::Result<(Vec<u8>, splice::Member)> {
    let mut out = Vec::new();
    out.extend_from_slice(&splice::PLAIN_HEADER);
    #[cfg(feature = "isal")]
    let flushed = igzip::compress_parts(&[data], &mut out, igzip::Ending::Flushed).is_some();
    #[cfg(not(feature = "isal"))]
    let flushed = false;
    if !flushed {
        out.truncate(splice::PLAIN_HEADER.len());
        zlib_flushed(data, &mut out)?;
    }
    let crc = crc32fast::hash(data);
    let member = splice::Member::end_flushed(&mut out, splice::PLAIN_HEADER.len(), crc, data.len() as u64);
    Ok((out, member))
}

/// `data` as raw deflate data through zlib-rs at its fastest level, appended to `out` and
/// sync-flushed to a byte boundary, without a final block.
fn zlib_flushed(data: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut deflate = flate2::Compress::new(flate2::Compression::fast(), false);
    out.reserve(data.len() / 3 + 64);
    loop {
        let consumed = usize::try_from(deflate.total_in()).unwrap_or(usize::MAX);
        deflate
            .compress_vec(&data[consumed..], out, flate2::FlushCompress::Sync)
            .map_err(std::io::Error::other)?;
        // The flush is complete once all input is taken and the output did not fill up.
        if deflate.total_in() == data.len() as u64 && out.len() < out.capacity() {
            return Ok(());
        }
        out.reserve(out.capacity().max(4096));
    }
}

/// Why a gzip body was not decompressed.
#[derive(Debug, thiserror::Error)]
pub enum GunzipError {
    /// It decompresses to more than the limit (only `limit + 1` bytes were produced).
    #[error("decompressed body exceeds the limit")]
    TooLarge,
    /// It is not valid gzip: a bad header, bad data, a wrong checksum, cut short, or followed by
    /// something that is not another member.
    #[error("{0}")]
    Corrupt(std::io::Error),
}

/// `body` (one gzip member or several, concatenated) decompressed, or an error as soon as the
/// output would exceed `limit` bytes: a small body that expands to gigabytes (a zip bomb) costs
/// at most `limit + 1` bytes of output.
pub fn gunzip_limited(body: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
    #[cfg(feature = "isal")]
    if let Some(result) = igzip::gunzip_limited(body, limit) {
        return result;
    }
    zlib_gunzip_limited(body, limit)
}

fn zlib_gunzip_limited(body: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
    use std::io::Read;
    let mut out = Vec::with_capacity(first_capacity(body, limit));
    let decoder = flate2::read::MultiGzDecoder::new(body);
    decoder.take((limit as u64).saturating_add(1)).read_to_end(&mut out).map_err(GunzipError::Corrupt)?;
    if out.len() > limit {
        return Err(GunzipError::TooLarge);
    }
    Ok(fitted(out))
}

/// Room for a body's output at first: what its gzip trailer says (the size of its last member,
/// exact for the usual one), where deflate could expand that far (at most 1032:1); otherwise
/// OTLP's usual fourfold. Never past the limit. Growing mid-inflate would cost a copy of the
/// output and, in ISA-L, of its 32 KiB window per call.
fn first_capacity(body: &[u8], limit: usize) -> usize {
    let stated = body
        .len()
        .checked_sub(4)
        .and_then(|at| body[at..].try_into().ok())
        .map(|size: [u8; 4]| u32::from_le_bytes(size) as usize)
        .filter(|&size| size <= body.len().saturating_mul(1032));
    stated.map_or(body.len().saturating_mul(4), |size| size.saturating_add(1)).min(limit.saturating_add(1))
}

/// Room for an inflate's next write into `out`: when it is full, it grows by its size (at least
/// 4 KiB, never past `limit + 1` bytes in all). Returns the spare bytes, up to a 32-bit count.
fn make_room(out: &mut Vec<u8>, limit: usize) -> Result<u32, GunzipError> {
    if out.len() == out.capacity() {
        within_limit(out, limit)?;
        let room = out.capacity().max(4096).min(limit.saturating_add(1) - out.len());
        out.reserve_exact(room);
    }
    Ok((out.capacity() - out.len()).min(u32::MAX as usize) as u32)
}

/// Refuses an output past the limit as such, whatever the stream holds after it (a reader that
/// stops at `limit + 1` bytes never sees a later error).
fn within_limit(out: &[u8], limit: usize) -> Result<(), GunzipError> {
    if out.len() > limit {
        return Err(GunzipError::TooLarge);
    }
    Ok(())
}

/// A body that is not valid gzip, and why.
fn corrupt(what: &str) -> GunzipError {
    GunzipError::Corrupt(std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string()))
}

/// `out` without much unused room: a trailer that overstated the size must not leave a queued
/// batch holding memory it does not count.
fn fitted(mut out: Vec<u8>) -> Vec<u8> {
    if out.capacity() > out.len().saturating_mul(2).saturating_add(4096) {
        out.shrink_to_fit();
    }
    out
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

    /// How a stream [`compress_parts`] writes ends.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Ending {
        /// A whole gzip member: header, deflate data ending in its final block, trailer.
        Member,
        /// Raw deflate data, sync-flushed to a byte boundary, with no final block: the caller
        /// ends the stream.
        Flushed,
    }

    /// `parts` compressed and appended to `out`, ending `ending`'s way, or `None` (and `out` as
    /// it was) when ISA-L refused; the caller then falls back to zlib-rs.
    #[allow(unsafe_code)] // a C library's calls; what they are given is checked below
    pub fn compress_parts(parts: &[&[u8]], out: &mut Vec<u8>, ending: Ending) -> Option<()> {
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
                let member = ending == Ending::Member;
                stream.gzip_flag = if member { ffi::IGZIP_GZIP } else { ffi::IGZIP_DEFLATE } as u16;
                stream.next_out = out.as_mut_ptr().add(start);
                stream.avail_out = avail_out;
                let last = parts.len().saturating_sub(1);
                for (i, part) in parts.iter().copied().chain(parts.is_empty().then_some(&[][..])).enumerate()
                {
                    stream.next_in = part.as_ptr().cast_mut();
                    stream.avail_in = u32::try_from(part.len()).ok()?;
                    stream.end_of_stream = u16::from(member && i == last);
                    let flush = !member && i == last;
                    stream.flush = if flush { ffi::SYNC_FLUSH } else { ffi::NO_FLUSH } as u16;
                    loop {
                        if ffi::isal_deflate(stream) != ffi::COMP_OK as i32 {
                            return None;
                        }
                        let state = stream.internal_state.state;
                        let done = if i < last {
                            stream.avail_in == 0
                        } else if member {
                            state == ffi::isal_zstate_state_ZSTATE_END
                        } else {
                            // ISA-L's word for a finished flush: all input taken and written.
                            stream.avail_in == 0 && state == ffi::isal_zstate_state_ZSTATE_NEW_HDR
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

    /// Reused per thread: the inflate state is ~75 KiB (tables and a window), too much to
    /// allocate and zero per request.
    struct Inflater(Box<MaybeUninit<ffi::inflate_state>>);

    thread_local! {
        static INFLATER: RefCell<Inflater> = RefCell::new(Inflater(Box::new_uninit()));
    }

    /// [`super::gunzip_limited`] through igzip; `None` for a body over 4 GiB, which ISA-L's
    /// 32-bit counters cannot take (the caller then uses zlib-rs).
    #[allow(unsafe_code)] // a C library's calls; what they are given is checked below
    pub fn gunzip_limited(body: &[u8], limit: usize) -> Option<Result<Vec<u8>, super::GunzipError>> {
        let mut out: Vec<u8> = Vec::with_capacity(super::first_capacity(body, limit));
        let result = with_inflater(body, |state| {
            loop {
                // One member, however many calls its output needs.
                state.crc_flag = ffi::ISAL_GZIP;
                inflate_to_the_end(state, &mut out, limit)?;
                if state.avail_in == 0 {
                    return Ok(());
                }
                // Another member follows, as `MultiGzDecoder` reads them; anything else is an
                // error, not trailing data to ignore.
                // SAFETY: ISA-L left `next_in` and `avail_in` describing the rest of `body`.
                let rest = unsafe { std::slice::from_raw_parts(state.next_in, state.avail_in as usize) };
                if !rest.starts_with(&[0x1f, 0x8b]) {
                    return Err(super::corrupt("data after the gzip body"));
                }
                // SAFETY: the state was initialised above.
                unsafe { ffi::isal_inflate_reset(state) };
            }
        })?;
        Some(result.map(|()| super::fitted(out)))
    }

    /// A raw deflate stream inflated, and what its gzip member's trailer must match.
    pub struct Inflated {
        /// The decompressed bytes.
        pub out: Vec<u8>,
        /// Their CRC-32.
        pub crc: u32,
        /// The bit offset, from the body's start, just past the final block: the trailer
        /// begins at the next byte.
        pub end: u64,
    }

    /// The raw deflate stream at `body[start..]` (a gzip member's data, after its header)
    /// inflated; `None` for a body over 4 GiB.
    pub fn inflate_deflate(
        body: &[u8],
        start: usize,
        limit: usize,
    ) -> Option<Result<Inflated, super::GunzipError>> {
        let data = body.get(start..)?;
        let mut out: Vec<u8> = Vec::with_capacity(super::first_capacity(body, limit));
        let result = with_inflater(data, |state| {
            // gzip's CRC-32 of the output, without reading a header or trailer.
            state.crc_flag = ffi::ISAL_GZIP_NO_HDR;
            inflate_to_the_end(state, &mut out, limit)?;
            // What ISA-L took from the input, less the bits it holds but did not use.
            let taken = (data.len() - state.avail_in as usize) as u64 * 8;
            let end = (start as u64) * 8 + taken - state.read_in_length as u64;
            Ok((state.crc, end))
        })?;
        Some(result.map(|(crc, end)| Inflated { out: super::fitted(out), crc, end }))
    }

    /// Runs `inflate` on this thread's igzip state, freshly initialised to read `input`; `None`
    /// for an input over 4 GiB, which ISA-L's 32-bit counters cannot take.
    #[allow(unsafe_code)] // a C library's state; initialised before it is used
    fn with_inflater<R>(input: &[u8], inflate: impl FnOnce(&mut ffi::inflate_state) -> R) -> Option<R> {
        let avail_in = u32::try_from(input.len()).ok()?;
        Some(INFLATER.with_borrow_mut(|Inflater(state)| {
            // SAFETY: `isal_inflate_init` initialises every field before it is read.
            let state = unsafe {
                ffi::isal_inflate_init(state.as_mut_ptr());
                state.assume_init_mut()
            };
            // `input` outlives `inflate`, which ISA-L reads it in.
            state.next_in = input.as_ptr().cast_mut();
            state.avail_in = avail_in;
            inflate(state)
        }))
    }

    /// Runs `state` to the end of its stream (and trailer, if its `crc_flag` reads one), growing
    /// `out` as needed but never past `limit + 1` bytes.
    #[allow(unsafe_code)] // a C library's calls; what they are given is checked below
    fn inflate_to_the_end(
        state: &mut ffi::inflate_state,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), super::GunzipError> {
        loop {
            let spare = super::make_room(out, limit)?;
            // SAFETY: ISA-L writes at most `spare` bytes into `out`'s spare capacity, and
            // `set_len` counts only those it wrote.
            let status = unsafe {
                state.next_out = out.as_mut_ptr().add(out.len());
                state.avail_out = spare;
                let status = ffi::isal_inflate(state);
                out.set_len(out.len() + (spare - state.avail_out) as usize);
                status
            };
            super::within_limit(out, limit)?;
            match status {
                ffi::ISAL_INCORRECT_CHECKSUM => return Err(super::corrupt("gzip checksum mismatch")),
                status if status != ffi::ISAL_DECOMP_OK as i32 => {
                    return Err(super::corrupt(&format!("invalid gzip data (ISA-L status {status})")));
                }
                _ => {}
            }
            if state.block_state == ffi::isal_block_state_ISAL_BLOCK_FINISH {
                return Ok(());
            }
            if state.avail_out > 0 {
                // Room left and not finished: the input ran out mid-member.
                return Err(super::corrupt("gzip body cut short"));
            }
        }
    }
}

/// What the receivers make of `data`, for tests that check what was compressed.
#[cfg(test)]
pub(crate) fn gunzip(data: &[u8]) -> Vec<u8> {
    use crate::receivers::otlp::compression::{Encoding, decompress};
    let body = bytes::Bytes::copy_from_slice(data);
    decompress(Encoding::Gzip, body, usize::MAX - 1, false).expect("valid gzip").0.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lines` lines of text that compresses well (long runs, varied numbers).
    pub(crate) fn text(lines: u32) -> Vec<u8> {
        (0..lines).flat_map(|i| format!("span {} attribute {}\n", i % 97, i).into_bytes()).collect()
    }

    /// `len` incompressible bytes: a seeded xorshift stream.
    pub(crate) fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn what_is_compressed_comes_back() {
        let (text, noise) = (text(300_000), noise(200_000));
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

    #[test]
    fn the_trailer_sizes_the_output_within_what_deflate_can_expand_to() {
        let text: Vec<u8> = (0..20_000u32).flat_map(|i| format!("span {i}\n").into_bytes()).collect();
        let body = zlib(&text).expect("compresses");
        assert_eq!(first_capacity(&body, usize::MAX - 1), text.len() + 1, "the stated size, and a byte");
        assert_eq!(first_capacity(&body, 1000), 1001, "never past the limit");
        let mut lying = body.clone();
        let at = lying.len() - 4;
        lying[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(first_capacity(&lying, usize::MAX - 1), lying.len() * 4, "more than deflate could make");
        assert_eq!(first_capacity(b"gz", 100), 8);
        assert_eq!(gunzip(&body), text);
        assert!(fitted(Vec::with_capacity(1 << 20)).capacity() < 4096, "unused room is given back");
    }

    /// Every way a body can be read or refused, through this build's decompressor and through
    /// zlib-rs's `MultiGzDecoder` (the reference; the same function when built without ISA-L):
    /// the same bytes, or the same refusal.
    #[test]
    fn gunzip_reads_and_refuses_as_multigzdecoder_does() {
        let text: Vec<u8> =
            (0..100_000u32).flat_map(|i| format!("span {} {}\n", i % 89, i).into_bytes()).collect();
        let one = zlib(&text).expect("compresses");
        let two =
            [zlib(&text[..5000]).expect("compresses"), compress(&text[5000..]).expect("compresses")].concat();
        let mut bad_crc = one.clone();
        let crc_at = bad_crc.len() - 8;
        bad_crc[crc_at] ^= 1;
        let mut bad_data = one.clone();
        bad_data[40] ^= 0xff;
        let header_only = one[..10].to_vec();
        let bodies: Vec<(&str, Vec<u8>)> = vec![
            ("one member", one.clone()),
            ("two members", two.clone()),
            ("empty member", zlib(b"").expect("compresses")),
            ("cut short", one[..one.len() / 2].to_vec()),
            ("without its trailer", one[..one.len() - 8].to_vec()),
            ("a wrong checksum", bad_crc),
            ("damaged data", bad_data),
            ("junk after", [one.clone(), b"junk".to_vec()].concat()),
            ("not gzip", b"nope, not gzip at all".to_vec()),
            ("a header only", header_only),
        ];
        let outcome = |result: Result<Vec<u8>, GunzipError>| match result {
            Ok(out) => format!("{} bytes, {:x}", out.len(), crc32fast::hash(&out)),
            Err(GunzipError::TooLarge) => "too large".to_string(),
            Err(GunzipError::Corrupt(_)) => "corrupt".to_string(),
        };
        for (what, body) in &bodies {
            for limit in [usize::MAX - 1, text.len(), text.len() - 1, 4096, 0] {
                assert_eq!(
                    outcome(gunzip_limited(body, limit)),
                    outcome(zlib_gunzip_limited(body, limit)),
                    "{what}, limit {limit}"
                );
            }
        }
        assert_eq!(gunzip_limited(&two, usize::MAX).expect("reads"), text);
    }
}
