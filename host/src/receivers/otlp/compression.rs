//! Request decompression with a hard limit on the output, so a small compressed body that
//! expands to gigabytes (a zip bomb) is refused after reading at most `limit + 1` bytes.

use std::io::Read;

use bytes::Bytes;

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
    /// The body as sent, for a batch to carry when it came compressed.
    pub fn sent(self, body: &bytes::Bytes) -> Option<crate::batch::Compressed> {
        let encoding = match self {
            Encoding::Identity => return None,
            Encoding::Gzip => crate::config::CompressionConfig::Gzip,
            Encoding::Zstd => crate::config::CompressionConfig::Zstd,
        };
        Some(crate::batch::Compressed { encoding, body: body.clone() })
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

/// Decompresses `body`, producing at most `limit` bytes.
pub fn decompress(encoding: Encoding, body: Bytes, limit: usize) -> Result<Bytes, DecompressError> {
    match encoding {
        Encoding::Identity if body.len() > limit => Err(DecompressError::TooLarge { limit }),
        Encoding::Identity => Ok(body),
        Encoding::Gzip => match crate::gzip::gunzip_limited(&body, limit) {
            Ok(out) => Ok(Bytes::from(out)),
            Err(crate::gzip::GunzipError::TooLarge) => Err(DecompressError::TooLarge { limit }),
            Err(crate::gzip::GunzipError::Corrupt(error)) => Err(DecompressError::Corrupt(error)),
        },
        Encoding::Zstd => {
            let decoder =
                zstd::stream::read::Decoder::with_buffer(&body[..]).map_err(DecompressError::Corrupt)?;
            read_limited(decoder, limit, body.len())
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
    fn round_trips_gzip_and_zstd() {
        let data = b"hello otlp".repeat(10);
        assert_eq!(decompress(Encoding::Gzip, gzip(&data), 1000).expect("gzip"), &data[..]);
        let z = zstd::encode_all(&data[..], 3).expect("zstd");
        assert_eq!(decompress(Encoding::Zstd, Bytes::from(z), 1000).expect("zstd"), &data[..]);
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 50 << 20]);
        assert!(bomb.len() < 100_000);
        assert!(matches!(decompress(Encoding::Gzip, bomb, 1 << 20), Err(DecompressError::TooLarge { .. })));
    }

    #[test]
    fn garbage_is_corrupt() {
        assert!(matches!(
            decompress(Encoding::Gzip, Bytes::from_static(b"nope"), 100),
            Err(DecompressError::Corrupt(_))
        ));
    }
}
