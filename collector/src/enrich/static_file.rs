//! Outside Kubernetes: identities from a static file of IP → identity (YAML or JSON).
//!
//! ```yaml
//! - ip: 10.0.0.7
//!   namespace: shop
//!   pod: checkout-1
//!   workload: checkout
//!   workload_kind: Deployment
//!   labels: {app: checkout}
//!   node: host-a
//!   service: checkout
//!   zone: zone-a
//! ```
//! A JSON file holds the same list. Labels are taken as written.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use flowlake_schemas::Identity;
use serde::Deserialize;

use super::error::{EnrichError, Result};
use super::index::{IpIndex, Owner};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    ip: String,
    namespace: Option<String>,
    pod: Option<String>,
    workload: Option<String>,
    workload_kind: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    node: Option<String>,
    service: Option<String>,
    zone: Option<String>,
}

/// Parses a static identity file (JSON if it ends in `.json`, YAML otherwise).
pub fn load(path: &Path) -> Result<Vec<(IpAddr, Identity)>> {
    let text = std::fs::read_to_string(path).map_err(|source| EnrichError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |message: String| EnrichError::ParseFile {
        path: path.to_path_buf(),
        message,
    };
    let entries: Vec<FileEntry> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?
    } else {
        serde_saphyr::from_str(&text).map_err(|e| bad(e.to_string()))?
    };
    entries
        .into_iter()
        .map(|e| {
            let ip = e.ip.parse().map_err(|_| EnrichError::BadAddress {
                path: path.to_path_buf(),
                ip: e.ip.clone(),
            })?;
            let identity = Identity {
                namespace: e.namespace,
                pod: e.pod,
                workload: e.workload,
                workload_kind: e.workload_kind,
                labels: e.labels.into_iter().collect(),
                node: e.node,
                service: e.service,
                zone: e.zone,
            };
            Ok((ip, identity))
        })
        .collect()
}

/// Puts the entries of a static file into an index, valid for all time.
pub fn fill(index: &mut IpIndex, entries: Vec<(IpAddr, Identity)>) {
    for (ip, identity) in entries {
        index.upsert(
            ip,
            &Owner::Static,
            DateTime::<Utc>::MIN_UTC,
            Arc::new(identity),
        );
    }
}
