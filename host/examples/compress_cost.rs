//! What gzip alone costs per span, on the bytes the load generator sends (100 spans × 10
//! attributes per batch): the floor under any forward path that compresses its output. Prints
//! zlib-rs and libdeflate at level 1 beside the host's own `gzip::compress` (ISA-L when built
//! with `--features isal`), then what reading the bodies back costs: the receivers' gunzip,
//! the same keeping the body for joining, that and the body's map found as a join needs it
//! (ISA-L reports a one-block body's map as it inflates; others take zlib-rs with `Z_BLOCK`
//! stops) and, with the feature, ISA-L's alone; last, joining clients' gzip bodies, which a
//! forward does instead of compressing.
//!
//! ```sh
//! cargo run --release -p sluice-host --features isal --example compress_cost
//! cargo run --release -p sluice-host --features isal --example compress_cost host  # that row alone
//! ```
//!
//! With `host`, only the host's own compressor on 100-span requests is measured: the floor
//! `bench/compressor_ratio.py` sets a forward's cost against, run by run.

use std::hint::black_box;
use std::time::Instant;

use sluice::gzip::splice::Member;
use sluice::receivers::otlp::compression::{Encoding, decompress};
use sluice_bench::make_batch;

/// Batches in the pool, as the load generator cycles through 64.
const POOL: usize = 64;

fn main() {
    let mut rng = rand::rng();
    let batches: Vec<Vec<u8>> = (0..POOL).map(|_| make_batch(&mut rng, 100, 10, 1)).collect();
    let mut libdeflate =
        libdeflater::Compressor::new(libdeflater::CompressionLvl::new(1).expect("1 is a level"));
    let host = format!("host: {}", sluice::gzip::ENGINE);
    if std::env::args().nth(1).as_deref() == Some("host") {
        measure(&host, &batches, POOL * 100, |data| sluice::gzip::compress(data).expect("in memory").len());
        return;
    }
    // The exporter merges waiting batches into one request (protobuf repeated fields concatenate).
    for merged in [1, 10] {
        let requests: Vec<Vec<u8>> = batches.chunks(merged).map(|chunk| chunk.concat()).collect();
        let spans = requests.len() * merged * 100;
        let bytes: usize = requests.iter().map(Vec::len).sum();
        println!("{} spans per request, {} bytes per span:", merged * 100, bytes / spans);
        measure("zlib-rs, level 1", &requests, spans, |data| {
            sluice::gzip::zlib(data).expect("in memory").len()
        });
        measure("libdeflate, level 1", &requests, spans, |data| {
            let mut out = vec![0; libdeflate.gzip_compress_bound(data.len())];
            libdeflate.gzip_compress(data, &mut out).expect("the bound is enough")
        });
        measure(&host, &requests, spans, |data| sluice::gzip::compress(data).expect("in memory").len());
        // What a disk queue stores for an exporter that sends gzip: the map for joining known.
        measure("host, joinable (a disk queue's record)", &requests, spans, |data| {
            sluice::gzip::compress_joinable(data).expect("in memory").0.len()
        });
        // Clients compress at zlib's default level (the load generator's `--gzip` too).
        let compressed: Vec<Vec<u8>> = requests.iter().map(|r| client_gzip(r)).collect();
        measure("gunzip: the receivers'", &compressed, spans, |data| {
            let body = bytes::Bytes::copy_from_slice(data);
            decompress(Encoding::Gzip, body, usize::MAX - 1, false).expect("valid").0.len()
        });
        measure("gunzip, body kept for joining", &compressed, spans, |data| {
            let body = bytes::Bytes::copy_from_slice(data);
            decompress(Encoding::Gzip, body, usize::MAX - 1, true).expect("valid").0.len()
        });
        // A body of several blocks has its map found only when an exporter joins it.
        measure("gunzip kept, then its map found", &compressed, spans, |data| {
            let body = bytes::Bytes::copy_from_slice(data);
            let (out, kept) = decompress(Encoding::Gzip, body, usize::MAX - 1, true).expect("valid");
            let kept = kept.expect("kept");
            kept.gzip_member().expect("one member");
            out.len()
        });
        #[cfg(feature = "isal")]
        {
            let mut out = vec![0u8; 1 << 24];
            measure("gunzip: ISA-L", &compressed, spans, |data| {
                isal::decompress_into(data, &mut out, isal::Codec::Gzip).expect("valid")
            });
        }
    }
    // What a forward does instead of compressing when its clients gzipped: join their bodies.
    let clients: Vec<(Vec<u8>, Member)> = batches
        .iter()
        .map(|batch| {
            let body = client_gzip(batch);
            let member =
                sluice::gzip::splice::gunzip_mapped(&body, usize::MAX - 1).expect("valid").1.get(&body);
            (body, member.expect("one member"))
        })
        .collect();
    for merged in [1, 10] {
        // The bodies of each merged request side by side, as `measure`'s input (so its ratio
        // compares the bodies with the joined member); the closure joins them by their maps.
        let chunks: Vec<&[(Vec<u8>, Member)]> = clients.chunks(merged).collect();
        let requests: Vec<Vec<u8>> =
            chunks.iter().map(|chunk| chunk.iter().flat_map(|(body, _)| body.clone()).collect()).collect();
        let (mut next, mut out) = (0, Vec::new());
        measure(&format!("join {merged} clients' gzip bodies"), &requests, POOL * 100, |_| {
            let members = chunks[next];
            next = (next + 1) % chunks.len();
            out.clear();
            sluice::gzip::splice::join(members, &mut out);
            out.len()
        });
    }
}

/// `data` gzipped as SDKs do it: zlib's default level.
fn client_gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("in memory");
    encoder.finish().expect("in memory")
}

/// Runs `compress` over every request until a second has passed; prints ns per span and the
/// ratio of bytes in to bytes out (below 1 when reading back).
fn measure(label: &str, requests: &[Vec<u8>], spans: usize, mut compress: impl FnMut(&[u8]) -> usize) {
    let (mut rounds, mut out_bytes) = (0, 0);
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < 1.0 {
        for request in requests {
            out_bytes += black_box(compress(black_box(request)));
        }
        rounds += 1;
    }
    let in_bytes: usize = requests.iter().map(Vec::len).sum::<usize>() * rounds;
    let ns = started.elapsed().as_nanos() as f64 / (spans * rounds) as f64;
    println!("  {label:<32} {ns:>6.0} ns per span, {:.2}x smaller", in_bytes as f64 / out_bytes as f64);
}
