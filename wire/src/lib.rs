//! The ingest wire format: an HTTP request body (or a WAL record) holding an
//! Arrow IPC stream of flow records, optionally zstd-compressed by
//! Content-Encoding and/or per buffer by IPC compression (zstd, lz4), becomes
//! validated batches in the exact flow schema.
//!
//! Kept apart from the ingester so the fuzz target (`fuzz/`, `ipc_decode`) builds
//! only arrow, zstd and the schema crate.

pub mod decode;
pub mod encoding;
pub mod error;
mod fb_schema;
mod guard;
mod layout;

pub use decode::{DecodedBody, decode_any, decode_body, decode_bytes, encode_ipc};
pub use encoding::BodyEncoding;
pub use error::{DecodeError, Result};
