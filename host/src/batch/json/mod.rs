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
mod logs;
mod metrics;
mod trace;
mod writer;

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
