//! What the plugin tests share: the built plugins, small trace batches, and reading names back.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use sluice_wire::views::{self, SpanView};

use super::runner::{Accepts, Spec};
use crate::batch::Batch;
use crate::config::{OnError, Signal};

/// A built plugin: `plugins/dist/NAME.wasm` (`make plugins` builds them before the Rust tests).
pub fn plugin(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist").join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is missing: run `make plugins`", path.display());
    path
}

/// A processor spec for `name` with `config_json`, the default limits and `on_error`.
pub fn spec(name: &str, config_json: &str, on_error: OnError) -> Spec {
    Spec {
        name: Arc::from(name),
        path: plugin(name),
        pin: None,
        config_json: config_json.into(),
        max_memory: 16 << 20,
        timeout: Duration::from_millis(100),
        init_timeout: Duration::from_secs(1),
        on_error,
        env: Vec::new(),
        // Compiled components are cached beside the build, so each test compiles a plugin once.
        cache_dir: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-test-cache")),
        accepts: Accepts::Processors,
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

/// One resource (with `tenant` set on it) holding spans with these names, each with a `tenant`
/// attribute of its own when given as `name@tenant`.
pub fn spans(names: &[&str]) -> Arc<Batch> {
    let spans = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (name, tenant) = name.split_once('@').unwrap_or((name, ""));
            Span {
                trace_id: vec![1; 16],
                span_id: vec![i as u8 + 1; 8],
                name: name.into(),
                attributes: if tenant.is_empty() { Vec::new() } else { vec![text("tenant", tenant)] },
                ..Default::default()
            }
        })
        .collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![text("service.name", "api")], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    };
    Arc::new(Batch::from_encoded(Signal::Traces, request.encode_to_vec().into(), names.len() as u64))
}

/// The span names in a trace batch, in order.
pub fn names(batch: &Batch) -> Vec<String> {
    views::items(Signal::Traces, batch.payload())
        .map(|item| SpanView::new(item.bytes).name().to_string())
        .collect()
}

/// A resource attribute's value in a trace batch's first resource.
pub fn resource_attribute(batch: &Batch, key: &str) -> Option<String> {
    let resource = views::resources(Signal::Traces, batch.payload()).next()?;
    resource.str_attribute(key).map(str::to_string)
}
