//! WebAssembly plugins: loading, sandboxing and calling them, and applying their answers.
//!
//! # Layout
//! - [`bindings`]: host bindings generated from `sdk/wit` (0.2.0) and `sdk/wit-0.1.0`.
//! - [`view`]: the `batch` resource 0.2.0 plugins read batches through.
//! - [`sandbox`]: the engine, epoch deadlines, memory caps and the capability-free WASI context.
//! - [`loader`]: reading, pin checking, compiling (with a disk cache) and world detection.
//! - [`runner`]: one plugin's instance lifecycle — calls, faults, recreation with backoff.
//! - [`apply`]: turning an answer (drops, edits, routes) into new batch bytes without decoding.
//! - [`chain`]: a pipeline's processors in order.

pub mod apply;
pub mod bindings;
pub mod chain;
pub mod loader;
pub mod runner;
pub mod sandbox;
#[cfg(test)]
pub(crate) mod testing;
pub mod view;
