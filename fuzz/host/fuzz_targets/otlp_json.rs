//! The OTLP/JSON decoder never panics, and what it accepts becomes a request the whole-request
//! check accepts, with the same items: the first byte picks the signal, the rest is the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::batch::Decoded;
use sluice_wire::Signal;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let signal = Signal::ALL[usize::from(pick) % 3];
    let Ok(decoded) = Decoded::from_json(signal, body) else { return };
    let encoded = decoded.encode();
    let summary =
        sluice_wire::check::check(signal, &encoded).expect("decoded JSON encodes to a valid request");
    assert_eq!(summary.items, decoded.items());
});
