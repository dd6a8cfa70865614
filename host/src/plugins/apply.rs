//! Applying a plugin's answer to a batch: drops and routes splice the encoded bytes, edits
//! rewrite only the resources and items they name. Nothing is decoded.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;

use bytes::Bytes;
use sluice_wire::edit::{
    AttrEdit, AttrValue, SetMode, edit_attributes, edit_metric_points, set_string_field,
};
use sluice_wire::rewrite::{ItemAction, rebuild};

use super::bindings::types;
use super::runner::Answer;
use crate::batch::Batch;
use crate::config::{PluginLimits, Signal};

/// What an answer may do to a batch: a processor's `limits` on keys, values and growth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnswerLimits {
    /// The longest attribute key an edit may set or rename to.
    pub key_size: usize,
    /// The longest string value an edit may set.
    pub value_size: usize,
    /// How many times its size a batch may grow to (plus [`GROWTH_SLACK`]).
    pub growth: f64,
}

/// Bytes any answer may add whatever the batch's size, so small batches can take attributes.
pub const GROWTH_SLACK: usize = 64 << 10;

impl AnswerLimits {
    /// The limits a processor's `limits` table sets.
    pub fn of(limits: &PluginLimits) -> Self {
        Self {
            key_size: limits.key_size.get_ref().as_usize(),
            value_size: limits.value_size.get_ref().as_usize(),
            growth: *limits.growth.get_ref(),
        }
    }

    /// The largest a batch of `size` bytes may become.
    fn grown(&self, size: usize) -> usize {
        (size as f64 * self.growth) as usize + GROWTH_SLACK
    }

    fn key(&self, what: &str, key: &str) -> Result<(), InvalidAnswer> {
        if key.is_empty() {
            return Err(InvalidAnswer(format!("{what} an empty attribute key")));
        }
        if key.len() > self.key_size {
            return Err(InvalidAnswer(format!(
                "{what} a {}-byte attribute key; `limits.key_size` allows {}",
                key.len(),
                self.key_size
            )));
        }
        Ok(())
    }
}

impl Default for AnswerLimits {
    fn default() -> Self {
        Self::of(&PluginLimits::default())
    }
}

/// Why an answer could not be applied (the plugin named items the batch doesn't have, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAnswer(pub String);

/// A batch after a plugin's answer.
#[derive(Debug)]
pub enum Applied {
    /// Nothing changed: pass the original on.
    Unchanged,
    /// The rewritten batch (possibly with no items left).
    Changed(Batch),
}

/// A batch of items copied as they were: the receivers checked them, and splicing re-frames
/// only the groups around them, so they are counted (`items`) rather than checked again.
fn spliced(signal: Signal, bytes: Vec<u8>, items: u64) -> Applied {
    Applied::Changed(Batch::from_encoded(signal, Bytes::from(bytes), items))
}

/// What one encoded item counts for: a span or log record is one; a metric, its data points.
fn weight(signal: Signal, item: &[u8]) -> u64 {
    match signal {
        Signal::Metrics => sluice_wire::otlp::data_points(item).unwrap_or(0),
        Signal::Traces | Signal::Logs => 1,
    }
}

/// What an edit wrote new bytes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rewritten {
    /// A resource.
    Resource,
    /// An item (a span, metric or log record).
    Item,
}

/// Checks bytes an edit wrote, as the receivers check a request: the rest of the batch was
/// checked when it came in and is copied verbatim, so only the new parts need it. An item must
/// also not become one a receiver refuses (the batch came in with none).
fn check_rewritten(signal: Signal, what: Rewritten, bytes: &[u8]) -> Result<(), String> {
    let invalid_items = match what {
        Rewritten::Resource => {
            sluice_wire::check::check_resource(bytes)
                .map_err(|e| format!("an edited resource is invalid: {e}"))?;
            0
        }
        Rewritten::Item => {
            sluice_wire::check::check_item(signal, bytes)
                .map_err(|e| format!("an edited item is invalid: {e}"))?
                .invalid_items
        }
    };
    if invalid_items > 0 {
        return Err(format!(
            "the answer leaves {invalid_items} item(s) a receiver would refuse (bad IDs, a point without a value)"
        ));
    }
    Ok(())
}

/// Applies a processor's answer to `batch`: the one place drops, edits and routes become new
/// batch bytes, for pipelines and `sluice plugin test` alike. Each part carries the route a
/// router chose (`None`: the batch keeps the route it had).
pub fn answer(
    batch: &Batch,
    answer: &Answer,
    limits: &AnswerLimits,
) -> Result<Vec<(Option<String>, Applied)>, InvalidAnswer> {
    match answer {
        Answer::Drop(dropped) => drop_items(batch, dropped.clone()).map(|applied| vec![(None, applied)]),
        Answer::Edit(edits) => edit(batch, edits, limits).map(|applied| vec![(None, applied)]),
        Answer::Route(routing) => route(batch, routing),
        // Loading refuses exporter plugins in a chain, so this answer can't arrive there.
        Answer::Requests(_) => Err(InvalidAnswer("an exporter plugin answered in a processor chain".into())),
    }
}

/// Drops the items at `dropped` (indexes in batch order).
pub fn drop_items(batch: &Batch, mut dropped: Vec<u32>) -> Result<Applied, InvalidAnswer> {
    if dropped.is_empty() {
        return Ok(Applied::Unchanged);
    }
    dropped.sort_unstable();
    dropped.dedup();
    let (signal, mut next, mut kept) = (batch.signal(), 0, 0);
    let bytes = rebuild(
        signal,
        batch.payload(),
        |_, _| None,
        |n, item| {
            if dropped.get(next) == Some(&n) {
                next += 1;
                ItemAction::Drop
            } else {
                kept += weight(signal, item);
                ItemAction::Keep
            }
        },
    )
    .map_err(|e| InvalidAnswer(e.to_string()))?;
    if next < dropped.len() {
        return Err(InvalidAnswer(format!(
            "asked to drop item {}, but the batch has fewer items",
            dropped[next]
        )));
    }
    Ok(spliced(signal, bytes, kept))
}

fn attr_value(value: &types::Value) -> AttrValue<'_> {
    match value {
        types::Value::String(s) => AttrValue::Str(Cow::Borrowed(s)),
        types::Value::Int(i) => AttrValue::Int(*i),
        types::Value::Double(d) => AttrValue::Double(*d),
        types::Value::Boolean(b) => AttrValue::Bool(*b),
    }
}

#[derive(Default)]
struct Grouped<'a> {
    resources: BTreeMap<u32, Vec<AttrEdit<'a>>>,
    items: BTreeMap<u32, Vec<AttrEdit<'a>>>,
    renames: BTreeMap<u32, &'a str>,
}

fn push<'a>(grouped: &mut Grouped<'a>, target: types::Target, edit: AttrEdit<'a>) {
    match target {
        types::Target::Resource(n) => grouped.resources.entry(n).or_default().push(edit),
        types::Target::Item(n) => grouped.items.entry(n).or_default().push(edit),
    }
}

/// Sorts the edits by what they touch, refusing any that make no sense for `signal` or pass
/// `limits`.
fn group<'a>(
    edits: &'a [types::Edit],
    signal: Signal,
    limits: &AnswerLimits,
) -> Result<Grouped<'a>, InvalidAnswer> {
    let mut grouped = Grouped::default();
    for edit in edits {
        match edit {
            types::Edit::SetAttribute(set) => {
                limits.key("an edit sets", &set.key)?;
                if let types::Value::String(text) = &set.value
                    && text.len() > limits.value_size
                {
                    return Err(InvalidAnswer(format!(
                        "an edit sets `{}` to a {}-byte value; `limits.value_size` allows {}",
                        set.key,
                        text.len(),
                        limits.value_size
                    )));
                }
                let mode = match set.mode {
                    types::SetMode::Insert => SetMode::Insert,
                    types::SetMode::Update => SetMode::Update,
                    types::SetMode::Upsert => SetMode::Upsert,
                };
                let edit =
                    AttrEdit::Set { key: Cow::Borrowed(&set.key), value: attr_value(&set.value), mode };
                push(&mut grouped, set.target, edit);
            }
            types::Edit::DeleteAttribute(delete) => {
                limits.key("an edit deletes", &delete.key)?;
                push(&mut grouped, delete.target, AttrEdit::Delete { key: Cow::Borrowed(&delete.key) });
            }
            types::Edit::RenameAttribute(rename) => {
                limits.key("an edit renames", &rename.key)?;
                limits.key("an edit renames to", &rename.new_key)?;
                let edit = AttrEdit::Rename {
                    key: Cow::Borrowed(&rename.key),
                    new_key: Cow::Borrowed(&rename.new_key),
                };
                push(&mut grouped, rename.target, edit);
            }
            types::Edit::RenameMetric(rename) => {
                if signal != Signal::Metrics {
                    return Err(InvalidAnswer(format!("an edit renames a metric in a batch of {signal}")));
                }
                if rename.new_name.is_empty() {
                    return Err(InvalidAnswer("an edit renames a metric to an empty name".into()));
                }
                grouped.renames.insert(rename.item, &rename.new_name);
            }
        }
    }
    Ok(grouped)
}

/// Applies a transform's edits, within `limits`.
pub fn edit(batch: &Batch, edits: &[types::Edit], limits: &AnswerLimits) -> Result<Applied, InvalidAnswer> {
    if edits.is_empty() {
        return Ok(Applied::Unchanged);
    }
    let signal = batch.signal();
    let grouped = group(edits, signal, limits)?;
    let failure: RefCell<Option<String>> = RefCell::new(None);
    let fail = |e: String| {
        failure.borrow_mut().get_or_insert(e);
    };
    // Only what an edit wrote is checked (the rest was checked on receipt); a failure is kept
    // and the bytes kept as they were, so the rebuild runs to the end and the answer is refused.
    let checked = |what: Rewritten, bytes: Vec<u8>| match check_rewritten(signal, what, &bytes) {
        Ok(()) => Some(bytes),
        Err(e) => {
            fail(e);
            None
        }
    };
    let (mut resources_seen, mut items_seen) = (0, 0);
    let bytes = rebuild(
        signal,
        batch.payload(),
        |n, resource| {
            resources_seen = n + 1;
            let edits = grouped.resources.get(&n)?;
            let edited = edit_attributes(resource, 1, edits).map_err(|e| fail(e.to_string())).ok()?;
            checked(Rewritten::Resource, edited)
        },
        |n, item| {
            items_seen = n + 1;
            let attr_edits = grouped.items.get(&n);
            let rename = grouped.renames.get(&n);
            if attr_edits.is_none() && rename.is_none() {
                return ItemAction::Keep;
            }
            let mut edited = Cow::Borrowed(item);
            if let Some(edits) = attr_edits {
                let result = match signal {
                    Signal::Traces => edit_attributes(item, 9, edits),
                    Signal::Logs => edit_attributes(item, 6, edits),
                    Signal::Metrics => edit_metric_points(item, edits),
                };
                match result {
                    Ok(bytes) => edited = Cow::Owned(bytes),
                    Err(e) => {
                        fail(e.to_string());
                        return ItemAction::Keep;
                    }
                }
            }
            if let Some(name) = rename {
                match set_string_field(&edited, 1, name) {
                    Ok(bytes) => edited = Cow::Owned(bytes),
                    Err(e) => fail(e.to_string()),
                }
            }
            checked(Rewritten::Item, edited.into_owned()).map_or(ItemAction::Keep, ItemAction::Replace)
        },
    )
    .map_err(|e| InvalidAnswer(e.to_string()))?;
    if let Some(message) = failure.into_inner() {
        return Err(InvalidAnswer(format!("cannot apply an edit: {message}")));
    }
    let out_of_range = grouped.resources.keys().any(|&n| n >= resources_seen)
        || grouped.items.keys().chain(grouped.renames.keys()).any(|&n| n >= items_seen);
    if out_of_range {
        return Err(InvalidAnswer("an edit names a resource or item the batch doesn't have".into()));
    }
    let (before, after) = (batch.payload().len(), bytes.len());
    if after > limits.grown(before) {
        return Err(InvalidAnswer(format!(
            "the edits grow the batch from {before} to {after} bytes; `limits.growth` allows {}",
            limits.grown(before)
        )));
    }
    // An edit changes attributes and names, never how many items (or data points) there are.
    Ok(Applied::Changed(Batch::from_encoded(signal, Bytes::from(bytes), batch.items())))
}

/// The route indexes (0: the default route) a router's answer sends some item of a batch of
/// `items` items to, ascending: the order of the parts [`route`] returns.
pub fn route_order(routing: &types::Routing, items: usize) -> Vec<u32> {
    let mut used: Vec<u32> = routing.by_item.clone();
    used.sort_unstable();
    used.dedup();
    // Items past the end of `by_item` take the default route.
    if routing.by_item.len() < items && !used.contains(&0) {
        used.insert(0, 0);
    }
    used
}

/// Splits a batch by a router's answer: one batch per route, `None` being the default route.
pub fn route(
    batch: &Batch,
    routing: &types::Routing,
) -> Result<Vec<(Option<String>, Applied)>, InvalidAnswer> {
    if let Some(&bad) = routing.by_item.iter().find(|&&r| r as usize > routing.routes.len()) {
        return Err(InvalidAnswer(format!(
            "route index {bad} is past the {} routes named",
            routing.routes.len()
        )));
    }
    let name = |index: u32| (index > 0).then(|| routing.routes[index as usize - 1].clone());
    let total_items = sluice_wire::views::items(batch.signal(), batch.payload()).count();
    if routing.by_item.len() > total_items {
        return Err(InvalidAnswer("the routing names more items than the batch has".into()));
    }
    let used = route_order(routing, total_items);
    if used.len() <= 1 {
        return Ok(vec![(used.first().and_then(|&r| name(r)), Applied::Unchanged)]);
    }
    let mut parts = Vec::with_capacity(used.len());
    let signal = batch.signal();
    for route_index in used {
        let mut kept = 0;
        let bytes = rebuild(
            signal,
            batch.payload(),
            |_, _| None,
            |n, item| {
                if routing.by_item.get(n as usize).copied().unwrap_or(0) == route_index {
                    kept += weight(signal, item);
                    ItemAction::Keep
                } else {
                    ItemAction::Drop
                }
            },
        )
        .map_err(|e| InvalidAnswer(e.to_string()))?;
        parts.push((name(route_index), spliced(signal, bytes, kept)));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{names, resource_attribute, spans};

    fn changed(applied: Applied) -> Batch {
        match applied {
            Applied::Changed(batch) => batch,
            Applied::Unchanged => panic!("expected a changed batch"),
        }
    }

    #[test]
    fn drops_remove_exactly_the_named_items() {
        let batch = spans(&["a", "b", "c"]);
        let [(route, applied)] = answer(&batch, &Answer::Drop(vec![1]), &AnswerLimits::default())
            .expect("valid")
            .try_into()
            .expect("one");
        assert_eq!(route, None);
        let kept = changed(applied);
        assert_eq!((names(&kept), kept.items()), (vec!["a".to_string(), "c".into()], 2));
        assert!(
            matches!(drop_items(&batch, Vec::new()), Ok(Applied::Unchanged)),
            "nothing dropped, nothing copied"
        );
        let everything = changed(drop_items(&batch, vec![2, 0, 1, 1]).expect("valid"));
        assert_eq!(everything.items(), 0);
        let error = drop_items(&batch, vec![3]).expect_err("out of range");
        assert!(error.0.contains('3'), "{error}");
    }

    #[test]
    fn edits_change_the_resource_and_items_they_name() {
        let batch = spans(&["a", "b"]);
        let edits = [
            set(types::Target::Resource(0), "system", "graphistry"),
            set(types::Target::Item(1), "tenant", "t1"),
        ];
        let [(_, applied)] = answer(&batch, &Answer::Edit(edits.to_vec()), &AnswerLimits::default())
            .expect("valid")
            .try_into()
            .expect("one");
        let edited = changed(applied);
        assert_eq!(resource_attribute(&edited, "system").as_deref(), Some("graphistry"));
        assert_eq!(
            resource_attribute(&edited, "service.name").as_deref(),
            Some("api"),
            "the rest is untouched"
        );
        assert_eq!(names(&edited), ["a", "b"]);
        let tenants: Vec<Option<String>> = sluice_wire::views::items(Signal::Traces, edited.payload())
            .map(|item| {
                sluice_wire::views::SpanView::new(item.bytes).str_attribute("tenant").map(str::to_string)
            })
            .collect();
        assert_eq!(tenants, [None, Some("t1".into())]);
        let stray = [set(types::Target::Item(9), "k", "v")];
        assert!(edit(&batch, &stray, &AnswerLimits::default()).is_err(), "an item the batch doesn't have");
    }

    fn set(target: types::Target, key: &str, value: &str) -> types::Edit {
        types::Edit::SetAttribute(types::SetAttribute {
            target,
            key: key.into(),
            value: types::Value::String(value.into()),
            mode: types::SetMode::Upsert,
        })
    }

    /// What an edit writes is checked as a request is on receipt, and only that: a batch
    /// holding parts no receiver would pass (built here, unchecked) takes edits elsewhere but
    /// not to those parts.
    #[test]
    fn what_an_edit_rewrites_is_checked_as_on_receipt() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::KeyValue;
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        use prost::Message as _;
        let span =
            |trace_id: usize| Span { trace_id: vec![1; trace_id], span_id: vec![2; 8], ..Default::default() };
        let resource = |key: &str| Resource {
            attributes: vec![KeyValue { key: key.into(), ..Default::default() }],
            ..Default::default()
        };
        let group = |key: &str, spans: Vec<Span>| ResourceSpans {
            resource: Some(resource(key)),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![group("ok", vec![span(8), span(16)]), group("k\u{e9}", vec![span(16)])],
        };
        let mut bytes = request.encode_to_vec();
        // The second resource's key becomes `k`, 0xc3, 0xff: not UTF-8.
        let at = bytes.windows(2).position(|w| w == [0xc3, 0xa9]).expect("the key");
        bytes[at + 1] = 0xff;
        let batch = Batch::from_encoded(Signal::Traces, Bytes::from(bytes), 3);
        let limits = AnswerLimits::default();
        let edited = |target| edit(&batch, &[set(target, "k", "v")], &limits).map(changed);
        assert_eq!(edited(types::Target::Item(1)).expect("a good span").items(), 3);
        assert_eq!(edited(types::Target::Resource(0)).expect("a good resource").items(), 3);
        let refused = edited(types::Target::Item(0)).expect_err("a span with an 8-byte trace ID").0;
        assert!(refused.contains("1 item(s) a receiver would refuse"), "{refused}");
        let refused = edited(types::Target::Resource(1)).expect_err("a key that is not UTF-8").0;
        assert!(
            refused.contains("an edited resource is invalid: string field 1 is not valid UTF-8"),
            "{refused}"
        );
        let truncated = check_rewritten(Signal::Traces, Rewritten::Item, &span(16).encode_to_vec()[..10]);
        assert!(truncated.expect_err("cut short").contains("an edited item is invalid: truncated"));
    }

    /// An answer past its limits, or making no sense for the batch, is refused whole.
    #[test]
    fn edits_past_the_limits_or_beside_the_point_are_invalid() {
        let batch = spans(&["a", "b"]);
        let limits = AnswerLimits { key_size: 8, value_size: 16, growth: 1.0 };
        let refused = |edits: Vec<types::Edit>| edit(&batch, &edits, &limits).expect_err("refused").0;
        let item = types::Target::Item(0);
        assert!(refused(vec![set(item, "a-very-long-key", "v")]).contains("`limits.key_size` allows 8"));
        assert!(refused(vec![set(item, "k", &"v".repeat(17))]).contains("`limits.value_size` allows 16"));
        assert!(refused(vec![set(item, "", "v")]).contains("empty attribute key"));
        let rename = |new_key: &str| {
            types::Edit::RenameAttribute(types::RenameAttribute {
                target: item,
                key: "k".into(),
                new_key: new_key.into(),
            })
        };
        assert!(refused(vec![rename("")]).contains("empty attribute key"));
        let metric = types::Edit::RenameMetric(types::RenameMetric { item: 0, new_name: "m".into() });
        assert!(refused(vec![metric]).contains("renames a metric in a batch of traces"));
        // Growth: the 64 KiB slack is the most a small batch may gain.
        let many: Vec<types::Edit> = (0..5_000)
            .map(|i| set(types::Target::Item(i % 2), &format!("k{i}"), "0123456789abcdef"))
            .collect();
        assert!(refused(many).contains("`limits.growth` allows"));
        // Within the limits, the same kinds of edits apply.
        assert!(edit(&batch, &[set(item, "k", "v"), rename("k2")], &limits).is_ok());
    }

    /// Spliced batches are counted, not checked again: a metric counts its data points.
    #[test]
    fn drops_and_routes_count_what_they_keep() {
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        use opentelemetry_proto::tonic::metrics::v1::{
            Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
        };
        use prost::Message as _;
        let point = NumberDataPoint { value: Some(number_data_point::Value::AsInt(1)), ..Default::default() };
        let gauge = |points: usize| Metric {
            data: Some(metric::Data::Gauge(Gauge { data_points: vec![point.clone(); points] })),
            ..Default::default()
        };
        let metrics = vec![gauge(2), gauge(3), gauge(4)];
        let scope_metrics = vec![ScopeMetrics { metrics, ..Default::default() }];
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics { scope_metrics, ..Default::default() }],
        };
        let batch = Batch::from_encoded(Signal::Metrics, Bytes::from(request.encode_to_vec()), 9);
        assert_eq!(changed(drop_items(&batch, vec![1]).expect("valid")).items(), 6);
        let routing = types::Routing { routes: vec!["x".into()], by_item: vec![1, 0, 1] };
        let items: Vec<u64> = route(&batch, &routing)
            .expect("valid")
            .into_iter()
            .map(|(_, applied)| changed(applied).items())
            .collect();
        assert_eq!(items, [3, 6]);
    }

    #[test]
    fn routes_split_the_batch_by_item() {
        let batch = spans(&["a", "b", "c", "d"]);
        // `by-item` may be shorter than the batch: the rest take the default route.
        let routing = types::Routing { routes: vec!["x".into()], by_item: vec![1, 0, 1] };
        let mut parts = answer(&batch, &Answer::Route(routing), &AnswerLimits::default()).expect("valid");
        parts.sort_by(|a, b| a.0.cmp(&b.0));
        let parts: Vec<(Option<String>, Vec<String>)> =
            parts.into_iter().map(|(route, applied)| (route, names(&changed(applied)))).collect();
        assert_eq!(
            parts,
            [
                (None, vec!["b".to_string(), "d".into()]),
                (Some("x".into()), vec!["a".to_string(), "c".into()])
            ]
        );
        let bad = types::Routing { routes: vec!["x".into()], by_item: vec![2] };
        assert!(route(&batch, &bad).is_err(), "route 2 of 1");
    }

    #[test]
    fn an_exporters_answer_is_invalid_in_a_chain() {
        let error = answer(&spans(&["a"]), &Answer::Requests(Vec::new()), &AnswerLimits::default())
            .expect_err("invalid");
        assert!(error.0.contains("exporter plugin"));
    }
}
