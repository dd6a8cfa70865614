//! Request decompression with a hard limit on the output, so a small compressed body that
//! expands to gigabytes (a zip bomb) is refused after reading at most `limit + 1` bytes.

use std::io::Read;

use bytes::Bytes;

use crate::batch::Compressed;
use crate::gzip::splice::MemberMap;

/// A content or message encoding the receivers accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Not compressed.
    Identity,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Encoding {
    /// The exporters' name for this encoding, `None` for identity.
    pub fn compression(self) -> Option<crate::config::CompressionConfig> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some(crate::config::CompressionConfig::Gzip),
            Encoding::Zstd => Some(crate::config::CompressionConfig::Zstd),
        }
    }

    /// Reads a `Content-Encoding` or `grpc-encoding` header value; `None` means unsupported.
    pub fn from_header(value: Option<&str>) -> Option<Self> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("" | "identity") => Some(Encoding::Identity),
            Some("gzip" | "x-gzip") => Some(Encoding::Gzip),
            Some("zstd") => Some(Encoding::Zstd),
            Some(_) => None,
        }
    }
}

/// Why a body could not be decompressed.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    /// The output would exceed the limit.
    #[error("decompressed body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The input is not valid for its encoding.
    #[error("cannot decompress the body: {0}")]
    Corrupt(std::io::Error),
}

/// Decompresses `body`, producing at most `limit` bytes. With `keep`, a compressed body also
/// comes back as it was sent, for a batch to carry (a one-member gzip body mapped for joining,
/// in the same pass that inflates it).
pub fn decompress(
    encoding: Encoding,
    body: Bytes,
    limit: usize,
    keep: bool,
) -> Result<(Bytes, Option<Compressed>), DecompressError> {
    let kept = |member| {
        encoding
            .compression()
            .filter(|_| keep)
            .map(|encoding| Compressed::new(encoding, body.clone(), member))
    };
    match encoding {
        Encoding::Identity if body.len() > limit => Err(DecompressError::TooLarge { limit }),
        Encoding::Identity => Ok((body, None)),
        Encoding::Gzip if keep => match crate::gzip::splice::gunzip_mapped(&body, limit) {
            Ok((out, member)) => Ok((Bytes::from(out), kept(member))),
            Err(error) => Err(DecompressError::from_gunzip(error, limit)),
        },
        Encoding::Gzip => match crate::gzip::gunzip_limited(&body, limit) {
            Ok(out) => Ok((Bytes::from(out), None)),
            Err(error) => Err(DecompressError::from_gunzip(error, limit)),
        },
        Encoding::Zstd => {
            let decoder =
                zstd::stream::read::Decoder::with_buffer(&body[..]).map_err(DecompressError::Corrupt)?;
            Ok((read_limited(decoder, limit, body.len())?, kept(MemberMap::known(None))))
        }
    }
}

impl DecompressError {
    fn from_gunzip(error: crate::gzip::GunzipError, limit: usize) -> Self {
        match error {
            crate::gzip::GunzipError::TooLarge => DecompressError::TooLarge { limit },
            crate::gzip::GunzipError::Corrupt(error) => DecompressError::Corrupt(error),
        }
    }
}

fn read_limited(reader: impl Read, limit: usize, compressed_len: usize) -> Result<Bytes, DecompressError> {
    let mut out = Vec::with_capacity(compressed_len.saturating_mul(4).min(limit));
    reader.take(limit as u64 + 1).read_to_end(&mut out).map_err(DecompressError::Corrupt)?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Bytes {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).expect("write");
        Bytes::from(encoder.finish().expect("finish"))
    }

    #[test]
    fn round_trips_gzip_and_zstd_and_keeps_the_body_when_asked() {
        let data = b"hello otlp".repeat(10);
        let z = Bytes::from(zstd::encode_all(&data[..], 3).expect("zstd"));
        for keep in [false, true] {
            let (out, sent) = decompress(Encoding::Gzip, gzip(&data), 1000, keep).expect("gzip");
            assert_eq!(out, &data[..]);
            let sent = sent
                .filter(|_| keep)
                .map(|sent| (sent.encoding(), sent.gzip_member().is_some(), sent.body().clone()));
            assert_eq!(sent, keep.then(|| (crate::config::CompressionConfig::Gzip, true, gzip(&data))));
            let (out, sent) = decompress(Encoding::Zstd, z.clone(), 1000, keep).expect("zstd");
            assert_eq!(out, &data[..]);
            let sent = sent.map(|sent| (sent.gzip_member().is_none(), sent.body().clone()));
            assert_eq!(sent, keep.then(|| (true, z.clone())));
        }
        let (_, sent) = decompress(Encoding::Identity, Bytes::from(data), 1000, true).expect("as is");
        assert!(sent.is_none(), "nothing to keep when nothing was compressed");
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 50 << 20]);
        assert!(bomb.len() < 100_000);
        for keep in [false, true] {
            assert!(matches!(
                decompress(Encoding::Gzip, bomb.clone(), 1 << 20, keep),
                Err(DecompressError::TooLarge { limit: 1_048_576 })
            ));
        }
    }

    #[test]
    fn garbage_is_corrupt() {
        for keep in [false, true] {
            assert!(matches!(
                decompress(Encoding::Gzip, Bytes::from_static(b"nope"), 100, keep),
                Err(DecompressError::Corrupt(_))
            ));
        }
    }
}
