//! `sample-traces`: keeps a consistent share of traces, decided by trace ID alone, so every
//! host (and every span of a trace) makes the same choice.
//!
//! ```toml
//! [[pipelines.default.processors]]
//! plugin = "plugins/sample-traces.wasm"
//! config = { percentage = 25.0 }
//! ```
//!
//! The decision uses the trace ID's last 7 bytes, the part W3C Trace Context level 2 requires
//! to be random, compared against `percentage` of 2^56 — the same rule as OpenTelemetry's
//! TraceIdRatioBased sampler threshold. Spans without a valid trace ID are kept.

use serde::Deserialize;
use sluice_sdk::prelude::*;

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config_ {
    /// Share of traces to keep, 0 to 100.
    percentage: f64,
}

/// The sampler.
#[derive(Debug)]
pub struct SampleTraces {
    /// Keep traces whose 56-bit randomness is below this.
    threshold: u64,
}

const RANDOM_SPACE: u64 = 1 << 56;

impl SampleTraces {
    /// A sampler keeping `percentage` percent of traces.
    pub fn with_percentage(percentage: f64) -> Result<Self, String> {
        if !(0.0..=100.0).contains(&percentage) {
            return Err(format!("percentage must be between 0 and 100, not {percentage}"));
        }
        Ok(Self { threshold: (percentage / 100.0 * RANDOM_SPACE as f64) as u64 })
    }

    /// Whether the trace with this ID is kept.
    pub fn keeps(&self, trace_id: &[u8]) -> bool {
        let Ok(id) = <[u8; 16]>::try_from(trace_id) else { return true };
        let mut low = [0u8; 8];
        low[1..].copy_from_slice(&id[9..]);
        u64::from_be_bytes(low) < self.threshold
    }
}

impl Filter for SampleTraces {
    const SIGNALS: Signals = Signals::TRACES;

    fn init(config: &Config) -> Result<Self, String> {
        Self::with_percentage(config.parse::<Config_>()?.percentage)
    }

    fn keep_span(&self, span: &SpanView<'_>, _resource: &ResourceView<'_>) -> bool {
        self.keeps(span.trace_id())
    }
}

sluice_sdk::export_filter!(SampleTraces);

#[cfg(test)]
mod tests {
    use super::*;

    fn built_from_config(percentage: f64) -> SampleTraces {
        let config = Config::from_json(&format!(r#"{{"percentage": {percentage}}}"#)).expect("json");
        <SampleTraces as Filter>::init(&config).expect("valid")
    }

    #[test]
    fn keeps_about_the_configured_share_and_is_consistent() {
        // Two samplers built apart, as two hosts (or a host after a restart) build them: they
        // must agree on every trace.
        let sampler = SampleTraces::with_percentage(25.0).expect("valid");
        let elsewhere = built_from_config(25.0);
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut kept = 0;
        for _ in 0..10_000 {
            let mut id = [0u8; 16];
            for chunk in id.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            assert_eq!(sampler.keeps(&id), elsewhere.keeps(&id), "{id:02x?}");
            kept += usize::from(sampler.keeps(&id));
        }
        assert!((2_200..2_800).contains(&kept), "kept {kept} of 10000");
        assert!(SampleTraces::with_percentage(100.0).expect("valid").keeps(&[0x11; 16]));
        assert!(!SampleTraces::with_percentage(0.0).expect("valid").keeps(&[0; 16]));
        assert!(SampleTraces::with_percentage(250.0).is_err());
        assert!(sampler.keeps(b"short"), "invalid IDs are kept");
    }

    /// Known vectors: the decision is the ID's last 7 bytes, big-endian, against the
    /// percentage of 2^56; the first 9 bytes play no part.
    #[test]
    fn decides_by_the_last_seven_bytes_of_the_trace_id() {
        let quarter = SampleTraces::with_percentage(25.0).expect("valid");
        let id = |head: u8, tail: [u8; 7]| -> [u8; 16] {
            let mut id = [head; 16];
            id[9..].copy_from_slice(&tail);
            id
        };
        // 25% of 2^56 is 0x40_0000_0000_0000.
        assert!(quarter.keeps(&id(0xff, [0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])));
        assert!(!quarter.keeps(&id(0x00, [0x40, 0, 0, 0, 0, 0, 0])));
        assert!(quarter.keeps(&id(0x00, [0x00, 0, 0, 0, 0, 0, 0x01])));
        assert!(!quarter.keeps(&id(0xff, [0xff, 0, 0, 0, 0, 0, 0])));
        // The W3C Trace Context example ID: its last 7 bytes are 0xce929d0e0e4736, 80.7% of 2^56.
        let w3c =
            [0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36];
        assert!(!SampleTraces::with_percentage(80.0).expect("valid").keeps(&w3c));
        assert!(SampleTraces::with_percentage(81.0).expect("valid").keeps(&w3c));
        assert!(!built_from_config(80.0).keeps(&w3c));
        assert!(built_from_config(81.0).keeps(&w3c));
    }
}
