//! `sluice plugin test`: runs a plugin on an OTLP JSON batch and reports what it kept, dropped,
//! changed and routed — so authors can try a rule without running the host.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sluice_wire::otlp::AnyValue;
use sluice_wire::views::{self, LogRecordView, MetricView, SpanView};

use sluice::batch::{Batch, Decoded};
use sluice::config::Signal;
use sluice::plugins::apply::{self, AnswerLimits, Applied};
use sluice::plugins::bindings::types;
use sluice::plugins::runner::{Answer, Plugin, Spec, Step};

/// What to run.
#[derive(Debug, Clone)]
pub struct Trial {
    /// The `.wasm` component.
    pub plugin: PathBuf,
    /// The input: OTLP JSON, one `Export*ServiceRequest` per line (the file exporter's format)
    /// or a single JSON object.
    pub input: PathBuf,
    /// The plugin's config as JSON text.
    pub config_json: String,
    /// Where to write the resulting batches (OTLP JSON Lines), if anywhere.
    pub output: Option<PathBuf>,
}

/// Parses `key=value` pairs into a JSON object; values that parse as JSON stay typed
/// (`n=5`, `names=["a","b"]`), anything else is a string (`name=GET /healthz`).
pub fn config_from_pairs(pairs: &[String]) -> Result<String, String> {
    let mut object = serde_json::Map::new();
    for pair in pairs {
        let (key, value) = pair.split_once('=').ok_or_else(|| format!("`{pair}` is not key=value"))?;
        let value =
            serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        object.insert(key.trim().to_string(), value);
    }
    Ok(serde_json::Value::Object(object).to_string())
}

fn read_batches(path: &Path) -> Result<Vec<Decoded>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let values: Vec<serde_json::Value> = match serde_json::from_str(&text) {
        Ok(value) => vec![value],
        Err(_) => text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(n, line)| {
                serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))
            })
            .collect::<Result<_, _>>()?,
    };
    values
        .into_iter()
        .map(|value| {
            let signal = if value.get("resourceSpans").is_some() {
                Signal::Traces
            } else if value.get("resourceMetrics").is_some() {
                Signal::Metrics
            } else if value.get("resourceLogs").is_some() {
                Signal::Logs
            } else {
                return Err("each batch needs resourceSpans, resourceMetrics or resourceLogs".to_string());
            };
            Decoded::from_json(signal, value.to_string().as_bytes()).map_err(|e| e.to_string())
        })
        .collect()
}

fn label(signal: Signal, item: &[u8]) -> String {
    match signal {
        Signal::Traces => SpanView::new(item).name().to_string(),
        Signal::Metrics => MetricView::new(item).name().to_string(),
        Signal::Logs => match LogRecordView::new(item).body() {
            AnyValue::String(b) => String::from_utf8_lossy(b).chars().take(60).collect(),
            other => format!("{other:?}"),
        },
    }
}

fn attributes(signal: Signal, item: &[u8]) -> Vec<String> {
    let attrs = match signal {
        Signal::Traces => SpanView::new(item).attributes(),
        Signal::Logs => LogRecordView::new(item).attributes(),
        Signal::Metrics => return Vec::new(),
    };
    attrs
        .map_while(Result::ok)
        .map(|kv| format!("{}={}", String::from_utf8_lossy(kv.key), show(&kv.value)))
        .collect()
}

fn show(value: &AnyValue<'_>) -> String {
    match value {
        AnyValue::String(b) => format!("{:?}", String::from_utf8_lossy(b)),
        AnyValue::Bool(b) => b.to_string(),
        AnyValue::Int(i) => i.to_string(),
        AnyValue::Double(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn resource_attributes(signal: Signal, batch: &[u8]) -> Vec<Vec<String>> {
    views::resources(signal, batch)
        .map(|r| {
            r.attributes()
                .map_while(Result::ok)
                .map(|kv| format!("{}={}", String::from_utf8_lossy(kv.key), show(&kv.value)))
                .collect()
        })
        .collect()
}

/// What an exporter plugin asked to send: each request's line, headers and body (its start,
/// when long).
fn report_requests(report: &mut String, requests: &[types::HttpRequest]) {
    const SHOWN: usize = 2000;
    let _ = writeln!(report, "  {} requests", requests.len());
    for request in requests {
        let _ = writeln!(report, "  {} {}", http::Method::from(request.method), request.path);
        for (name, value) in &request.headers {
            let _ = writeln!(report, "    {name}: {value}");
        }
        let body = String::from_utf8_lossy(&request.body[..request.body.len().min(SHOWN)]);
        let more = request.body.len().saturating_sub(SHOWN);
        let _ =
            writeln!(report, "    ({} bytes) {body}{}", request.body.len(), if more > 0 { "…" } else { "" });
    }
}

/// Runs the trial and returns the report.
pub fn run(trial: &Trial) -> Result<String, String> {
    let spec = Spec::standalone(&trial.plugin, &trial.config_json);
    let (mut plugin, _) = Plugin::new(spec);
    let Some(kind) = plugin.kind() else {
        return Err(format!("cannot load {} (see the log line above)", trial.plugin.display()));
    };
    let mut report = format!("plugin {} ({} world)\n", trial.plugin.display(), kind.as_str());
    let mut output = String::new();
    for (n, decoded) in read_batches(&trial.input)?.into_iter().enumerate() {
        let items = decoded.items();
        let batch = Batch::from_decoded(decoded, items);
        let signal = batch.signal();
        let before: Vec<(String, Vec<String>)> = views::items(signal, batch.payload())
            .map(|i| (label(signal, i.bytes), attributes(signal, i.bytes)))
            .collect();
        let _ = writeln!(report, "\nbatch {} ({signal}, {} items)", n + 1, before.len());
        let answer = match plugin.run(signal, batch.payload()) {
            Step::Skipped => {
                let _ = writeln!(report, "  skipped: the plugin does not handle {signal}");
                continue;
            }
            Step::Faulted(fault) => {
                return Err(format!("the plugin faulted ({}): {}", fault.kind, fault.message));
            }
            Step::Answered(answer) => answer,
        };
        match &answer {
            Answer::Drop(dropped) => {
                let names: Vec<&str> =
                    dropped.iter().filter_map(|&i| before.get(i as usize)).map(|(l, _)| l.as_str()).collect();
                let _ = writeln!(report, "  dropped {}: {}", names.len(), names.join(", "));
            }
            Answer::Edit(edits) => {
                let _ = writeln!(report, "  {} edits", edits.len());
            }
            Answer::Route(_) => {}
            Answer::Requests(requests) => {
                report_requests(&mut report, requests);
                continue;
            }
        }
        // The same application as a pipeline's: what the report shows is what would flow.
        let results = apply::answer(&batch, &answer, &AnswerLimits::default()).map_err(|e| e.0)?;
        for (route, applied) in results {
            let out = match applied {
                Applied::Unchanged => Batch::from_encoded(signal, batch.payload().clone(), batch.items()),
                Applied::Changed(b) => b,
            };
            let route_name = route.as_deref().unwrap_or("(default)");
            let after: Vec<(String, Vec<String>)> = views::items(signal, out.payload())
                .map(|i| (label(signal, i.bytes), attributes(signal, i.bytes)))
                .collect();
            let names: Vec<&str> = after.iter().map(|(l, _)| l.as_str()).collect();
            let _ = writeln!(report, "  route {route_name}: kept {}: {}", names.len(), names.join(", "));
            let (resources_before, resources_after) =
                (resource_attributes(signal, batch.payload()), resource_attributes(signal, out.payload()));
            if matches!(answer, Answer::Edit(_)) {
                for (r, (old, new)) in resources_before.iter().zip(&resources_after).enumerate() {
                    if old != new {
                        let _ = writeln!(report, "  resource {r}: {}", new.join(" "));
                    }
                }
                for ((label, old), (_, new)) in before.iter().zip(&after) {
                    if old != new {
                        let _ = writeln!(report, "  changed {label}: {}", new.join(" "));
                    }
                }
            }
            if out.items() > 0 {
                let mut line = Vec::new();
                out.decoded()
                    .map_err(|e| e.to_string())?
                    .write_json(&mut line, false)
                    .map_err(|e| e.to_string())?;
                output.push_str(&String::from_utf8_lossy(&line));
                output.push('\n');
            }
        }
    }
    if let Some(path) = &trial.output {
        std::fs::write(path, output).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let _ = writeln!(report, "\nresult written to {}", path.display());
    }
    Ok(report)
}
