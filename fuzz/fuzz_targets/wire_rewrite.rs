//! Applying a plugin's answer never makes a batch undecodable: on any request the check
//! accepts, arbitrary drops, resource and item attribute edits (set, delete, rename) and metric
//! renames — what the host's `plugins::apply` does with an answer — give a request the check
//! still accepts, holding exactly the items that were kept.

#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use sluice_wire::Signal;
use sluice_wire::edit::{
    AttrEdit, AttrValue, SetMode, edit_attributes, edit_metric_points, set_string_field,
};
use sluice_wire::rewrite::{ItemAction, rebuild};

fn text(u: &mut Unstructured<'_>) -> Result<String> {
    let bytes: &[u8] = u.arbitrary()?;
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

fn edit(u: &mut Unstructured<'_>) -> Result<AttrEdit<'static>> {
    let key = Cow::Owned(text(u)?);
    Ok(match u.int_in_range(0..=2)? {
        0 => {
            let value = match u.int_in_range(0..=3)? {
                0 => AttrValue::Str(Cow::Owned(text(u)?)),
                1 => AttrValue::Int(u.arbitrary()?),
                2 => AttrValue::Double(u.arbitrary()?),
                _ => AttrValue::Bool(u.arbitrary()?),
            };
            let mode = [SetMode::Insert, SetMode::Update, SetMode::Upsert][u.int_in_range(0..=2)?];
            AttrEdit::Set { key, value, mode }
        }
        1 => AttrEdit::Delete { key },
        _ => AttrEdit::Rename { key, new_key: Cow::Owned(text(u)?) },
    })
}

/// What to do with each item and resource, drawn up front so the closures stay simple.
struct Plan {
    resources: Vec<Option<Vec<AttrEdit<'static>>>>,
    items: Vec<(bool, Option<Vec<AttrEdit<'static>>>, Option<String>)>,
}

fn plan(u: &mut Unstructured<'_>) -> Result<Plan> {
    let edits = |u: &mut Unstructured<'_>| -> Result<Option<Vec<AttrEdit<'static>>>> {
        if !u.arbitrary::<bool>()? {
            return Ok(None);
        }
        let n = u.int_in_range(1..=3)?;
        (0..n).map(|_| edit(u)).collect::<Result<Vec<_>>>().map(Some)
    };
    let resources = (0..4).map(|_| edits(u)).collect::<Result<Vec<_>>>()?;
    let mut items = Vec::new();
    for _ in 0..16 {
        let keep = u.ratio(3, 4)?;
        let attributes = edits(u)?;
        let rename = if u.ratio(1, 8)? { Some(text(u)?) } else { None };
        items.push((keep, attributes, rename));
    }
    Ok(Plan { resources, items })
}

// The input: the plan's length (two bytes, little-endian), the plan's bytes (the signal first),
// then the request. `fuzz/seeds/wire_rewrite/` holds valid requests in this frame.
fuzz_target!(|data: &[u8]| {
    let Some((length, rest)) = data.split_first_chunk::<2>() else { return };
    let (plan_bytes, request) = rest.split_at(usize::from(u16::from_le_bytes(*length)).min(rest.len()));
    let mut u = Unstructured::new(plan_bytes);
    let Ok(pick) = u.int_in_range(0..=2u8) else { return };
    let signal = Signal::ALL[usize::from(pick)];
    let Ok(plan) = plan(&mut u) else { return };
    let Ok(before) = sluice_wire::check::check(signal, request) else { return };
    if before.invalid_items > 0 {
        return;
    }
    let attribute_field = match signal {
        Signal::Traces => 9,
        Signal::Logs => 6,
        Signal::Metrics => 0,
    };
    let mut kept = 0u64;
    let mut kept_points = 0u64;
    let rebuilt = rebuild(
        signal,
        request,
        |n, resource| {
            let edits = plan.resources.get(n as usize)?.as_ref()?;
            Some(edit_attributes(resource, 1, edits).expect("a checked resource edits"))
        },
        |n, item| {
            let Some((keep, edits, rename)) = plan.items.get(n as usize) else {
                kept += 1;
                kept_points += sluice_wire::otlp::data_points(item).unwrap_or(0);
                return ItemAction::Keep;
            };
            if !keep {
                return ItemAction::Drop;
            }
            kept += 1;
            kept_points += sluice_wire::otlp::data_points(item).unwrap_or(0);
            let mut out = Cow::Borrowed(item);
            if let Some(edits) = edits {
                let edited = match signal {
                    Signal::Metrics => edit_metric_points(&out, edits),
                    _ => edit_attributes(&out, attribute_field, edits),
                };
                out = Cow::Owned(edited.expect("a checked item edits"));
            }
            if let (Some(name), Signal::Metrics) = (rename, signal) {
                out = Cow::Owned(set_string_field(&out, 1, name).expect("a checked metric renames"));
            }
            ItemAction::Replace(out.into_owned())
        },
    )
    .expect("a checked request rebuilds");
    let after = sluice_wire::check::check(signal, &rebuilt).expect("what an answer makes, the check accepts");
    let expected = if signal == Signal::Metrics { kept_points } else { kept };
    assert_eq!(after.items, expected, "the items kept, and only those");
    assert_eq!(after.invalid_items, 0);
});
