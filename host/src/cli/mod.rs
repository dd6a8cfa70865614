//! The command line's own work: what the `sluice` binary renders and asks, beside the library
//! that runs the host.
//!
//! - [`health`]: `sluice health`, a probe of a running host's admin listener.
//! - [`plugin_new`]: `sluice plugin new`, a plugin project to start from.
//! - [`plugin_test`]: `sluice plugin test`, one plugin on one batch file, with a report.
//! - [`tap`]: `sluice tap`, live items at one point of a running host, with each plugin's verdict.
//! - [`top`]: `sluice top`, a running host's rates on one screen.

pub mod health;
pub mod plugin_new;
pub mod plugin_test;
pub mod tap;
pub mod top;
