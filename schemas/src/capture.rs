//! What a collector tells the ingester of a completed capture file (issue
//! #15, docs/capture.md): one row per captured pod interface.

use serde::{Deserialize, Serialize};

/// One captured interface of a node's file: a row of the captures listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceRow {
    pub namespace: String,
    pub pod: String,
    pub interface: String,
    /// RFC 3339.
    pub start: String,
    pub end: String,
    pub packets: u64,
    pub bytes: u64,
    pub lost: u64,
}

/// A node's capture file, described when its upload completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDescription {
    pub size: u64,
    pub crc32c: u32,
    pub filter: String,
    pub requested_by: String,
    pub stop_reason: String,
    pub interfaces: Vec<InterfaceRow>,
    /// Set by the ingester: where the file is stored.
    #[serde(default)]
    pub object_path: String,
}
