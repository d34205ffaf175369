//! Arrow Flight SQL: the query service's SQL for BI tools, notebooks and the ADBC and
//! JDBC drivers, as Arrow without JSON in between, on its own listener
//! (`--flight-listen`). Statements run through the HTTP SQL endpoint's path — the
//! sandbox, the limits, the caller's namespace scope — and every call is
//! authenticated and audited like an HTTP request.
//!
//! [`service`] implements the Flight SQL calls (statements, prepared statements,
//! `GetSqlInfo`, catalogs, schemas, tables, table types), [`tickets`] keeps started
//! results until their `DoGet`, [`catalog`] answers the metadata calls, [`status`]
//! maps errors to gRPC statuses, [`call`] carries the caller and its audit slot, and
//! [`listen`] serves it all over HTTP/2.

pub mod call;
pub mod catalog;
pub mod listen;
pub mod service;
pub mod status;
pub mod tickets;

pub use listen::{FlightListener, router, start};
pub use service::FlightSql;
