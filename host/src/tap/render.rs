//! What a tap asks for (`GET /tap?…`) and how its samples are written: one line per item, as
//! OTLP JSON with the item's fate, or as a readable line. This runs on the watcher's side, never
//! on a pipeline's thread: a sample is decoded (owned) here, once.

use std::fmt::Write as _;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics, metric::Data};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_json::json;

use super::{Action, Point, Sample};
use crate::batch::Decoded;
use crate::config::Signal;

/// How items are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line: where, the fate, the plugins' steps, and the item as a one-item
    /// OTLP/JSON export request under `otlp`.
    Json,
    /// One readable line per item.
    Pretty,
}

/// A condition on an item: `FIELD=PATTERN`, where `*` in the pattern matches any run of
/// characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    field: Field,
    pattern: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    /// The span or metric name, or a log record's body.
    Name,
    /// A resource attribute.
    Resource(String),
    /// An attribute of the item (a metric's first data point's).
    Attribute(String),
}

impl Match {
    /// Parses `FIELD=PATTERN`. Fields: `name` (also `span.name`, `metric.name`, `log.body`),
    /// `resource.KEY` (and `service.name`), `attr.KEY` (also `span.KEY`, `log.KEY`,
    /// `metric.KEY`, `attributes.KEY`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (field, pattern) =
            text.split_once('=').ok_or_else(|| format!("match `{text}` is not FIELD=PATTERN"))?;
        let field = match field.trim() {
            "name" | "span.name" | "metric.name" | "log.body" | "body" => Field::Name,
            "service.name" => Field::Resource("service.name".into()),
            other => match other.split_once('.') {
                Some(("resource", key)) if !key.is_empty() => Field::Resource(key.into()),
                Some(("attr" | "attributes" | "span" | "log" | "metric", key)) if !key.is_empty() => {
                    Field::Attribute(key.into())
                }
                _ => {
                    return Err(format!(
                        "match field `{other}` is none of `name`, `resource.KEY`, `attr.KEY` \
                         (or `span.name`, `span.KEY`, `service.name`, …)"
                    ));
                }
            },
        };
        Ok(Self { field, pattern: pattern.to_string() })
    }

    fn matches(&self, item: &Entry<'_>) -> bool {
        let value = match &self.field {
            Field::Name => Some(item.name()),
            Field::Resource(key) => find(item.resource_attributes(), key),
            Field::Attribute(key) => find(item.attributes(), key),
        };
        value.is_some_and(|value| wildcard(self.pattern.as_bytes(), value.as_bytes()))
    }
}

/// Whether `text` matches `pattern`, `*` matching any run of bytes.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    // The classic greedy walk: on a mismatch, retry from just after the last `*`.
    let (mut p, mut t) = (0, 0);
    let mut retry: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            retry = Some((p + 1, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((after_star, from)) = retry {
            p = after_star;
            t = from + 1;
            retry = Some((after_star, from + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The items a second a tap is handed unless it asks otherwise: more than anyone reads, little
/// enough that rendering them is a small share of a core.
pub const DEFAULT_RATE: u64 = 1_000;

/// What a watcher asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The pipeline (`None`: every pipeline).
    pub pipeline: Option<String>,
    /// Where to look.
    pub point: Point,
    /// Only this signal (`None`: all).
    pub signal: Option<Signal>,
    /// Conditions every item shown meets.
    pub matches: Vec<Match>,
    /// Stop after this many items (`None`: until the watcher leaves).
    pub limit: Option<u64>,
    /// At most this many items a second: batches past it run as if nobody watched, so a tap
    /// costs the host no more than it shows.
    pub rate: u64,
    /// How to write items.
    pub format: Format,
}

impl Request {
    /// Parses the query string of `GET /tap`: `pipeline`, `stage`, `signal`, `match`
    /// (repeatable), `limit`, `rate`, `format` — every problem at once.
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut request = Request {
            pipeline: None,
            point: Point::Receiver,
            signal: None,
            matches: Vec::new(),
            limit: None,
            rate: DEFAULT_RATE,
            format: Format::Json,
        };
        let mut problems = Vec::new();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let outcome = match key.as_ref() {
                "pipeline" => {
                    request.pipeline = Some(value.into_owned());
                    Ok(())
                }
                "stage" => Point::parse(&value).map(|point| request.point = point),
                "signal" => Signal::ALL
                    .into_iter()
                    .find(|s| s.as_str() == value)
                    .ok_or_else(|| format!("signal `{value}` is none of traces, metrics, logs"))
                    .map(|signal| request.signal = Some(signal)),
                "match" => Match::parse(&value).map(|m| request.matches.push(m)),
                "limit" => value
                    .parse::<u64>()
                    .ok()
                    .filter(|&limit| limit > 0)
                    .ok_or_else(|| format!("limit `{value}` is not a positive whole number"))
                    .map(|limit| request.limit = Some(limit)),
                "rate" => value
                    .parse::<u64>()
                    .ok()
                    .filter(|&rate| rate > 0)
                    .ok_or_else(|| format!("rate `{value}` is not a positive whole number"))
                    .map(|rate| request.rate = rate),
                "format" => match value.as_ref() {
                    "json" => Ok(Format::Json),
                    "pretty" => Ok(Format::Pretty),
                    _ => Err(format!("format `{value}` is neither `json` nor `pretty`")),
                }
                .map(|format| request.format = format),
                other => Err(format!("unknown parameter `{other}`")),
            };
            if let Err(problem) = outcome {
                problems.push(problem);
            }
        }
        if problems.is_empty() { Ok(request) } else { Err(problems.join("; ")) }
    }
}

/// Appends one line per item of `sample` that `request` wants, at most `room` of them, and
/// returns how many it wrote.
pub fn render(sample: &Sample, request: &Request, room: u64, out: &mut String) -> u64 {
    if room == 0 || request.signal.is_some_and(|s| s != sample.signal) {
        return 0;
    }
    let decoded = match Decoded::from_protobuf(sample.signal, &sample.payload) {
        Ok(decoded) => decoded,
        Err(error) => {
            // The receivers checked it, so this is a bug worth seeing, not a reason to stop.
            tracing::warn!(%error, "A tap cannot decode a sample");
            return 0;
        }
    };
    let mut written = 0;
    for (index, entry) in entries(&decoded).enumerate() {
        let index = index as u32;
        // `only` is ascending (the chain lists dropped items in batch order).
        if sample.only.as_ref().is_some_and(|only| only.binary_search(&index).is_err()) {
            continue;
        }
        if !request.matches.iter().all(|m| m.matches(&entry)) {
            continue;
        }
        let Some(&received) = sample.origin.get(index as usize) else { continue };
        match request.format {
            Format::Json => json_line(sample, received, &entry, out),
            Format::Pretty => pretty_line(sample, received, &entry, out),
        }
        written += 1;
        if written == room {
            break;
        }
    }
    written
}

/// The line telling a watcher it missed `batches` samples.
pub fn missed_line(format: Format, batches: u64, out: &mut String) {
    let note = "this tap reads slower than the pipeline runs; the pipeline never waits for a tap";
    match format {
        Format::Json => {
            let _ = writeln!(out, "{}", json!({ "missed_batches": batches, "note": note }));
        }
        Format::Pretty => {
            let _ = writeln!(out, "# missed {batches} batches: {note}");
        }
    }
}

/// The plugins' steps for a received item, and who dropped it, if anyone did.
fn fate(sample: &Sample, received: u32) -> (&[super::Step], Option<&str>) {
    let steps = sample.trail.steps(received);
    let dropped_by = steps.iter().find(|step| step.action.drops()).map(|step| &*step.plugin);
    (steps, dropped_by)
}

fn json_line(sample: &Sample, received: u32, entry: &Entry<'_>, out: &mut String) {
    let (steps, dropped_by) = fate(sample, received);
    let steps: Vec<serde_json::Value> = steps
        .iter()
        .map(|step| {
            let mut value = match &step.action {
                Action::Dropped => json!({ "action": "dropped" }),
                Action::Faulted { kind, passed } => {
                    json!({ "action": "fault", "kind": kind, "on_error": if *passed { "pass" } else { "drop" } })
                }
                Action::Set { key, resource } => json!({ "action": "set", "key": key, "resource": resource }),
                Action::Deleted { key, resource } => {
                    json!({ "action": "deleted", "key": key, "resource": resource })
                }
                Action::Renamed { key, new_key, resource } => {
                    json!({ "action": "renamed", "key": key, "new_key": new_key, "resource": resource })
                }
                Action::RenamedMetric(name) => json!({ "action": "renamed_metric", "new_name": name }),
                Action::Routed(route) => json!({ "action": "routed", "route": &**route }),
            };
            value["plugin"] = json!(&*step.plugin);
            value
        })
        .collect();
    let head = json!({
        "pipeline": &*sample.pipeline,
        "stage": &*sample.point,
        "signal": sample.signal.as_str(),
        "route": sample.route.as_deref(),
        "item": received,
        "fate": if dropped_by.is_some() { "dropped" } else { "kept" },
        "dropped_by": dropped_by,
        "steps": steps,
    })
    .to_string();
    let mut otlp = Vec::new();
    if entry.request().write_json(&mut otlp, false).is_err() {
        return;
    }
    // The head without its closing brace, then the item's request as its last member.
    let _ = writeln!(out, "{},\"otlp\":{}}}", &head[..head.len() - 1], String::from_utf8_lossy(&otlp));
}

fn pretty_line(sample: &Sample, received: u32, entry: &Entry<'_>, out: &mut String) {
    let (steps, dropped_by) = fate(sample, received);
    let kind = match sample.signal {
        Signal::Traces => "span",
        Signal::Metrics => "metric",
        Signal::Logs => "log",
    };
    let mut name: String = entry.name().chars().take(80).collect();
    if name.len() < entry.name().len() {
        name.push('…');
    }
    let _ = write!(out, "{} {} {kind} {name:?}", sample.pipeline, sample.point);
    if let Some(service) = find(entry.resource_attributes(), "service.name") {
        let _ = write!(out, " service={service}");
    }
    for attribute in entry.attributes().iter().take(4) {
        let _ = write!(out, " {}={}", attribute.key, shown(attribute.value.as_ref()));
    }
    if entry.attributes().len() > 4 {
        let _ = write!(out, " (+{} more)", entry.attributes().len() - 4);
    }
    if let Some(route) = &sample.route {
        let _ = write!(out, " [route {route}]");
    }
    match dropped_by {
        Some(plugin) => {
            let _ = write!(out, "  → dropped by {plugin}");
        }
        None => {
            let _ = write!(out, "  → kept");
        }
    }
    for step in steps.iter().filter(|step| !step.action.drops()) {
        let plugin = &step.plugin;
        let what = match &step.action {
            Action::Dropped => continue,
            Action::Faulted { kind, .. } => format!("{kind} fault in {plugin}, passed on"),
            Action::Set { key, resource } => format!("{}{key} set by {plugin}", on(*resource)),
            Action::Deleted { key, resource } => format!("{}{key} deleted by {plugin}", on(*resource)),
            Action::Renamed { key, new_key, resource } => {
                format!("{}{key} renamed {new_key} by {plugin}", on(*resource))
            }
            Action::RenamedMetric(name) => format!("renamed {name} by {plugin}"),
            Action::Routed(route) => format!("routed to {route} by {plugin}"),
        };
        let _ = write!(out, " · {what}");
    }
    out.push('\n');
}

fn on(resource: bool) -> &'static str {
    if resource { "resource " } else { "" }
}

fn find(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|a| a.key == key).map(|a| shown(a.value.as_ref()))
}

/// An attribute value as a short text.
fn shown(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex::encode(b),
        Some(any_value::Value::ArrayValue(a)) => format!("[{} values]", a.values.len()),
        Some(any_value::Value::KvlistValue(l)) => format!("{{{} keys}}", l.values.len()),
        Some(any_value::Value::StringValueStrindex(i)) => format!("(string #{i})"),
        None => String::new(),
    }
}

/// One item of a decoded request, with the resource and scope it is under.
enum Entry<'a> {
    Span(&'a ResourceSpans, &'a ScopeSpans, &'a Span),
    Metric(&'a ResourceMetrics, &'a ScopeMetrics, &'a Metric),
    Log(&'a ResourceLogs, &'a ScopeLogs, &'a LogRecord),
}

/// Every item of `decoded`, in batch order.
fn entries(decoded: &Decoded) -> Box<dyn Iterator<Item = Entry<'_>> + '_> {
    match decoded {
        Decoded::Traces(request) => Box::new(request.resource_spans.iter().flat_map(|r| {
            r.scope_spans.iter().flat_map(move |s| s.spans.iter().map(move |i| Entry::Span(r, s, i)))
        })),
        Decoded::Metrics(request) => Box::new(request.resource_metrics.iter().flat_map(|r| {
            r.scope_metrics.iter().flat_map(move |s| s.metrics.iter().map(move |i| Entry::Metric(r, s, i)))
        })),
        Decoded::Logs(request) => Box::new(request.resource_logs.iter().flat_map(|r| {
            r.scope_logs.iter().flat_map(move |s| s.log_records.iter().map(move |i| Entry::Log(r, s, i)))
        })),
    }
}

impl Entry<'_> {
    fn name(&self) -> String {
        match self {
            Entry::Span(_, _, span) => span.name.clone(),
            Entry::Metric(_, _, metric) => metric.name.clone(),
            Entry::Log(_, _, log) => shown(log.body.as_ref()),
        }
    }

    fn resource_attributes(&self) -> &[KeyValue] {
        let resource = match self {
            Entry::Span(r, _, _) => r.resource.as_ref(),
            Entry::Metric(r, _, _) => r.resource.as_ref(),
            Entry::Log(r, _, _) => r.resource.as_ref(),
        };
        resource.map_or(&[], |r| &r.attributes)
    }

    /// The item's attributes; a metric's are its first data point's.
    fn attributes(&self) -> &[KeyValue] {
        match self {
            Entry::Span(_, _, span) => &span.attributes,
            Entry::Log(_, _, log) => &log.attributes,
            Entry::Metric(_, _, metric) => match &metric.data {
                Some(Data::Gauge(g)) => g.data_points.first().map_or(&[], |p| &p.attributes),
                Some(Data::Sum(s)) => s.data_points.first().map_or(&[], |p| &p.attributes),
                Some(Data::Histogram(h)) => h.data_points.first().map_or(&[], |p| &p.attributes),
                Some(Data::ExponentialHistogram(h)) => h.data_points.first().map_or(&[], |p| &p.attributes),
                Some(Data::Summary(s)) => s.data_points.first().map_or(&[], |p| &p.attributes),
                None => &[],
            },
        }
    }

    /// The item alone, as an export request under its resource and scope.
    fn request(&self) -> Decoded {
        match *self {
            Entry::Span(r, s, item) => Decoded::Traces(ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: r.resource.clone(),
                    scope_spans: vec![ScopeSpans {
                        scope: s.scope.clone(),
                        spans: vec![item.clone()],
                        schema_url: s.schema_url.clone(),
                    }],
                    schema_url: r.schema_url.clone(),
                }],
            }),
            Entry::Metric(r, s, item) => Decoded::Metrics(ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    resource: r.resource.clone(),
                    scope_metrics: vec![ScopeMetrics {
                        scope: s.scope.clone(),
                        metrics: vec![item.clone()],
                        schema_url: s.schema_url.clone(),
                    }],
                    schema_url: r.schema_url.clone(),
                }],
            }),
            Entry::Log(r, s, item) => Decoded::Logs(ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: r.resource.clone(),
                    scope_logs: vec![ScopeLogs {
                        scope: s.scope.clone(),
                        log_records: vec![item.clone()],
                        schema_url: s.schema_url.clone(),
                    }],
                    schema_url: r.schema_url.clone(),
                }],
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::plugins::runner::Answer;
    use crate::plugins::testing::spans;
    use crate::tap::{Trail, received};

    /// `GET /healthz`, `render@t1` and `checkout` as received, the health check dropped by
    /// `drop-spans`, `render` routed to `vendor`.
    fn sample() -> Sample {
        let batch = spans(&["GET /healthz", "render@t1", "checkout"]);
        let origin = received(&batch);
        let mut trail = Trail::new(3);
        trail.follow(&Arc::from("drop-spans"), &batch, &origin, &Answer::Drop(vec![0]));
        let routing =
            crate::plugins::bindings::types::Routing { routes: vec!["vendor".into()], by_item: vec![1] };
        let rest: crate::tap::Origin = Arc::from([1, 2]);
        trail.follow(&Arc::from("router"), &batch, &rest, &Answer::Route(routing));
        Sample {
            pipeline: Arc::from("traces"),
            point: Arc::from("receiver"),
            signal: Signal::Traces,
            payload: batch.payload().clone(),
            route: None,
            origin,
            only: None,
            trail: Arc::new(trail),
        }
    }

    fn request(query: &str) -> Request {
        Request::parse(query).unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    fn lines(sample: &Sample, query: &str, room: u64) -> Vec<String> {
        let mut out = String::new();
        let written = render(sample, &request(query), room, &mut out);
        let lines: Vec<String> = out.lines().map(str::to_string).collect();
        assert_eq!(written as usize, lines.len());
        lines
    }

    #[test]
    fn pretty_lines_say_what_became_of_each_item() {
        let shown = lines(&sample(), "format=pretty", 10);
        assert_eq!(shown.len(), 3);
        assert!(shown[0].starts_with("traces receiver span \"GET /healthz\" service=api"), "{}", shown[0]);
        assert!(shown[0].ends_with("→ dropped by drop-spans"), "{}", shown[0]);
        assert!(shown[1].contains("tenant=t1") && shown[1].ends_with("→ kept · routed to vendor by router"));
        assert!(shown[2].ends_with("→ kept"), "{}", shown[2]);
    }

    #[test]
    fn json_lines_carry_the_fate_and_the_item_as_an_otlp_request() {
        let shown = lines(&sample(), "", 10);
        let first: serde_json::Value = serde_json::from_str(&shown[0]).expect("JSON");
        assert_eq!(first["fate"], "dropped");
        assert_eq!(first["dropped_by"], "drop-spans");
        assert_eq!(first["steps"][0], json!({ "plugin": "drop-spans", "action": "dropped" }));
        let spans = &first["otlp"]["resourceSpans"][0]["scopeSpans"][0]["spans"];
        assert_eq!(spans.as_array().map(Vec::len), Some(1), "one item per line");
        assert_eq!(spans[0]["name"], "GET /healthz");
        let attributes = &first["otlp"]["resourceSpans"][0]["resource"]["attributes"];
        assert_eq!(attributes[0]["key"], "service.name", "under its resource");
        let second: serde_json::Value = serde_json::from_str(&shown[1]).expect("JSON");
        assert_eq!((second["fate"].as_str(), second["item"].as_u64()), (Some("kept"), Some(1)));
        assert_eq!(second["steps"][0], json!({ "plugin": "router", "action": "routed", "route": "vendor" }));
        // What a tap line holds is what the OTLP JSON decoder reads.
        let otlp = second["otlp"].to_string();
        assert!(Decoded::from_json(Signal::Traces, otlp.as_bytes()).is_ok());
    }

    #[test]
    fn matches_signals_only_and_room_choose_the_items() {
        let sample = sample();
        let names = |query: &str, room: u64| -> Vec<String> {
            lines(&sample, query, room)
                .iter()
                .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("JSON"))
                .map(|v| v["otlp"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"].to_string())
                .collect()
        };
        assert_eq!(names("match=span.name%3D*e*", 10), ["\"GET /healthz\"", "\"render\"", "\"checkout\""]);
        assert_eq!(names("match=span.name%3Dcheck*", 10), ["\"checkout\""]);
        assert_eq!(names("match=attr.tenant%3Dt1", 10), ["\"render\""]);
        assert_eq!(names("match=service.name%3Dapi&match=name%3D*z", 10), ["\"GET /healthz\""]);
        assert!(names("match=resource.service.name%3Dweb", 10).is_empty());
        assert!(names("signal=logs", 10).is_empty(), "a traces sample, logs asked for");
        assert_eq!(names("", 2).len(), 2, "no more than the room left");
        let only = Sample { only: Some(vec![2]), ..sample.clone() };
        assert_eq!(lines(&only, "", 10).len(), 1);
    }

    #[test]
    fn a_request_reports_every_problem_at_once() {
        let problems = Request::parse("stage=sideways&signal=spans&limit=-1&format=xml&match=oops&color=1")
            .expect_err("all wrong");
        for expected in
            ["stage `sideways`", "signal `spans`", "limit `-1`", "format `xml`", "match `oops`", "`color`"]
        {
            assert!(problems.contains(expected), "{expected} in {problems}");
        }
        let good = request("pipeline=p&stage=exporter%3Aout&signal=metrics&limit=3&format=pretty");
        assert_eq!(good.pipeline.as_deref(), Some("p"));
        assert_eq!(good.point, Point::Exporter("out".into()));
        assert_eq!((good.signal, good.limit, good.format), (Some(Signal::Metrics), Some(3), Format::Pretty));
        assert!(Match::parse("colour.x=1").is_err(), "an unknown field");
    }

    #[test]
    fn wildcards_match_runs_of_any_length() {
        for (pattern, text, expected) in [
            ("*checkout*", "POST /checkout/v2", true),
            ("*checkout*", "checkout", true),
            ("GET /health*", "GET /healthz", true),
            ("GET /health*", "POST /healthz", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("*", "", true),
            ("", "x", false),
            ("exact", "exact", true),
        ] {
            assert_eq!(wildcard(pattern.as_bytes(), text.as_bytes()), expected, "{pattern} ~ {text}");
        }
    }
}
