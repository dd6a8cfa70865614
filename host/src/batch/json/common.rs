//! The messages every signal shares: attributes and their values, resources, scopes, and the
//! resource and scope groups around the items.

use sluice_wire::Fields;

use super::writer::{DEPTH_LIMIT, NotCanonical, Render, Run, Writer, bytes, fixed64, is_plain, once, varint};

/// A `KeyValue`: `{"key":…,"value":…}`, and `keyStrindex` when set.
pub(super) fn key_value(w: &mut Writer, buf: &[u8], depth: u32) -> Render {
    if let Some((key, value)) = string_attribute(buf) {
        w.raw(b"{\"key\":");
        w.string(key)?;
        w.raw(b",\"value\":{\"stringValue\":");
        w.string(value)?;
        w.raw(b"}}");
        return Ok(());
    }
    let (mut key, mut value, mut key_strindex): (&[u8], _, i32) = (b"", None, 0);
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            1 => key = bytes(&field)?,
            2 => once(&mut value, &field)?,
            3 => key_strindex = varint(&field)? as i32,
            _ => {}
        }
    }
    w.raw(b"{\"key\":");
    w.string(key)?;
    w.raw(b",\"value\":");
    w.optional(value, |w, value| any_value(w, value, depth + 1))?;
    if key_strindex != 0 {
        w.raw(b",\"keyStrindex\":");
        w.int(key_strindex);
    }
    w.raw(b"}");
    Ok(())
}

/// The key and value of an attribute in the shape nearly all of them have: a short key, then a
/// short string value, each given once (`0a klen key 12 vlen 0a slen value`).
#[inline]
fn string_attribute(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let [0x0a, key_len, rest @ ..] = buf else { return None };
    let key_len = usize::from(*key_len);
    if key_len >= 0x80 || rest.len() < key_len {
        return None;
    }
    let (key, rest) = rest.split_at(key_len);
    let [0x12, value_len, 0x0a, string_len, value @ ..] = rest else { return None };
    let fits =
        *value_len < 0x80 && *string_len < 0x80 && usize::from(*value_len) == usize::from(*string_len) + 2;
    (fits && value.len() == usize::from(*string_len)).then_some((key, value))
}

/// The one field an `AnyValue` holds (the last given wins, as protobuf's oneof rule says).
#[derive(Clone, Copy, PartialEq)]
enum Any<'a> {
    Empty,
    String(&'a [u8]),
    Bool(bool),
    Int(i64),
    Double(f64),
    Array(&'a [u8]),
    Kvlist(&'a [u8]),
    Bytes(&'a [u8]),
    StringIndex(i32),
}

/// An `AnyValue`: `{}` when empty, else `{"<kind>Value":…}`.
pub(super) fn any_value(w: &mut Writer, buf: &[u8], depth: u32) -> Render {
    if depth > DEPTH_LIMIT {
        return Err(NotCanonical);
    }
    let mut value = Any::Empty;
    for field in Fields::new(buf) {
        let field = field?;
        let next = match field.number {
            1 => Any::String(bytes(&field)?),
            2 => Any::Bool(varint(&field)? != 0),
            3 => Any::Int(varint(&field)? as i64),
            4 => Any::Double(f64::from_bits(fixed64(&field)?)),
            5 => Any::Array(bytes(&field)?),
            6 => Any::Kvlist(bytes(&field)?),
            7 => Any::Bytes(bytes(&field)?),
            8 => Any::StringIndex(varint(&field)? as i32),
            _ => continue,
        };
        // A message kind given twice in a row is merged, not replaced.
        if matches!((value, next), (Any::Array(_), Any::Array(_)) | (Any::Kvlist(_), Any::Kvlist(_))) {
            return Err(NotCanonical);
        }
        value = next;
    }
    w.raw(value.opening());
    match value {
        Any::Empty => {}
        Any::String(s) => w.string(s)?,
        Any::Bool(b) => w.bool(b),
        Any::Int(i) => w.quoted(i),
        Any::Double(d) => w.float(d),
        Any::Array(array) => w.list(array, Run::whole(array), 1, |w, item| any_value(w, item, depth + 2))?,
        Any::Kvlist(list) => w.list(list, Run::whole(list), 1, |w, item| key_value(w, item, depth + 2))?,
        Any::Bytes(b) => w.base64(b),
        Any::StringIndex(i) => w.int(i),
    }
    w.raw(if matches!(value, Any::Array(_) | Any::Kvlist(_)) { b"}}" } else { b"}" });
    Ok(())
}

impl Any<'_> {
    /// `{"<kind>Value":`, up to where the value starts.
    fn opening(self) -> &'static [u8] {
        match self {
            Any::Empty => b"{",
            Any::String(_) => b"{\"stringValue\":",
            Any::Bool(_) => b"{\"boolValue\":",
            Any::Int(_) => b"{\"intValue\":",
            Any::Double(_) => b"{\"doubleValue\":",
            Any::Array(_) => b"{\"arrayValue\":{\"values\":",
            Any::Kvlist(_) => b"{\"kvlistValue\":{\"values\":",
            Any::Bytes(_) => b"{\"bytesValue\":",
            Any::StringIndex(_) => b"{\"stringValueStrindex\":",
        }
    }
}

/// A list of attributes: field `number`'s occurrences in `run` of `buf`.
///
/// Attributes come one after another in the common shape ([`string_attribute`]) nearly always:
/// as long as they do, and their keys and values need no escaping, each is written straight
/// from its bytes, without walking its fields. From the first that does not, the rest take the
/// general path.
pub(super) fn attributes(w: &mut Writer, buf: &[u8], run: Run, number: u32) -> Render {
    // The field's tag byte: numbered below 16 and length-delimited.
    let tag = u8::try_from(number << 3 | 2).ok().filter(|tag| *tag < 0x80);
    let mut rest = run.of(buf);
    let mut first = true;
    w.raw(b"[");
    while let Some(tag) = tag
        && let [field_tag, len, tail @ ..] = rest
        && *field_tag == tag
        && *len < 0x80
        && let Some((kv, after)) = tail.split_at_checked(usize::from(*len))
        && let Some((key, value)) = string_attribute(kv)
        && is_plain(key)
        && is_plain(value)
    {
        if !first {
            w.raw(b",");
        }
        first = false;
        w.plain_string_attribute(key, value);
        rest = after;
    }
    w.items(rest, number, first, |w, kv| key_value(w, kv, 0))?;
    w.raw(b"]");
    Ok(())
}

/// `"attributes":[…],"droppedAttributesCount":N`, the pair resources, scopes, spans, events,
/// links and log records carry.
pub(super) fn attributes_and_dropped(
    w: &mut Writer,
    buf: &[u8],
    run: Run,
    number: u32,
    dropped: u32,
) -> Render {
    w.raw(b"\"attributes\":");
    attributes(w, buf, run, number)?;
    w.raw(b",\"droppedAttributesCount\":");
    w.int(dropped);
    Ok(())
}

/// A `Resource`.
fn resource(w: &mut Writer, buf: &[u8]) -> Render {
    let (mut attributes_run, mut dropped, mut entity_refs) = (Run::default(), 0u32, Run::default());
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            1 => attributes_run.add(&field),
            2 => dropped = varint(&field)? as u32,
            3 => entity_refs.add(&field),
            _ => {}
        }
    }
    w.raw(b"{");
    attributes_and_dropped(w, buf, attributes_run, 1, dropped)?;
    w.raw(b",\"entityRefs\":");
    w.list(buf, entity_refs, 3, entity_ref)?;
    w.raw(b"}");
    Ok(())
}

/// An `EntityRef` of a resource.
fn entity_ref(w: &mut Writer, buf: &[u8]) -> Render {
    let (mut schema_url, mut kind): (&[u8], &[u8]) = (b"", b"");
    let (mut id_keys, mut description_keys) = (Run::default(), Run::default());
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            1 => schema_url = bytes(&field)?,
            2 => kind = bytes(&field)?,
            3 => id_keys.add(&field),
            4 => description_keys.add(&field),
            _ => {}
        }
    }
    w.raw(b"{\"schemaUrl\":");
    w.string(schema_url)?;
    w.raw(b",\"type\":");
    w.string(kind)?;
    w.raw(b",\"idKeys\":");
    w.list(buf, id_keys, 3, |w, key| w.string(key))?;
    w.raw(b",\"descriptionKeys\":");
    w.list(buf, description_keys, 4, |w, key| w.string(key))?;
    w.raw(b"}");
    Ok(())
}

/// An `InstrumentationScope`.
fn scope(w: &mut Writer, buf: &[u8]) -> Render {
    let (mut name, mut version): (&[u8], &[u8]) = (b"", b"");
    let (mut attributes_run, mut dropped) = (Run::default(), 0u32);
    for field in Fields::new(buf) {
        let field = field?;
        match field.number {
            1 => name = bytes(&field)?,
            2 => version = bytes(&field)?,
            3 => attributes_run.add(&field),
            4 => dropped = varint(&field)? as u32,
            _ => {}
        }
    }
    w.raw(b"{\"name\":");
    w.string(name)?;
    w.raw(b",\"version\":");
    w.string(version)?;
    w.raw(b",");
    attributes_and_dropped(w, buf, attributes_run, 3, dropped)?;
    w.raw(b"}");
    Ok(())
}

/// How one signal names and renders its groups and items.
pub(super) struct Shape {
    /// The request's list of resource groups: `{"resourceSpans":`.
    pub(super) resources_key: &'static [u8],
    /// A resource group's list of scope groups: `,"scopeSpans":`.
    pub(super) scopes_key: &'static [u8],
    /// A scope group's list of items: `,"spans":`.
    pub(super) items_key: &'static [u8],
    /// Renders one item.
    pub(super) item: fn(&mut Writer, &[u8]) -> Render,
}

/// A resource group (`ResourceSpans`, `ResourceMetrics`, `ResourceLogs`): resource, scope
/// groups, schema URL.
pub(super) fn resource_group(w: &mut Writer, buf: &[u8], shape: &Shape) -> Render {
    let group = Group { head_key: b"{\"resource\":", list_key: shape.scopes_key };
    group.render(w, buf, resource, |w, scopes| scope_group(w, scopes, shape))
}

/// A scope group (`ScopeSpans`, …): scope, items, schema URL.
fn scope_group(w: &mut Writer, buf: &[u8], shape: &Shape) -> Render {
    let group = Group { head_key: b"{\"scope\":", list_key: shape.items_key };
    group.render(w, buf, scope, shape.item)
}

/// A message of three fields — a head message (1), a list of messages (2), a schema URL (3) —
/// as resource and scope groups are.
struct Group {
    /// `{"resource":`
    head_key: &'static [u8],
    /// `,"scopeSpans":`
    list_key: &'static [u8],
}

impl Group {
    /// Renders in one pass over the fields when they come in the order every encoder writes them
    /// (head, then list): the batch's bytes are read front to back, as the memory prefetcher
    /// expects of a batch that has gone cold in a queue. A head after the list starts over with
    /// a pass per field.
    fn render(
        &self,
        w: &mut Writer,
        buf: &[u8],
        head: fn(&mut Writer, &[u8]) -> Render,
        item: impl Fn(&mut Writer, &[u8]) -> Render,
    ) -> Render {
        let start = w.len();
        let (mut head_seen, mut items, mut schema_url): (bool, usize, &[u8]) = (false, 0, b"");
        for field in Fields::new(buf) {
            let field = field?;
            match field.number {
                // A second head is merged into the first: left to the owned decoder.
                1 if head_seen => return Err(NotCanonical),
                1 if items == 0 => {
                    w.raw(self.head_key);
                    head(w, bytes(&field)?)?;
                    head_seen = true;
                }
                1 => {
                    w.truncate(start);
                    return self.render_in_passes(w, buf, head, item);
                }
                2 => {
                    if items == 0 && !head_seen {
                        w.raw(self.head_key);
                        w.raw(b"null");
                    }
                    w.raw(if items == 0 { self.list_key } else { b"," });
                    if items == 0 {
                        w.raw(b"[");
                    }
                    item(w, bytes(&field)?)?;
                    items += 1;
                }
                3 => schema_url = bytes(&field)?,
                _ => {}
            }
        }
        if items == 0 && !head_seen {
            w.raw(self.head_key);
            w.raw(b"null");
        }
        if items == 0 {
            w.raw(self.list_key);
            w.raw(b"[");
        }
        w.raw(b"],\"schemaUrl\":");
        w.string(schema_url)?;
        w.raw(b"}");
        Ok(())
    }

    /// The same, whatever the order of the fields.
    fn render_in_passes(
        &self,
        w: &mut Writer,
        buf: &[u8],
        head: fn(&mut Writer, &[u8]) -> Render,
        item: impl Fn(&mut Writer, &[u8]) -> Render,
    ) -> Render {
        let (mut head_bytes, mut list, mut schema_url): (_, _, &[u8]) = (None, Run::default(), b"");
        for field in Fields::new(buf) {
            let field = field?;
            match field.number {
                1 => once(&mut head_bytes, &field)?,
                2 => list.add(&field),
                3 => schema_url = bytes(&field)?,
                _ => {}
            }
        }
        w.raw(self.head_key);
        w.optional(head_bytes, head)?;
        w.raw(self.list_key);
        w.list(buf, list, 2, item)?;
        w.raw(b",\"schemaUrl\":");
        w.string(schema_url)?;
        w.raw(b"}");
        Ok(())
    }
}
