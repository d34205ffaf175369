//! Integration tests of the ingester: real HTTP, real WAL on disk, real Delta table,
//! real S3-protocol server, independent readers.

mod api;
mod common;
mod compaction;
mod reader;
mod s3;
