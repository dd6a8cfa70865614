//! Zero-copy, allocation-free views over OTLP protobuf batches.
//!
//! Owned protobuf decoding allocates every string and attribute of every item; that costs
//! ~1.8 µs per span, far more than moving the bytes through a telemetry host. This crate walks
//! the protobuf wire format instead and hands out borrowed slices, so a reader pays only for the
//! fields it looks at. The host uses it to count and validate batches on receipt without
//! decoding them; the guest SDK uses the same views inside WebAssembly plugins.
//!
//! # Layout
//! - [`wire`]: the protobuf wire format itself — varints, tags and a field iterator.
//! - [`otlp`]: OTLP's message shapes on top of it — resources, scopes, items and attributes of
//!   `Export{Trace,Metrics,Logs}ServiceRequest`.
//! - [`check`]: the whole-request check against OTLP's schema, exactly as strict as the
//!   reference decoder, counting items on the way ([`summarize`]).
//! - [`rewrite`]: rebuild a request with items dropped or replaced, re-framing lengths.
//! - [`edit`]: attribute and name edits on single encoded messages.
//! - [`views`]: typed borrowed views of spans, metrics, log records and resources.

#![deny(missing_docs)]

pub mod check;
pub mod edit;
pub mod otlp;
pub mod rewrite;
pub mod views;
pub mod wire;

pub use otlp::{Signal, Summary, summarize};
pub use wire::{Error, Field, Fields, Value};
