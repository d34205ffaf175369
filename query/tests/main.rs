//! Integration tests of the query service (one binary, one module per area).

mod export;
mod golden;
mod grafana;
mod http;
mod limits;
mod metrics;
mod rollup;
mod sandbox;
mod support;
