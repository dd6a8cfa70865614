//! Joined gzip bodies read back as every body in order, however each was compressed; and the
//! mapping inflate reads or refuses any body exactly as the receivers' gunzip does. The input is
//! cut into up to eight pieces at its `0xff` bytes; each piece's first byte picks how it is
//! gzipped (zlib-rs at a level from 0 to 9, with or without a sync flush midway, or the host's
//! own compressor); the whole input is also tried as a gzip body.

#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use sluice::gzip::{self, GunzipError, splice};

const LIMIT: usize = 1 << 20;

fn compress(how: u8, data: &[u8]) -> Vec<u8> {
    if how % 12 == 11 {
        return gzip::compress(data).expect("in memory");
    }
    let level = flate2::Compression::new(u32::from(how % 12 % 10));
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
    if how % 12 == 10 {
        encoder.write_all(&data[..data.len() / 2]).expect("in memory");
        encoder.flush().expect("in memory");
        encoder.write_all(&data[data.len() / 2..]).expect("in memory");
    } else {
        encoder.write_all(data).expect("in memory");
    }
    encoder.finish().expect("in memory")
}

fuzz_target!(|data: &[u8]| {
    // Any body: the same bytes or the same kind of refusal as the receivers' reader.
    match (gzip::gunzip_limited(data, LIMIT), splice::gunzip_mapped(data, LIMIT)) {
        (Ok(expected), Ok((got, map))) => {
            assert_eq!(expected, got);
            // A map, found at receipt or later (deferred, under ISA-L), joins the body alone
            // into one member that reads as the body did.
            if let Some(member) = map.get(data) {
                let mut joined = Vec::new();
                splice::join(&[(data, member)], &mut joined);
                assert_eq!(gzip::gunzip_limited(&joined, usize::MAX - 1).expect("joined"), expected);
            }
        }
        (Err(GunzipError::TooLarge), Err(GunzipError::TooLarge))
        | (Err(GunzipError::Corrupt(_)), Err(GunzipError::Corrupt(_))) => {}
        (expected, got) => panic!("{expected:?} against {got:?}"),
    }

    let pieces: Vec<&[u8]> = data.split(|&b| b == 0xff).take(8).collect();
    let bodies: Vec<(Vec<u8>, &[u8])> = pieces
        .iter()
        .map(|piece| match piece.split_first() {
            Some((&how, content)) => (compress(how, content), content),
            None => (compress(0, &[]), &[][..]),
        })
        .collect();
    let mut members = Vec::new();
    for (body, content) in &bodies {
        let (out, member) = splice::gunzip_mapped(body, LIMIT).expect("a body we compressed");
        assert_eq!(&out, content);
        members.push((&body[..], member.get(body).expect("one member is mapped")));
    }
    let mut joined = Vec::new();
    splice::join(&members, &mut joined);
    let expected: Vec<u8> = bodies.iter().flat_map(|(_, content)| content.to_vec()).collect();
    let mut one_member = Vec::new();
    let mut reader = flate2::read::GzDecoder::new(&joined[..]);
    std::io::Read::read_to_end(&mut reader, &mut one_member).expect("one valid member");
    assert_eq!(one_member, expected);
    assert_eq!(gzip::gunzip_limited(&joined, usize::MAX - 1).expect("valid"), expected);
});
