//! Flowlake's shared HTTP service layer, used by the query service (and next by the
//! ingester): bearer-token authentication with scopes ([`auth`]), the one JSON error
//! body ([`error`]), an audit line per request ([`audit`]), the open health routes
//! ([`health`]), signal handling ([`shutdown`]) and TLS with certificate reload ([`tls`]).

pub mod audit;
pub mod auth;
pub mod error;
pub mod health;
pub mod reload;
pub mod shutdown;
pub mod tls;

pub use audit::{
    AuditConfig, AuditRecord, AuditSink, AuditSql, BytesIn, CollectingSink, RowCount, SqlAudit,
    TracingSink,
};
pub use auth::{Auth, Principal, Scope, TokenStore, hash_token};
pub use error::{ServiceError, error_response};
pub use reload::{Monotonic, Reloading, system_monotonic};
pub use shutdown::shutdown_signal;
