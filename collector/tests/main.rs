//! Integration tests of flowlake-collector (one binary, one module per area).

mod enrich_kube;
mod fake_ingester;
mod fake_kube;
mod ship_spool;
