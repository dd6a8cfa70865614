//! Clients' gzip bodies joined into one gzip member without compressing anything again.
//!
//! A merged OTLP request is its parts' encodings one after the other (protobuf's repeated fields
//! concatenate), and a deflate stream can go on into another once its final block is made
//! non-final. So several clients' gzip bodies join into one member that decompresses to the
//! merged request: each body's deflate data is copied, all but the last have their final
//! block's `BFINAL` bit cleared and are padded to a byte with an empty stored block, and one
//! trailer carries the combined CRC-32 and length. Back-references never reach before their own
//! stream's start, so every body decodes as it did alone.
//!
//! Several *members* side by side would be valid gzip too, but decoders that read only the first
//! (flate2's `GzDecoder`, which tonic uses) would drop the rest without a word; one member reads
//! everywhere.
//!
//! Joining needs two bit positions in each body that only decoding finds: where its final
//! block's header starts and where its last block ends. A stream of one block (most requests of
//! a few hundred spans) starts its final block right after the header, and ISA-L's inflate,
//! where the build has it, reports where the stream ends: [`gunzip_mapped`] maps such a body in
//! the pass that checks it. Any other body is mapped through zlib's API (zlib-rs underneath)
//! with `Z_BLOCK`, which stops at every block boundary and says where it is. With ISA-L, that
//! pass waits until an exporter actually joins the body ([`MemberMap`]): ISA-L inflates it
//! faster, and a body forwarded alone, as most are, is never mapped at all.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use libz_rs_sys as zlib;

use super::GunzipError;

/// Where the parts of one gzip member lie, as [`join`] needs them. Only [`gunzip_mapped`], from
/// the body it describes, and [`Member::end_flushed`], ending a body it then describes, make one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Bytes of gzip header before the deflate data.
    header: usize,
    /// Bit offset, from the body's start, of the final block's header (its `BFINAL` bit).
    final_block: u64,
    /// Bit offset just past the final block's end-of-block code.
    end: u64,
    /// CRC-32 of what the body decompresses to.
    crc: u32,
    /// How many bytes the body decompresses to.
    size: u64,
}

impl Member {
    /// Ends the gzip member in `out`: its `header` bytes of gzip header, then raw deflate data
    /// flushed to a byte boundary (a sync flush) and never finished. Appends an empty final block
    /// and the trailer for content of CRC-32 `crc` and `size` bytes, and returns the member's map.
    pub fn end_flushed(out: &mut Vec<u8>, header: usize, crc: u32, size: u64) -> Self {
        let final_block = out.len() as u64 * 8;
        // `BFINAL` 1 and `BTYPE` 01 (fixed Huffman codes) in the low three bits, then the seven
        // zero bits of the end-of-block code: ten bits, the last byte padded with zeros.
        out.extend_from_slice(&[0x03, 0x00]);
        out.extend_from_slice(&crc.to_le_bytes());
        // ISIZE is the length modulo 2^32.
        out.extend_from_slice(&(size as u32).to_le_bytes());
        Self { header, final_block, end: final_block + 10, crc, size }
    }
}

/// An empty stored block's length fields (`LEN` 0, `NLEN` its complement), after its three
/// header bits of zero and the padding to a byte boundary.
const EMPTY_STORED_LENGTHS: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// A gzip header without optional fields: deflate, no flags, no time, unknown OS.
pub const PLAIN_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff];

/// `members`, each with the body it maps, as one gzip member appended to `out` (which may already
/// hold a frame's prefix): it decompresses to the bodies' contents in order.
pub fn join<B: AsRef<[u8]>>(members: &[(B, Member)], out: &mut Vec<u8>) {
    let room: usize = members.iter().map(|(body, _)| body.as_ref().len() + 5).sum();
    out.reserve(room + PLAIN_HEADER.len() + 8);
    out.extend_from_slice(&PLAIN_HEADER);
    let (mut crc, mut size) = (0u32, 0u64);
    for (i, (body, member)) in members.iter().enumerate() {
        let at = out.len();
        let end_byte = member.end.div_ceil(8) as usize;
        out.extend_from_slice(&body.as_ref()[member.header..end_byte]);
        if i + 1 < members.len() {
            // The final block no longer ends the stream.
            let final_bit = member.final_block - member.header as u64 * 8;
            out[at + (final_bit / 8) as usize] &= !(1 << (final_bit % 8));
            // Bits past the end-of-block code are padding; zero them, so that an empty stored
            // block's header (three zero bits) can start right there, then align and go on.
            let used = (member.end % 8) as u32;
            if let Some(last) = out.last_mut().filter(|_| used != 0) {
                *last &= (1u8 << used) - 1;
            }
            if used == 0 || used > 5 {
                // Fewer than three bits left in the last byte: the header spills into a new one.
                out.push(0);
            }
            out.extend_from_slice(&EMPTY_STORED_LENGTHS);
        }
        crc = zlib::crc32_combine(crc.into(), member.crc.into(), member.size as zlib::z_off_t) as u32;
        size += member.size;
    }
    out.extend_from_slice(&crc.to_le_bytes());
    // ISIZE is the length modulo 2^32.
    out.extend_from_slice(&(size as u32).to_le_bytes());
}

/// A body's content, and its map when it is one gzip member.
pub type Mapped = (Vec<u8>, Option<Member>);

/// A received gzip body's map for [`join`]: found by the pass that checked the body, or, where
/// that pass could not find it cheaply, found the first time an exporter asks for it. Clones
/// share it: a map found for one exporter serves every other that joins the same body.
#[derive(Debug, Clone)]
pub struct MemberMap(Arc<OnceLock<Option<Member>>>);

impl MemberMap {
    /// A map already found; `None` for a body that cannot be joined (several members, or a
    /// body zlib could not map).
    pub fn known(member: Option<Member>) -> Self {
        Self(Arc::new(OnceLock::from(member)))
    }

    /// A map to be found from the body on first use.
    pub fn deferred() -> Self {
        Self(Arc::new(OnceLock::new()))
    }

    /// The map of `body`, the body this map was made for; found now if nobody has yet.
    pub fn get(&self, body: &[u8]) -> Option<Member> {
        *self.0.get_or_init(|| map(body))
    }
}

/// The map of `body`, a gzip body a receiver has already checked; `None` when it is not one
/// member (or, against expectation, no longer reads).
fn map(body: &[u8]) -> Option<Member> {
    // The body was checked against the receiver's limit; the trailer's size is all it holds
    // (at most deflate's 1032:1 of it, whatever the trailer says).
    let limit = body.len().saturating_mul(1032);
    // One pass: a body of several members has no map, and needs no second reading to say so.
    match with_zlib(|inflater| inflate_one_member(inflater, body, limit, Output::Counted)) {
        Some(Ok(mapped)) => mapped.and_then(|(_, member)| member),
        Some(Err(error)) => {
            // ISA-L accepted the body; it is sent compressed again instead of joined.
            tracing::debug!(%error, "A gzip body ISA-L read cannot be mapped by zlib");
            None
        }
        None => None,
    }
}

/// One zlib inflate stream per thread, reset between bodies: its window and tables are tens of
/// KiB, too much to allocate per request. Boxed, because zlib's state points back at it.
struct Inflater(Box<zlib::z_stream>);

impl Inflater {
    #[allow(unsafe_code)] // zlib's API: the stream is boxed and lives until `inflateEnd`
    fn new() -> Option<Self> {
        let mut stream = Box::new(zlib::z_stream::default());
        // 15 window bits, +16: gzip only.
        // SAFETY: the stream is a fresh default (allocator fields unset: zlib-rs fills them),
        // the version string is the library's own, and the size is the struct's.
        let status = unsafe {
            zlib::inflateInit2_(
                &mut *stream,
                15 + 16,
                zlib::zlibVersion(),
                std::mem::size_of::<zlib::z_stream>() as i32,
            )
        };
        (status == zlib::Z_OK).then_some(Self(stream))
    }
}

impl Drop for Inflater {
    #[allow(unsafe_code)] // zlib's API: ends the stream `new` initialised
    fn drop(&mut self) {
        // SAFETY: the stream was initialised by `inflateInit2_` and is ended once.
        unsafe { zlib::inflateEnd(&mut *self.0) };
    }
}

thread_local! {
    static INFLATER: RefCell<Option<Inflater>> = const { RefCell::new(None) };
}

/// `body` decompressed as [`super::gunzip_limited`] does it (the same output, the same refusals),
/// with a map of the body for [`join`] when it is exactly one gzip member.
///
/// With ISA-L, a body of one block is mapped in the pass that inflates it; any other body is
/// inflated by ISA-L and its map deferred (the `Z_BLOCK` pass that finds it costs more than the
/// inflate: zlib-rs's inflate was ~41% of a host forwarding such bodies, and only a body an
/// exporter joins needs it), to learn then, for a body of several members, that it has none.
/// Without ISA-L, the `Z_BLOCK` pass inflates and maps at once; a body of several members, or
/// over 4 GiB, is read by `gunzip_limited` and comes with no map.
pub fn gunzip_mapped(body: &[u8], limit: usize) -> Result<(Vec<u8>, MemberMap), GunzipError> {
    #[cfg(feature = "isal")]
    {
        if let Some(done) = one_block_through_igzip(body, limit) {
            return done.map(|(out, member)| (out, MemberMap::known(member)));
        }
        if let Some(done) = super::igzip::gunzip_limited(body, limit) {
            return done.map(|out| (out, MemberMap::deferred()));
        }
    }
    zlib_mapped(body, limit).map(|(out, member)| (out, MemberMap::known(member)))
}

/// [`gunzip_mapped`] through zlib's `Z_BLOCK` stops, the map found in the same pass.
fn zlib_mapped(body: &[u8], limit: usize) -> Result<Mapped, GunzipError> {
    match with_zlib(|inflater| inflate_one_member(inflater, body, limit, Output::Kept)) {
        Some(Ok(Some(done))) => Ok(done),
        Some(Err(error)) => Err(error),
        // More than one member, or nothing to map with: the general reader decides.
        Some(Ok(None)) | None => super::gunzip_limited(body, limit).map(|out| (out, None)),
    }
}

/// Runs `inflate` on this thread's zlib stream, started on first use; `None` if zlib could not
/// start one.
fn with_zlib<R>(inflate: impl FnOnce(&mut Inflater) -> R) -> Option<R> {
    INFLATER.with_borrow_mut(|inflater| {
        if inflater.is_none() {
            *inflater = Inflater::new();
        }
        inflater.as_mut().map(inflate)
    })
}

/// A body whose deflate stream is one block (clients' requests of a few hundred spans mostly
/// are) needs no block stops: that block is the final one, it starts right after the header, and
/// ISA-L's inflate, a third faster than zlib-rs's on them, says where it ends. `None` hands every
/// other body, and every doubt, to the `Z_BLOCK` path.
#[cfg(feature = "isal")]
fn one_block_through_igzip(body: &[u8], limit: usize) -> Option<Result<Mapped, GunzipError>> {
    let header = plain_header_len(body)?;
    // BFINAL, the first bit of the first block's header.
    if body.get(header)? & 1 == 0 {
        return None;
    }
    let super::igzip::Inflated { out, crc, end } = match super::igzip::inflate_deflate(body, header, limit)? {
        Ok(done) => done,
        Err(error) => return Some(Err(error)),
    };
    // One member: the trailer starts at the next byte and ends the body.
    if end.div_ceil(8) + 8 != body.len() as u64 {
        return None;
    }
    let trailer = &body[body.len() - 8..];
    let (sent_crc, sent_size) = trailer.split_at(4);
    let sent_crc = u32::from_le_bytes(sent_crc.try_into().ok()?);
    let sent_size = u32::from_le_bytes(sent_size.try_into().ok()?);
    if sent_crc != crc || sent_size != out.len() as u32 {
        return Some(Err(super::corrupt("gzip checksum mismatch")));
    }
    let member = Member { header, final_block: header as u64 * 8, end, crc, size: out.len() as u64 };
    Some(Ok((out, Some(member))))
}

/// The length of `body`'s gzip header, when it is a deflate member's without a header CRC (left,
/// with anything unusual, to the reader that checks it).
#[cfg(feature = "isal")]
fn plain_header_len(body: &[u8]) -> Option<usize> {
    const FTEXT: u8 = 1;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    let (fixed, _) = body.split_at_checked(10)?;
    let flags = fixed[3];
    // A header CRC or a reserved flag: the general reader checks or refuses it.
    if fixed[..3] != [0x1f, 0x8b, 0x08] || flags & !(FTEXT | FEXTRA | FNAME | FCOMMENT) != 0 {
        return None;
    }
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let length = body.get(at..at + 2)?;
        at += 2 + usize::from(u16::from_le_bytes([length[0], length[1]]));
    }
    for field in [FNAME, FCOMMENT] {
        if flags & field != 0 {
            at += body.get(at..)?.iter().position(|&b| b == 0)? + 1;
        }
    }
    (at < body.len()).then_some(at)
}

/// What [`inflate_one_member`] does with what it inflates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    /// Returns it: the body is being received.
    Kept,
    /// Only counts it, through one small window: the body's map is wanted, not its content.
    Counted,
}

/// The window an [`Output::Counted`] inflate writes through.
const COUNTING_WINDOW: usize = 64 << 10;

/// Inflates the first member of `body`; `Ok(None)` when more follows it or `body` is too long
/// for zlib's 32-bit counters. With [`Output::Counted`], the content it returns is empty.
#[allow(unsafe_code)] // zlib's API; every pointer it is given is checked below
fn inflate_one_member(
    Inflater(stream): &mut Inflater,
    body: &[u8],
    limit: usize,
    output: Output,
) -> Result<Option<Mapped>, GunzipError> {
    let Ok(avail_in) = u32::try_from(body.len()) else { return Ok(None) };
    let mut out: Vec<u8> = Vec::with_capacity(match output {
        Output::Kept => super::first_capacity(body, limit),
        Output::Counted => COUNTING_WINDOW,
    });
    // Bytes inflated before those in `out` (only a counting inflate empties it).
    let mut counted = 0;
    // SAFETY: the stream was initialised by `inflateInit2_`.
    if unsafe { zlib::inflateReset(&mut **stream) } != zlib::Z_OK {
        return Ok(None);
    }
    stream.next_in = body.as_ptr();
    stream.avail_in = avail_in;
    let (mut deflate_start, mut final_block, mut end) = (None, None, None);
    loop {
        if output == Output::Counted && out.len() == out.capacity() {
            counted += out.len();
            out.clear();
        }
        let spare = super::make_room(&mut out, limit.saturating_sub(counted))?;
        stream.next_out = out.spare_capacity_mut().as_mut_ptr().cast();
        stream.avail_out = spare;
        // SAFETY: `next_in`/`avail_in` describe the rest of `body`, and `next_out`/`avail_out`
        // `out`'s spare capacity; `set_len` counts only the bytes zlib wrote there.
        let status = unsafe { zlib::inflate(&mut **stream, zlib::Z_BLOCK) };
        // SAFETY: zlib initialised the bytes it wrote, `spare - avail_out` of them.
        unsafe { out.set_len(out.len() + (spare - stream.avail_out) as usize) };
        super::within_limit(&out, limit.saturating_sub(counted))?;
        match status {
            zlib::Z_OK | zlib::Z_STREAM_END => {}
            zlib::Z_BUF_ERROR if stream.avail_out == 0 => {}
            zlib::Z_BUF_ERROR => return Err(super::corrupt("gzip body cut short")),
            _ => return Err(super::corrupt(&format!("invalid gzip data (zlib status {status})"))),
        }
        // Stopped at a block boundary (128): the low bits are those read but not yet used, and
        // 64 says the block just finished was the last.
        let state = stream.data_type;
        if state & 128 != 0 {
            let consumed = (body.len() - stream.avail_in as usize) as u64;
            let at = consumed * 8 - (state & 63) as u64;
            if state & 64 != 0 {
                end = Some(at);
            } else {
                deflate_start.get_or_insert(at);
                final_block = Some(at);
            }
        }
        if status == zlib::Z_STREAM_END {
            break;
        }
    }
    if stream.avail_in != 0 {
        return Ok(None);
    }
    let member = match (deflate_start, final_block, end) {
        (Some(start), Some(final_block), Some(end))
            if start % 8 == 0 && final_block < end && end <= (body.len() as u64 - 8) * 8 =>
        {
            let trailer = &body[body.len() - 8..];
            let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
            Some(Member {
                header: (start / 8) as usize,
                final_block,
                end,
                crc,
                size: (counted + out.len()) as u64,
            })
        }
        // zlib checked the body; a map it could not make only means no join.
        _ => None,
    };
    let out = match output {
        Output::Kept => super::fitted(out),
        Output::Counted => Vec::new(),
    };
    Ok(Some((out, member)))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// Text that compresses into blocks of every kind: long runs (matches), varied words (dynamic
    /// Huffman), and a seeded xorshift stream (stored blocks).
    fn samples() -> Vec<Vec<u8>> {
        let (text, noise) = (super::super::tests::text(40_000), super::super::tests::noise(100_000));
        let mixed = [&text[..30_000], &noise[..70_000], &text[30_000..]].concat();
        vec![Vec::new(), b"x".to_vec(), b"hello, hello, hello".to_vec(), text, noise, mixed]
    }

    /// A compressor's name and how it gzips.
    type Compressor = (&'static str, fn(&[u8]) -> Vec<u8>);

    /// Every way the bodies may have been compressed: zlib-rs at several levels (one block, many
    /// blocks, stored blocks), a sync flush mid-stream (an empty stored block), ISA-L when built
    /// with it, and a header with a file name.
    fn compressors() -> Vec<Compressor> {
        fn level(data: &[u8], level: u32) -> Vec<u8> {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            encoder.write_all(data).expect("in memory");
            encoder.finish().expect("in memory")
        }
        vec![
            ("zlib-rs level 0 (stored)", |d| level(d, 0)),
            ("zlib-rs level 1", |d| level(d, 1)),
            ("zlib-rs level 6", |d| level(d, 6)),
            ("zlib-rs level 9", |d| level(d, 9)),
            ("the host's gzip", |d| super::super::compress(d).expect("in memory")),
            ("the host's joinable gzip", |d| super::super::compress_joinable(d).expect("in memory").0),
            ("sync flush mid-stream", |d| {
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
                encoder.write_all(&d[..d.len() / 2]).expect("in memory");
                encoder.flush().expect("in memory");
                encoder.write_all(&d[d.len() / 2..]).expect("in memory");
                encoder.finish().expect("in memory")
            }),
            ("named header", |d| {
                let mut encoder = flate2::GzBuilder::new()
                    .filename("batch.pb")
                    .comment("from a client")
                    .write(Vec::new(), flate2::Compression::new(6));
                encoder.write_all(d).expect("in memory");
                encoder.finish().expect("in memory")
            }),
        ]
    }

    /// Every sample compressed every way: the compressor's name, the sample and its body.
    fn bodies() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
        let samples = samples();
        let compressors = compressors();
        compressors
            .iter()
            .flat_map(|&(name, compress)| {
                samples.iter().map(move |data| (name, data.clone(), compress(data)))
            })
            .collect()
    }

    /// What a decoder that reads only one member (flate2's `GzDecoder`, as tonic does) makes of it.
    fn one_member_reader(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut decoder = flate2::read::GzDecoder::new(body);
        decoder.read_to_end(&mut out).expect("one valid member");
        let mut rest = Vec::new();
        decoder.into_inner().read_to_end(&mut rest).expect("in memory");
        assert!(rest.is_empty(), "the joined body is one member, nothing after it");
        out
    }

    #[test]
    fn joined_bodies_read_as_one_member_holding_every_body_in_order() {
        let mut bodies = Vec::new();
        for (name, data, body) in self::bodies() {
            let (out, member) = gunzip_mapped(&body, usize::MAX - 1).expect("valid");
            assert_eq!(out, data, "{name}: {} bytes", data.len());
            let member = member.get(&body).unwrap_or_else(|| panic!("{name}: one member is mapped"));
            bodies.push((name, body, member, data));
        }
        // Every body alone, then every pair (each end-bit alignment meets each start), then all.
        for (name, body, member, data) in &bodies {
            let mut out = Vec::new();
            join(&[(body, *member)], &mut out);
            assert_eq!(&one_member_reader(&out), data, "{name} alone");
        }
        for (a_name, a, a_member, a_data) in &bodies {
            for (b_name, b, b_member, b_data) in &bodies {
                let mut out = b"prefix".to_vec();
                join(&[(a, *a_member), (b, *b_member)], &mut out);
                assert_eq!(&out[..6], b"prefix");
                let joined = one_member_reader(&out[6..]);
                assert!(joined == [&a_data[..], b_data].concat(), "{a_name} then {b_name}");
            }
        }
        let all: Vec<(&[u8], Member)> =
            bodies.iter().map(|(_, body, member, _)| (&body[..], *member)).collect();
        let mut out = Vec::new();
        join(&all, &mut out);
        let expected: Vec<u8> = bodies.iter().flat_map(|(_, _, _, data)| data.clone()).collect();
        assert_eq!(one_member_reader(&out), expected);
        // And the receivers read it the same way (checksum and length checked).
        assert_eq!(super::super::gunzip_limited(&out, usize::MAX - 1).expect("valid"), expected);
    }

    /// A one-block body mapped by ISA-L's inflate gets the very map `Z_BLOCK` stops give it.
    #[cfg(feature = "isal")]
    #[test]
    fn both_ways_of_mapping_agree() {
        let mut through_igzip = 0;
        for (name, data, body) in bodies() {
            let by_blocks = zlib_mapped(&body, usize::MAX - 1).expect("valid");
            if let Some(by_igzip) = one_block_through_igzip(&body, usize::MAX - 1) {
                assert_eq!(by_igzip.expect("valid"), by_blocks, "{name}: {} bytes", data.len());
                through_igzip += 1;
            }
        }
        assert!(through_igzip >= 10, "one-block bodies went through ISA-L: {through_igzip}");
    }

    /// A map deferred at receipt is the map the `Z_BLOCK` pass finds while it keeps what it
    /// inflates (the deferred pass only counts it, through a window); only bodies of several
    /// blocks defer theirs, only where ISA-L inflates them, and a map found through one clone
    /// is found for all.
    #[test]
    fn a_deferred_map_is_the_map_found_in_the_checking_pass() {
        let mut deferred = 0;
        // Ten MiB of zeros: near deflate's 1032:1 limit, and many times the counting window.
        let zeros = vec![0u8; 10 << 20];
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&zeros).expect("in memory");
        let squeezed = encoder.finish().expect("in memory");
        assert!(zeros.len() / squeezed.len() > 500, "{} bytes", squeezed.len());
        for (name, data, body) in bodies().into_iter().chain([("zeros", zeros, squeezed)]) {
            let (out, map) = gunzip_mapped(&body, usize::MAX - 1).expect("valid");
            assert_eq!(out, data, "{name}");
            let (_, by_blocks) = zlib_mapped(&body, usize::MAX - 1).expect("valid");
            let was_deferred = map.0.get().is_none();
            #[cfg(feature = "isal")]
            if one_block_through_igzip(&body, usize::MAX - 1).is_some() {
                assert!(!was_deferred, "{name}: a one-block body is mapped as it is checked");
            }
            deferred += usize::from(was_deferred);
            let clone = map.clone();
            assert!(clone.get(&body).is_some(), "{name}: every sample is one member, with a map");
            assert_eq!(map.0.get().copied().flatten(), by_blocks, "{name}: {} bytes", data.len());
        }
        // zlib-rs's levels write the 100 KB samples in several blocks.
        assert_eq!(deferred > 0, cfg!(feature = "isal"), "maps deferred: {deferred}");
    }

    /// A joinable body's map, known as it is written, is the map inflating it finds, and joins
    /// with other bodies (its own map used) as theirs do.
    #[test]
    fn a_joinable_body_is_mapped_as_it_is_written() {
        let others: Vec<(Vec<u8>, Member, Vec<u8>)> = bodies()
            .into_iter()
            .filter(|(name, _, _)| name.starts_with("zlib-rs level"))
            .map(|(_, data, body)| {
                let member = zlib_mapped(&body, usize::MAX - 1).expect("valid").1.expect("one member");
                (body, member, data)
            })
            .collect();
        for data in samples() {
            let (body, member) = super::super::compress_joinable(&data).expect("in memory");
            assert_eq!(super::super::gunzip_limited(&body, usize::MAX - 1).expect("valid"), data);
            let (out, by_blocks) = zlib_mapped(&body, usize::MAX - 1).expect("valid");
            assert_eq!(out, data);
            assert_eq!(by_blocks, Some(member), "{} bytes", data.len());
            for (other, other_member, other_data) in &others {
                let mut out = Vec::new();
                join(&[(&body[..], member), (other, *other_member), (&body, member)], &mut out);
                assert!(one_member_reader(&out) == [&data[..], other_data, &data].concat());
            }
        }
    }

    #[test]
    fn every_end_alignment_joins() {
        // Lengths 0..64 of varied bytes end their streams on every bit of a byte.
        let mut seen = [false; 8];
        let mut bodies = Vec::new();
        for len in 0..64u8 {
            let data: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37) ^ len).collect();
            let body = super::super::zlib(&data).expect("in memory");
            let (_, member) = gunzip_mapped(&body, usize::MAX - 1).expect("valid");
            let member = member.get(&body).expect("mapped");
            seen[(member.end % 8) as usize] = true;
            bodies.push((body, member, data));
        }
        assert_eq!(seen, [true; 8], "the samples end on every bit");
        for pair in bodies.windows(2) {
            let mut out = Vec::new();
            join(&[(&pair[0].0, pair[0].1), (&pair[1].0, pair[1].1)], &mut out);
            assert_eq!(one_member_reader(&out), [&pair[0].2[..], &pair[1].2].concat());
        }
    }

    #[test]
    fn reads_and_refuses_as_gunzip_limited_does() {
        let text: Vec<u8> =
            (0..100_000u32).flat_map(|i| format!("span {} {}\n", i % 89, i).into_bytes()).collect();
        let one = super::super::zlib(&text).expect("compresses");
        let two = [super::super::zlib(&text[..5000]).expect("compresses"), one.clone()].concat();
        let mut wrong_crc = one.clone();
        let crc_at = wrong_crc.len() - 8;
        wrong_crc[crc_at] ^= 1;
        let mut damaged = one.clone();
        damaged[40] ^= 0xff;
        let junk = [&one[..], b"junk"].concat();
        let bodies: [(&str, &[u8]); 8] = [
            ("one member", &one),
            ("two members", &two),
            ("cut short", &one[..one.len() / 2]),
            ("no trailer", &one[..one.len() - 8]),
            ("wrong checksum", &wrong_crc),
            ("damaged", &damaged),
            ("junk after", &junk),
            ("not gzip", b"plain text, not gzip at all"),
        ];
        for (name, body) in bodies {
            for limit in [0, 1, 5000, text.len(), usize::MAX - 1] {
                let expected = super::super::gunzip_limited(body, limit);
                let got = gunzip_mapped(body, limit);
                match (&expected, &got) {
                    (Ok(expected), Ok((got, member))) => {
                        assert_eq!(expected, got, "{name} at {limit}");
                        assert_eq!(
                            member.get(body).is_some(),
                            name == "one member",
                            "{name}: mapped only when one member"
                        );
                    }
                    (Err(GunzipError::TooLarge), Err(GunzipError::TooLarge))
                    | (Err(GunzipError::Corrupt(_)), Err(GunzipError::Corrupt(_))) => {}
                    _ => {
                        panic!("{name} at {limit}: {expected:?} against {:?}", got.map(|(out, _)| out.len()))
                    }
                }
            }
        }
    }
}
