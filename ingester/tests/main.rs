//! Integration tests of the ingester: real HTTP, real WAL on disk, real Delta table,
//! real S3- and Azure-protocol servers, a GCS XML API fake, independent readers.

mod api;
mod auth;
mod azure;
mod capture;
mod cloud;
mod common;
mod compaction;
mod evolution;
mod gcs;
mod reader;
mod recovery;
mod s3;
mod txn_retention;
