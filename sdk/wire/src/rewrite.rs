//! Rebuilding a request without decoding it: items dropped or replaced, resources replaced,
//! everything else copied verbatim, and the length prefixes of the enclosing scope and resource
//! groups re-framed.
//!
//! Two passes over the wire format: the first asks the caller what to do with each resource and
//! item and computes every group's new size; the second writes the output in one go, so each
//! kept byte is copied once. A scope left with no items is omitted, and so is a resource group
//! left with no scopes.
//!
//! [`partition`] splits a request into many in one pass, each item to the part the caller
//! names, under copies of its resource and scope.

use crate::otlp::Signal;
use crate::wire::{Error, Fields, bytes_field_len, put_bytes_field, put_varint};

/// What to do with one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemAction {
    /// Copy it as it is.
    Keep,
    /// Leave it out.
    Drop,
    /// Write these bytes (an encoded item of the same type) instead.
    Replace(Vec<u8>),
}

const REQUEST_GROUPS: u32 = 1;
const GROUP_RESOURCE: u32 = 1;
const GROUP_SCOPES: u32 = 2;
const SCOPE_ITEMS: u32 = 2;

#[derive(Debug, Clone, Copy)]
struct Sized {
    size: usize,
    keep: bool,
}

/// Rebuilds `buf`, an encoded request of `signal`.
///
/// `resource(n, bytes)` sees resource group `n`'s encoded `Resource` (empty when the group has
/// none; the last when it has several, as the views read it) and returns replacement bytes —
/// which then stand for every occurrence — or `None` to keep it. `item(n, bytes)` decides item `n`.
/// Each is called exactly once per resource group / item, in batch order.
pub fn rebuild(
    signal: Signal,
    buf: &[u8],
    mut resource: impl FnMut(u32, &[u8]) -> Option<Vec<u8>>,
    mut item: impl FnMut(u32, &[u8]) -> ItemAction,
) -> Result<Vec<u8>, Error> {
    let _ = signal; // All three requests share one shape; the signal documents intent.
    let mut resources: Vec<Option<Vec<u8>>> = Vec::new();
    let mut items: Vec<ItemAction> = Vec::new();
    let mut groups: Vec<Sized> = Vec::new();
    let mut scopes: Vec<Sized> = Vec::new();

    // Pass 1: decide and measure.
    let mut total = 0;
    for field in Fields::new(buf) {
        let field = field?;
        if field.number != REQUEST_GROUPS {
            total += field.raw.len();
            continue;
        }
        let index = resources.len() as u32;
        let (mut size, mut had_scopes, mut kept_scopes) = (0, false, 0);
        // Protobuf merges a message field that occurs more than once; OTLP senders write the
        // resource once, and the views read the last. A replacement stands for all of them.
        let (mut last_resource, mut resources_raw) = (None, 0);
        for part in Fields::new(field.bytes()?) {
            let part = part?;
            match part.number {
                GROUP_RESOURCE => {
                    last_resource = Some(part.bytes()?);
                    resources_raw += part.raw.len();
                }
                GROUP_SCOPES => {
                    had_scopes = true;
                    let (mut scope_size, mut had_items, mut kept) = (0, false, 0);
                    for entry in Fields::new(part.bytes()?) {
                        let entry = entry?;
                        if entry.number != SCOPE_ITEMS {
                            scope_size += entry.raw.len();
                            continue;
                        }
                        had_items = true;
                        let action = item(items.len() as u32, entry.bytes()?);
                        scope_size += match &action {
                            ItemAction::Keep => entry.raw.len(),
                            ItemAction::Drop => 0,
                            ItemAction::Replace(bytes) => bytes_field_len(SCOPE_ITEMS, bytes.len()),
                        };
                        kept += usize::from(action != ItemAction::Drop);
                        items.push(action);
                    }
                    let keep = !had_items || kept > 0;
                    scopes.push(Sized { size: scope_size, keep });
                    if keep {
                        kept_scopes += 1;
                        size += bytes_field_len(GROUP_SCOPES, scope_size);
                    }
                }
                _ => size += part.raw.len(),
            }
        }
        // A group without a resource can still gain one (a plugin tagging every resource).
        let replaced = resource(index, last_resource.unwrap_or(&[]));
        size += replaced.as_ref().map_or(resources_raw, |r| bytes_field_len(GROUP_RESOURCE, r.len()));
        resources.push(replaced);
        let keep = !had_scopes || kept_scopes > 0;
        groups.push(Sized { size, keep });
        if keep {
            total += bytes_field_len(REQUEST_GROUPS, size);
        }
    }

    // Pass 2: write.
    let mut out = Vec::with_capacity(total);
    let (mut group_index, mut scope_index, mut item_index) = (0, 0, 0);
    for field in Fields::new(buf) {
        let field = field?;
        if field.number != REQUEST_GROUPS {
            out.extend_from_slice(field.raw);
            continue;
        }
        let group = groups[group_index];
        let replaced_resource = resources[group_index].take();
        group_index += 1;
        if !group.keep {
            // Skip the whole group, but keep the scope and item cursors in step.
            for part in Fields::new(field.bytes()?) {
                let part = part?;
                if part.number == GROUP_SCOPES {
                    scope_index += 1;
                    item_index += Fields::new(part.bytes()?)
                        .filter(|e| matches!(e, Ok(e) if e.number == SCOPE_ITEMS))
                        .count();
                }
            }
            continue;
        }
        put_varint(&mut out, (u64::from(REQUEST_GROUPS) << 3) | 2);
        put_varint(&mut out, group.size as u64);
        let mut saw_resource = false;
        for part in Fields::new(field.bytes()?) {
            let part = part?;
            match part.number {
                GROUP_RESOURCE => {
                    match &replaced_resource {
                        // Written once, where the first occurrence stood.
                        Some(bytes) if !saw_resource => put_bytes_field(&mut out, GROUP_RESOURCE, bytes),
                        Some(_) => {}
                        None => out.extend_from_slice(part.raw),
                    }
                    saw_resource = true;
                }
                GROUP_SCOPES => {
                    let scope = scopes[scope_index];
                    scope_index += 1;
                    if scope.keep {
                        put_varint(&mut out, (u64::from(GROUP_SCOPES) << 3) | 2);
                        put_varint(&mut out, scope.size as u64);
                    }
                    for entry in Fields::new(part.bytes()?) {
                        let entry = entry?;
                        if entry.number != SCOPE_ITEMS {
                            if scope.keep {
                                out.extend_from_slice(entry.raw);
                            }
                            continue;
                        }
                        match &items[item_index] {
                            ItemAction::Keep => out.extend_from_slice(entry.raw),
                            ItemAction::Drop => {}
                            ItemAction::Replace(bytes) => put_bytes_field(&mut out, SCOPE_ITEMS, bytes),
                        }
                        item_index += 1;
                    }
                }
                _ => out.extend_from_slice(part.raw),
            }
        }
        if let (false, Some(bytes)) = (saw_resource, replaced_resource) {
            put_bytes_field(&mut out, GROUP_RESOURCE, &bytes);
        }
    }
    debug_assert_eq!(out.len(), total);
    Ok(out)
}

/// Keeps the items for which `keep(n)` is true; the common case of [`rebuild`].
pub fn retain(signal: Signal, buf: &[u8], mut keep: impl FnMut(u32) -> bool) -> Result<Vec<u8>, Error> {
    rebuild(signal, buf, |_, _| None, |n, _| if keep(n) { ItemAction::Keep } else { ItemAction::Drop })
}

/// Splits `buf`, an encoded request, into `parts` requests in one pass: item `n` (counted in
/// batch order) goes to part `part_of(n, item_bytes)`, which must be below `parts`. Each part
/// holds its items in their order, under copies of their resource and scope groups (every
/// field but the items copied verbatim); a part that receives no item is empty. Unlike one
/// [`retain`] per part, the cost does not grow with the number of parts.
///
/// # Panics
///
/// If `part_of` names a part at or past `parts`.
pub fn partition(
    buf: &[u8],
    parts: usize,
    mut part_of: impl FnMut(u32, &[u8]) -> u32,
) -> Result<Vec<Vec<u8>>, Error> {
    let mut out: Vec<Vec<u8>> = vec![Vec::new(); parts];
    let mut request_fields: Vec<&[u8]> = Vec::new();
    let mut item_index = 0u32;
    // Reused per resource group: its fields other than scopes; every scope's fields other than
    // items, one after another, with where each scope's run ends; its items as (part, scope,
    // raw field).
    let mut group_fields: Vec<&[u8]> = Vec::new();
    let mut scope_fields: Vec<&[u8]> = Vec::new();
    let mut scope_ends: Vec<usize> = Vec::new();
    let mut items: Vec<(u32, u32, &[u8])> = Vec::new();
    for field in Fields::new(buf) {
        let field = field?;
        if field.number != REQUEST_GROUPS {
            request_fields.push(field.raw);
            continue;
        }
        group_fields.clear();
        scope_fields.clear();
        scope_ends.clear();
        items.clear();
        for part in Fields::new(field.bytes()?) {
            let part = part?;
            if part.number != GROUP_SCOPES {
                group_fields.push(part.raw);
                continue;
            }
            let scope = scope_ends.len() as u32;
            for entry in Fields::new(part.bytes()?) {
                let entry = entry?;
                if entry.number != SCOPE_ITEMS {
                    scope_fields.push(entry.raw);
                    continue;
                }
                let target = part_of(item_index, entry.bytes()?);
                assert!((target as usize) < parts, "item {item_index} sent to part {target} of {parts}");
                item_index += 1;
                items.push((target, scope, entry.raw));
            }
            scope_ends.push(scope_fields.len());
        }
        // Stable: each part's items stay in batch order within their scope.
        items.sort_by_key(|&(target, scope, _)| (target, scope));
        let fields_of = |scope: u32| {
            let start = scope.checked_sub(1).map_or(0, |before| scope_ends[before as usize]);
            &scope_fields[start..scope_ends[scope as usize]]
        };
        let len = |fields: &[&[u8]]| fields.iter().map(|f| f.len()).sum::<usize>();
        let scope_len = |run: &[(u32, u32, &[u8])]| {
            len(fields_of(run[0].1)) + run.iter().map(|(_, _, raw)| raw.len()).sum::<usize>()
        };
        for run in items.chunk_by(|a, b| a.0 == b.0) {
            let scopes = || run.chunk_by(|a, b| a.1 == b.1);
            let size = len(&group_fields)
                + scopes().map(|scope| bytes_field_len(GROUP_SCOPES, scope_len(scope))).sum::<usize>();
            let target = &mut out[run[0].0 as usize];
            put_varint(target, (u64::from(REQUEST_GROUPS) << 3) | 2);
            put_varint(target, size as u64);
            group_fields.iter().for_each(|raw| target.extend_from_slice(raw));
            for scope in scopes() {
                put_varint(target, (u64::from(GROUP_SCOPES) << 3) | 2);
                put_varint(target, scope_len(scope) as u64);
                fields_of(scope[0].1).iter().for_each(|raw| target.extend_from_slice(raw));
                scope.iter().for_each(|(_, _, raw)| target.extend_from_slice(raw));
            }
        }
    }
    for part in out.iter_mut().filter(|part| !part.is_empty()) {
        request_fields.iter().for_each(|raw| part.extend_from_slice(raw));
    }
    Ok(out)
}
