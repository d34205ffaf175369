//! Packet capture (issue #15, docs/capture.md): the control contract between
//! the query service, the ingester and the collectors (`CaptureRequest`,
//! `NodeStatus`, `FileDescription`), and the pure parts every side needs:
//!
//! - [`filter`]: a tcpdump-subset expression compiled to classic BPF, with an
//!   interpreter (`filter::vm`) that runs it on a packet as the kernel would;
//! - [`limits`]: every capture's duration, size, packet and snaplen limits,
//!   their defaults and hard maxima;
//! - [`select`]: namespace, Kubernetes label selector, pod and node names;
//! - [`pcapng`]: the writer and reader of a node's capture file.
//!
//! [`CaptureRequest::check`] validates a request with all of them, so the
//! service refuses what a collector would refuse.

pub mod filter;
pub mod limits;
pub mod pcapng;
pub mod select;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use filter::{Filter, FilterError};
pub use limits::{Limits, Requested};
pub use select::{LabelSelector, PodInfo, Selector, check_id};

/// A capture request that cannot be run: the caller's mistake (a 4xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("invalid limit: {0}")]
    Limit(String),
    #[error("invalid selector: {0}")]
    Selector(String),
}

/// A request as the collector runs it.
#[derive(Debug, Clone)]
pub struct Checked {
    pub selector: Selector,
    pub filter: Filter,
    pub limits: Limits,
}

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

impl CaptureRequest {
    /// Checks every part (id, selector, filter, limits; zero means "not
    /// given" nowhere: each limit must be within its range).
    pub fn check(&self) -> Result<Checked, RequestError> {
        check_id(&self.id)?;
        let limits = Limits::from_request(Requested {
            duration: Some(Duration::from_secs(self.duration_secs)),
            max_bytes: Some(self.max_bytes),
            max_packets: Some(self.max_packets),
            snaplen: Some(self.snaplen),
        })?;
        let selector = Selector::new(
            &self.namespace,
            &self.selector,
            self.pods.clone(),
            self.nodes.clone(),
        )?;
        let filter = Filter::compile(&self.filter, limits.snaplen)?;
        Ok(Checked {
            selector,
            filter,
            limits,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CaptureRequest {
        CaptureRequest {
            id: "c1".into(),
            namespace: "shop".into(),
            selector: "app=web".into(),
            pods: vec![],
            nodes: vec![],
            filter: "tcp port 80".into(),
            duration_secs: 30,
            max_bytes: 1_000_000,
            max_packets: 1000,
            snaplen: 1500,
            requested_by: "ops".into(),
            created: "2026-12-07T00:00:00Z".into(),
            cancelled: false,
        }
    }

    #[test]
    fn a_request_is_checked_in_every_part() {
        let c = request().check().unwrap();
        assert_eq!(c.limits.duration, Duration::from_secs(30));
        assert_eq!(c.filter.source, "tcp port 80");
        assert_eq!(c.selector.namespace, "shop");
        type Spoil = fn(&mut CaptureRequest);
        let bad: [(Spoil, &str); 6] = [
            (|r| r.id = "C_1".into(), "capture id"),
            (|r| r.namespace = "".into(), "namespace"),
            (|r| r.selector = "app in (".into(), "parentheses"),
            (|r| r.filter = "vlan 3".into(), "filter"),
            (|r| r.duration_secs = 0, "duration"),
            (|r| r.max_bytes = u64::MAX, "max_bytes"),
        ];
        for (spoil, what) in bad {
            let mut r = request();
            spoil(&mut r);
            let e = r.check().unwrap_err().to_string();
            assert!(e.contains(what), "{what}: {e}");
        }
    }
}
