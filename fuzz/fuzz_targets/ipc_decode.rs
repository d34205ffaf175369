//! Fuzz the ingest decode path: Content-Encoding, Arrow IPC stream decoding (with
//! IPC-level compression) and flow-schema validation. Anything may be refused;
//! nothing may panic or abort, and whatever is accepted conforms to the schema.
//!
//! `cargo +nightly fuzz run ipc_decode` (from the repository root). The same
//! property runs deterministically in `ingester/src/decode/tests.rs`
//! (`mutated_bodies_never_panic`) on stable.

#![no_main]

use flowlake_ingester::{BodyEncoding, decode_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (encoding, body) = match data.split_first() {
        Some((b, rest)) if b % 2 == 1 => (BodyEncoding::Zstd, rest),
        Some((_, rest)) => (BodyEncoding::Identity, rest),
        None => (BodyEncoding::Identity, data),
    };
    if let Ok(decoded) = decode_body(body, encoding, 16 << 20) {
        for batch in &decoded.batches {
            assert_eq!(batch.schema(), flowlake_schemas::flow_schema());
        }
    }
});
