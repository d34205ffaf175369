//! Integration tests of the ingester: real HTTP, real WAL on disk, real Delta table.

mod api;
mod common;
mod reader;
