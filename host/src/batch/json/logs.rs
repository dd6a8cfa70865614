//! Log records.

use sluice_wire::Fields;

use super::common::{Shape, any_value, attributes_and_dropped};
use super::writer::{Render, Run, Writer, bytes, fixed32, fixed64, once, varint};

/// How a logs request is laid out.
pub(super) const SHAPE: Shape = Shape {
    resources_key: b"{\"resourceLogs\":",
    scopes_key: b",\"scopeLogs\":",
    items_key: b",\"logRecords\":",
    item: log_record,
};

/// A `LogRecord`.
fn log_record(w: &mut Writer, buf: &[u8]) -> Render {
    let (mut time, mut observed_time, mut severity, mut flags, mut dropped) = (0u64, 0u64, 0i32, 0u32, 0u32);
    let (mut severity_text, mut trace_id, mut span_id, mut event_name): (&[u8], &[u8], &[u8], &[u8]) =
        (b"", b"", b"", b"");
    let (mut body, mut attributes_run) = (None, Run::default());
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            1 => time = fixed64(&field)?,
            2 => severity = varint(&field)? as i32,
            3 => severity_text = bytes(&field)?,
            5 => once(&mut body, &field)?,
            6 => attributes_run.add(&field),
            7 => dropped = varint(&field)? as u32,
            8 => flags = fixed32(&field)?,
            9 => trace_id = bytes(&field)?,
            10 => span_id = bytes(&field)?,
            11 => observed_time = fixed64(&field)?,
            12 => event_name = bytes(&field)?,
            _ => {}
        }
    }
    w.raw(b"{\"timeUnixNano\":");
    w.quoted(time);
    w.raw(b",\"observedTimeUnixNano\":");
    w.quoted(observed_time);
    w.raw(b",\"severityNumber\":");
    w.int(severity);
    w.raw(b",\"severityText\":");
    w.string(severity_text)?;
    w.raw(b",\"body\":");
    w.optional(body, |w, body| any_value(w, body, 0))?;
    w.raw(b",");
    attributes_and_dropped(w, buf, attributes_run, 6, dropped)?;
    w.raw(b",\"flags\":");
    w.int(flags);
    w.raw(b",\"traceId\":");
    w.hex(trace_id);
    w.raw(b",\"spanId\":");
    w.hex(span_id);
    w.raw(b",\"eventName\":");
    w.string(event_name)?;
    w.raw(b"}");
    Ok(())
}
