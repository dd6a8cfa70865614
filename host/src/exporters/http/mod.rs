//! Everything network exporters share to send over HTTP: the client (HTTP/1.1 and HTTP/2 over
//! rustls), delivery (credentials, timeouts, retries, counters) and the pure decisions behind
//! it (what an answer means, when to try again).
//!
//! # Layout
//! - [`client`]: the hyper client and its TLS settings.
//! - [`delivery`]: one exporter's sending: attempts, retries, outcomes counted.
//! - [`verdict`]: reading an answer, the `Retry-After` header and the retry schedule.

pub mod client;
pub mod delivery;
pub mod verdict;
