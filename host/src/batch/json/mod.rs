//! The OTLP/JSON mapping, rendered straight from the encoded request.
//!
//! The file exporter and the OTLP exporter's `http/json` protocol write every batch as JSON.
//! Decoding it into owned messages first and serializing those costs ~2 µs per span, most of it
//! allocating strings that are copied out again at once; walking the protobuf fields in place
//! and writing each value as it is found skips all of that. The output is byte for byte what
//! `serde_json` writes for the owned messages (the tests hold the two together), so nothing
//! downstream can tell which path made it.
//!
//! A request that leans on protobuf's merge rules (a singular message field sent twice, whose
//! halves the decoder merges) or that is malformed is handed to the owned decoder, which applies
//! them or reports the error. No encoder writes such requests, so that path is for correctness,
//! not speed.

mod common;
mod digits;
mod logs;
mod metrics;
mod trace;
mod writer;

use std::sync::atomic::{AtomicUsize, Ordering};

use sluice_wire::Fields;

use super::{DecodeError, Decoded};
use crate::config::Signal;
use common::{Shape, resource_group};
use writer::{Render, Writer, bytes};

/// Appends the OTLP/JSON form of the request made of `parts` (encoded requests of `signal`
/// whose concatenation is the whole, as protobuf concatenates repeated fields): one object,
/// no trailing newline.
pub fn write_json(signal: Signal, parts: &[&[u8]], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let start = out.len();
    let shape = match signal {
        Signal::Traces => &trace::SHAPE,
        Signal::Metrics => &metrics::SHAPE,
        Signal::Logs => &logs::SHAPE,
    };
    if render(&mut Writer::new(out), parts, shape).is_ok() {
        return Ok(());
    }
    out.truncate(start);
    let whole = parts.concat();
    Decoded::from_protobuf(signal, &whole)?
        .write_json(out, false)
        .map_err(|e| DecodeError(format!("cannot render {signal} as JSON: {e}")))
}

/// Renders requests into buffers of their own, each sized up front from what the ones before it
/// came to, so that rendering does not grow the buffer (every growth copies all written so far,
/// ~8% of an `http/json` exporter's time when the buffer started at twice the protobuf's size).
#[derive(Debug)]
pub struct JsonRenderer {
    /// JSON bytes per 16 protobuf bytes in the request rendered last.
    sixteenths: AtomicUsize,
}

impl Default for JsonRenderer {
    fn default() -> Self {
        // Three JSON bytes per protobuf byte: spans with ten short attributes come to ~2.8.
        Self { sixteenths: AtomicUsize::new(3 * 16) }
    }
}

impl JsonRenderer {
    /// The OTLP/JSON form of the request made of `parts`, as [`write_json`] writes it.
    pub fn render(&self, signal: Signal, parts: &[&[u8]]) -> Result<Vec<u8>, DecodeError> {
        let input: usize = parts.iter().map(|part| part.len()).sum();
        let sixteenths = self.sixteenths.load(Ordering::Relaxed);
        // An eighth to spare, for a request whose items run a little longer than the last's.
        let mut out = Vec::with_capacity((input / 16 + 1) * sixteenths * 9 / 8);
        write_json(signal, parts, &mut out)?;
        if let Some(sixteenths) = (out.len() * 16).checked_div(input) {
            self.sixteenths.store(sixteenths + 1, Ordering::Relaxed);
        }
        Ok(out)
    }
}

/// `{"resource…":[…]}` over every part's resource groups.
fn render(w: &mut Writer, parts: &[&[u8]], shape: &Shape) -> Render {
    w.raw(shape.resources_key);
    w.raw(b"[");
    let mut first = true;
    for part in parts {
        for field in Fields::new(part) {
            let field = field?;
            if field.number != 1 {
                continue;
            }
            if !first {
                w.raw(b",");
            }
            first = false;
            resource_group(w, bytes(&field)?, shape)?;
        }
    }
    w.raw(b"]}");
    Ok(())
}

#[cfg(test)]
mod tests;
