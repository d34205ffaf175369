//! Flowlake query service: DataFusion over the Delta table, answering historical
//! questions about drops, latency and talkers per pod.
//!
//! Read path: [`table`] (Delta snapshot as a `TableProvider`, refreshed) and
//! [`pruning`] (time → partition predicates) → [`engine`] (sessions per namespace scope
//! in [`session`], filtered below SQL by [`access`]; limits) on the
//! query runtime ([`exec`]) → [`admission`] (size and depth bounds) and [`sandbox`]
//! (read-only SQL) → [`questions`] (per-pod views) → [`export`] (Parquet/Delta under
//! the operator's export roots, incremental). [`rollup`] keeps hourly per-pod rollups
//! next to the table for the questions. [`http`] holds the handlers, one module per
//! area, behind the shared service layer (`flowlake-service`: auth, audit, health);
//! [`flight`] serves the same SQL over Arrow Flight SQL on a listener of its own;
//! [`server`] starts and drains the service; [`error`], [`config`], [`metrics`] beside them.

pub mod access;
pub mod admission;
mod bounded;
pub mod capture;
pub mod cli;
mod coalesce;
pub mod config;
mod coop;
pub mod dictionaries;
mod dictionary_equality;
pub mod engine;
pub mod error;
pub mod exec;
pub mod export;
pub mod flight;
pub mod format;
pub mod http;
pub mod limits;
pub mod location;
pub mod losses;
pub mod metrics;
mod native_scan;
mod percentiles;
pub mod pruning;
pub mod questions;
pub mod rollup;
pub mod sandbox;
mod selective_first;
pub mod server;
pub mod session;
pub mod storage;
pub mod table;
mod time_bounds;

pub use cli::{export_main, query_main};
pub use config::{QueryArgs, QueryConfig, QueryLimits, TableArgs, TableLocation};
pub use engine::{EngineConfig, FLOWS, QueryEngine};
pub use error::{QueryError, Result};
pub use export::{ExportArgs, ExportConfig, run_export};
pub use format::OutputFormat;
pub use http::{AppState, router};
pub use server::{QueryService, RunningQuery, run};
