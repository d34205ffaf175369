//! Flowlake query service: DataFusion over the Delta table, answering historical
//! questions about drops, latency and talkers per pod.
//!
//! Module plan (read path): `table` (Delta snapshot as a `TableProvider`, time and
//! partition pruning) → `sandbox` (read-only SQL) → `sql` (`/api/v1/sql`, output
//! formats) → `questions` (per-pod views and endpoints) → `grafana` (JSON
//! datasource) → `export` (Parquet/Delta to any object store, incremental);
//! `metrics` and `error` beside them.
