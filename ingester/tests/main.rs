//! Integration tests of the ingester: real HTTP, real WAL on disk, real Delta table,
//! real S3- and Azure-protocol servers, independent readers.

mod api;
mod azure;
mod cloud;
mod common;
mod compaction;
mod reader;
mod s3;
