//! Spans, their events, links and status.

use sluice_wire::Fields;

use super::common::{Shape, attributes_and_dropped};
use super::writer::{Render, Run, Writer, bytes, fixed32, fixed64, once, varint};

/// How a traces request is laid out.
pub(super) const SHAPE: Shape = Shape {
    resources_key: b"{\"resourceSpans\":",
    scopes_key: b",\"scopeSpans\":",
    items_key: b",\"spans\":",
    item: span,
};

/// A `Span`.
fn span(w: &mut Writer, buf: &[u8]) -> Render {
    let (mut trace_id, mut span_id, mut parent_span_id): (&[u8], &[u8], &[u8]) = (b"", b"", b"");
    let (mut trace_state, mut name): (&[u8], &[u8]) = (b"", b"");
    let (mut flags, mut kind, mut start, mut end) = (0u32, 0i32, 0u64, 0u64);
    let (mut dropped_attributes, mut dropped_events, mut dropped_links) = (0u32, 0u32, 0u32);
    let (mut attributes_run, mut events, mut links) = (Run::default(), Run::default(), Run::default());
    let mut status = None;
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            1 => trace_id = bytes(&field)?,
            2 => span_id = bytes(&field)?,
            3 => trace_state = bytes(&field)?,
            4 => parent_span_id = bytes(&field)?,
            5 => name = bytes(&field)?,
            6 => kind = varint(&field)? as i32,
            7 => start = fixed64(&field)?,
            8 => end = fixed64(&field)?,
            9 => attributes_run.add(&field),
            10 => dropped_attributes = varint(&field)? as u32,
            11 => events.add(&field),
            12 => dropped_events = varint(&field)? as u32,
            13 => links.add(&field),
            14 => dropped_links = varint(&field)? as u32,
            15 => once(&mut status, &field)?,
            16 => flags = fixed32(&field)?,
            _ => {}
        }
    }
    w.raw(b"{\"traceId\":");
    w.hex(trace_id);
    w.raw(b",\"spanId\":");
    w.hex(span_id);
    w.raw(b",\"traceState\":");
    w.string(trace_state)?;
    w.raw(b",\"parentSpanId\":");
    w.hex(parent_span_id);
    w.raw(b",\"flags\":");
    w.int(flags);
    w.raw(b",\"name\":");
    w.string(name)?;
    w.raw(b",\"kind\":");
    w.int(kind);
    w.raw(b",\"startTimeUnixNano\":");
    w.quoted(start);
    w.raw(b",\"endTimeUnixNano\":");
    w.quoted(end);
    w.raw(b",");
    attributes_and_dropped(w, buf, attributes_run, 9, dropped_attributes)?;
    w.raw(b",\"events\":");
    w.list(buf, events, 11, event)?;
    w.raw(b",\"droppedEventsCount\":");
    w.int(dropped_events);
    w.raw(b",\"links\":");
    w.list(buf, links, 13, link)?;
    w.raw(b",\"droppedLinksCount\":");
    w.int(dropped_links);
    w.raw(b",\"status\":");
    w.optional(status, span_status)?;
    w.raw(b"}");
    Ok(())
}

/// A span's `Event`.
fn event(w: &mut Writer, buf: &[u8]) -> Render {
    let (mut time, mut name, mut attributes_run, mut dropped): (u64, &[u8], _, u32) =
        (0, b"", Run::default(), 0);
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            1 => time = fixed64(&field)?,
            2 => name = bytes(&field)?,
            3 => attributes_run.add(&field),
            4 => dropped = varint(&field)? as u32,
            _ => {}
        }
    }
    w.raw(b"{\"timeUnixNano\":");
    w.quoted(time);
    w.raw(b",\"name\":");
    w.string(name)?;
    w.raw(b",");
    attributes_and_dropped(w, buf, attributes_run, 3, dropped)?;
    w.raw(b"}");
    Ok(())
}

/// A span's `Link`.
fn link(w: &mut Writer, buf: &[u8]) -> Render {
    let (mut trace_id, mut span_id, mut trace_state): (&[u8], &[u8], &[u8]) = (b"", b"", b"");
    let (mut attributes_run, mut dropped, mut flags) = (Run::default(), 0u32, 0u32);
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            1 => trace_id = bytes(&field)?,
            2 => span_id = bytes(&field)?,
            3 => trace_state = bytes(&field)?,
            4 => attributes_run.add(&field),
            5 => dropped = varint(&field)? as u32,
            6 => flags = fixed32(&field)?,
            _ => {}
        }
    }
    w.raw(b"{\"traceId\":");
    w.hex(trace_id);
    w.raw(b",\"spanId\":");
    w.hex(span_id);
    w.raw(b",\"traceState\":");
    w.string(trace_state)?;
    w.raw(b",");
    attributes_and_dropped(w, buf, attributes_run, 4, dropped)?;
    w.raw(b",\"flags\":");
    w.int(flags);
    w.raw(b"}");
    Ok(())
}

/// A span's `Status`.
fn span_status(w: &mut Writer, buf: &[u8]) -> Render {
    let (mut message, mut code): (&[u8], i32) = (b"", 0);
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            2 => message = bytes(&field)?,
            3 => code = varint(&field)? as i32,
            _ => {}
        }
    }
    w.raw(b"{\"message\":");
    w.string(message)?;
    w.raw(b",\"code\":");
    w.int(code);
    w.raw(b"}");
    Ok(())
}
