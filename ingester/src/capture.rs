//! Capture files from collectors (issue #15): chunked, checksummed uploads,
//! resumable after a restart of either side because the received chunks are
//! objects on the table's object store, stored under `_captures/` (Delta
//! readers and vacuum ignore `_`-prefixed paths). See docs/capture.md.
//!
//! - `GET  /api/v1/captures/{id}/files/{node}` → `{"received": N, "complete": bool}`
//! - `PUT  /api/v1/captures/{id}/files/{node}?offset=N` with header
//!   `flowlake-crc32c: <hex>`: the chunk at byte N; 409 with the received
//!   count when N is not where the file stands, 400 when the checksum differs.
//! - `POST /api/v1/captures/{id}/files/{node}/complete` with the file's size,
//!   crc32c and description: the chunks become `_captures/<id>/<node>.pcapng`,
//!   the description `_captures/<id>/<node>.json`. Idempotent.
//!
//! and the control channel ([`control`]): the active requests of a node, and
//! each node's status.

pub mod control;
pub mod error;
pub mod http;
pub mod store;

pub use error::CaptureUploadError;
pub use http::router;
pub use store::{CaptureRequest, CaptureStore, FileDescription, InterfaceRow, NodeStatus};

/// Every capture route of the ingester: uploads and control (callers add
/// authentication: collectors hold scope `ingest`).
pub fn routes(store: CaptureStore, clock: crate::writer::Clock) -> axum::Router {
    router(store.clone()).merge(control::router(store, clock))
}
#[cfg(test)]
mod tests;
