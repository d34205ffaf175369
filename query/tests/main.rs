//! Integration tests of the query service (one binary, one module per area).

mod audit;
mod auth;
mod capture;
mod export;
mod export_restart;
mod export_scoped;
mod flight;
mod golden;
mod grafana;
mod http;
mod limits;
mod metrics;
mod namespaces;
mod rollup;
mod sandbox;
mod sigterm;
mod startup;
mod support;
mod tls;
