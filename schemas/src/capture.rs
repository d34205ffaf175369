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

/// A capture as the query service stores it and every collector reads it
/// (`_captures/<id>/request.json`; the control channel of docs/capture.md):
/// the ingester serves the active ones to collectors at
/// `GET /api/v1/captures/requests?node=<node>` (scope `ingest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRequest {
    /// 1 to 64 of `a-z0-9-`.
    pub id: String,
    /// Required; a DNS label.
    pub namespace: String,
    /// Kubernetes label selector in string form (`app=web,tier!=db`); empty = all pods.
    #[serde(default)]
    pub selector: String,
    /// Pod names; empty = any.
    #[serde(default)]
    pub pods: Vec<String>,
    /// Node names; empty = any.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// tcpdump-subset filter; empty = every packet.
    #[serde(default)]
    pub filter: String,
    pub duration_secs: u64,
    pub max_bytes: u64,
    pub max_packets: u64,
    pub snaplen: u32,
    /// Token name of the caller.
    pub requested_by: String,
    /// RFC 3339: when the request was accepted; collectors start on sight
    /// and stop at `created + duration` at the latest.
    pub created: String,
    /// Set when the capture was deleted or stopped early: collectors stop.
    #[serde(default)]
    pub cancelled: bool,
}

/// Where a node's part of a capture stands, reported by its collector at
/// `PUT /api/v1/captures/<id>/nodes/<node>/status` (scope `ingest`) and
/// stored as `_captures/<id>/<node>.status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    /// `running`, `uploading`, `done`, `failed` or `skipped` (no selected pod on the node).
    pub state: String,
    pub packets: u64,
    pub bytes: u64,
    pub lost: u64,
    /// Interfaces captured so far.
    #[serde(default)]
    pub interfaces: Vec<InterfaceRow>,
    /// Why it failed, when it did.
    #[serde(default)]
    pub error: String,
    /// RFC 3339.
    pub updated: String,
}
