//! Lines in the host's log, tagged with the plugin's name and rate-limited by the host.

use crate::bindings::host;

/// Logs at debug level.
pub fn debug(message: &str) {
    host::log(host::Level::Debug, message);
}

/// Logs at info level.
pub fn info(message: &str) {
    host::log(host::Level::Info, message);
}

/// Logs a warning.
pub fn warn(message: &str) {
    host::log(host::Level::Warn, message);
}

/// Logs an error.
pub fn error(message: &str) {
    host::log(host::Level::Error, message);
}
