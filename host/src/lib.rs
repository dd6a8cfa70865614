//! Sluice: a telemetry pipeline host.
//!
//! OTLP comes in over gRPC and HTTP, flows through pipelines declared in a TOML file, and leaves
//! through exporters. Batches travel as the encoded bytes they arrived as; a stage that needs
//! owned messages decodes a batch once and shares the result.
//!
//! # Layout
//! - [`batch`]: the batch type — the OTLP payload as it arrived — owned decoding, the JSON
//!   mapping and export responses.
//! - [`config`]: the pipeline TOML — typed, environment-substituted, validated with positions.
//! - [`receivers`]: OTLP/gRPC and OTLP/HTTP servers and the checks every request passes, and
//!   the GPU receiver.
//! - [`pipeline`]: the processor chain's thread and the fan-out to exporters.
//! - [`queue`]: the bounded queue every stage uses, keeping its depth and pending gauges.
//! - [`disk_queue`]: an exporter's queue on disk, surviving a killed host.
//! - [`exporters`]: where batches leave — OTLP, Prometheus, files, exporter plugins, and more.
//! - [`kafka`]: what the Kafka exporter and receiver share — brokers, topics, credentials.
//! - [`plugins`]: WebAssembly plugins — loading, the sandbox, running and applying answers.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics` and `/reload`.
//! - [`metrics`]: every metric the host exports, named in one place.
//! - [`memory`]: the memory bound — the receivers refuse new data near `service.memory_limit`.
//! - [`log_throttle`]: one log line per interval for a repeating problem.
//! - [`topology`]: the running host's components — what a reload changes (a pure diff), building
//!   it, swapping it in, and shutting down in order.
//! - [`reload`]: what triggers a reload — file changes, SIGHUP.
//! - [`secret`]: credentials named in the config, read when used.
//! - [`tap`]: live samples of the items passing a pipeline, with each plugin's verdict.
//! - [`tls`]: TLS for the receivers.

#![deny(missing_docs)]

pub mod admin;
pub mod batch;
pub mod config;
pub mod disk_queue;
pub mod exporters;
pub mod gzip;
pub mod kafka;
pub mod log_throttle;
pub mod memory;
pub mod metrics;
pub mod pipeline;
pub mod plugins;
pub mod queue;
pub mod receivers;
pub mod reload;
pub mod secret;
pub mod tap;
pub mod tls;
pub mod topology;
