//! Flowlake ingester: Arrow IPC batches over HTTP become a Delta Lake table of
//! partitioned Parquet on object storage. Nothing acknowledged is ever lost.
//!
//! Module plan (write path, in order): `http` (axum routes, limits, auth) →
//! `wal` (segments, checksums, group commit, replay) → `buffer` (memory bound,
//! `FlushReason`) → `parquet` (the one owner of writer properties) → `table`
//! (Delta commits on any object_store URL) → `compact` (merge, retention, vacuum,
//! checkpoints); `metrics` and `error` beside them.
