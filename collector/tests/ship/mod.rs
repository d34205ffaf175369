//! Shipping against a fake ingester.

mod fake_ingester;
mod spool;
