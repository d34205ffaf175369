//! Shipping against a fake ingester.

pub(crate) mod fake_ingester;
mod spool;
