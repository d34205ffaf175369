//! Flowlake query service: DataFusion over the Delta table, answering historical
//! questions about drops, latency and talkers per pod.
//!
//! Read path: [`table`] (Delta snapshot as a `TableProvider`, refreshed) and
//! [`pruning`] (time → partition predicates) → [`engine`] (session, limits) →
//! [`sandbox`] (read-only SQL) → [`sql`] (`/api/v1/sql`, [`format`]s) →
//! [`questions`] / [`pods`] (per-pod views and endpoints) → [`grafana`] (JSON
//! datasource) → [`export`] (Parquet/Delta to any object store, incremental).
//! [`rollup`] keeps hourly per-pod rollups next to the table for the questions.
//! [`server`] holds the routes; [`error`], [`config`], [`metrics`] beside them.

pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod export;
pub mod format;
pub mod grafana;
pub mod metrics;
mod native_scan;
pub mod openapi;
pub mod pods;
pub mod pruning;
pub mod questions;
pub mod rollup;
pub mod sandbox;
pub mod server;
pub mod sql;
pub mod storage;
pub mod table;

pub use cli::{export_main, query_main};
pub use config::{QueryArgs, QueryConfig, QueryLimits, TableArgs, TableLocation};
pub use engine::{FLOWS, QueryEngine};
pub use error::{QueryError, Result};
pub use export::{ExportArgs, ExportConfig, run_export};
pub use format::OutputFormat;
pub use server::{AppState, QueryService, RunningQuery, router, run};
