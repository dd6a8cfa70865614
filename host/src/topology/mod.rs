//! The running arrangement of receivers, pipelines, plugin instances and exporters, and how a
//! reload changes it.
//!
//! # Layout
//! - [`diff`]: what a reload changes — a pure comparison of two configs and their plugin files
//!   into Keep, Build or Remove per component, and the changes that need a restart.
//! - `build`: constructs what the diff says to build, beside what serves.
//! - [`running`]: starts the host, swaps in what a reload built, drains what it replaced, and
//!   shuts down in order.

mod build;
pub mod diff;
pub mod running;

pub use diff::{Change, Diff};
pub use running::{Running, run, start};
