//! Kubernetes objects → [`Identity`]: the owner chain, the label allow-list, zones.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use flowlake_schemas::Identity;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::runtime::reflector::{ObjectRef, Store};

/// The well-known node label naming the node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Which labels are copied into identities (bounds the size of every row).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelFilter {
    allowed: Vec<String>,
}

impl LabelFilter {
    /// Keep only these label keys.
    pub fn new(allowed: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let mut allowed: Vec<String> = allowed.into_iter().map(Into::into).collect();
        allowed.sort();
        allowed.dedup();
        LabelFilter { allowed }
    }

    /// The allowed labels of `labels`, sorted by key.
    pub fn apply(&self, labels: Option<&BTreeMap<String, String>>) -> Vec<(String, String)> {
        let Some(labels) = labels else {
            return Vec::new();
        };
        self.allowed
            .iter()
            .filter_map(|k| labels.get(k).map(|v| (k.clone(), v.clone())))
            .collect()
    }
}

/// The lookup stores the owner chain and zones are resolved from.
#[derive(Clone)]
pub struct Lookups {
    pub nodes: Store<Node>,
    pub replica_sets: Store<ReplicaSet>,
    pub jobs: Store<Job>,
}

fn controller(meta: &ObjectMeta) -> Option<&OwnerReference> {
    let owners = meta.owner_references.as_deref()?;
    owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| owners.first())
}

/// The workload a pod belongs to and its kind: ReplicaSet → Deployment and
/// Job → CronJob are followed one step; StatefulSet, DaemonSet and others are direct.
pub fn workload_of(pod: &Pod, lookups: &Lookups) -> (String, String) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let Some(owner) = controller(&pod.metadata) else {
        return (pod_name, "Pod".into());
    };
    let parent = |meta: Option<&ObjectMeta>| {
        meta.and_then(controller)
            .map(|o| (o.name.clone(), o.kind.clone()))
    };
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let rs = lookups
                .replica_sets
                .get(&ObjectRef::new(&owner.name).within(ns));
            if let Some(rs) = rs {
                return parent(Some(&rs.metadata))
                    .unwrap_or((owner.name.clone(), owner.kind.clone()));
            }
            // Not in the cache (yet): a Deployment's ReplicaSet is `<deployment>-<pod-template-hash>`.
            let hash = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash"));
            match hash.and_then(|h| owner.name.strip_suffix(h.as_str())?.strip_suffix('-')) {
                Some(deployment) => (deployment.to_string(), "Deployment".into()),
                None => (owner.name.clone(), owner.kind.clone()),
            }
        }
        "Job" => {
            let job = lookups.jobs.get(&ObjectRef::new(&owner.name).within(ns));
            parent(job.as_deref().map(|j| &j.metadata))
                .unwrap_or((owner.name.clone(), owner.kind.clone()))
        }
        _ => (owner.name.clone(), owner.kind.clone()),
    }
}

/// The zone label of a node, if the node is known.
pub fn zone_of(node: &str, lookups: &Lookups) -> Option<String> {
    let node = lookups.nodes.get(&ObjectRef::new(node))?;
    node.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned()
}

fn parse_ips<'a>(ips: impl IntoIterator<Item = &'a str>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = ips.into_iter().filter_map(|s| s.parse().ok()).collect();
    out.sort();
    out.dedup();
    out
}

/// What one object contributes to the index: its addresses, since when, as whom.
pub struct Entries {
    pub ips: Vec<IpAddr>,
    pub since: DateTime<Utc>,
    pub identity: Arc<Identity>,
}

/// A pod's own addresses and identity. Host-network pods contribute nothing (their
/// address is the node's, which resolves to the node); finished pods neither (their
/// address is free for reuse).
pub fn pod_entries(
    pod: &Pod,
    service: Option<&str>,
    lookups: &Lookups,
    labels: &LabelFilter,
) -> Option<Entries> {
    let spec = pod.spec.as_ref()?;
    let status = pod.status.as_ref()?;
    if spec.host_network == Some(true)
        || matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
    {
        return None;
    }
    let mut ips: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .collect();
    ips.extend(status.pod_ip.as_deref());
    let ips = parse_ips(ips);
    if ips.is_empty() {
        return None;
    }
    let (workload, kind) = workload_of(pod, lookups);
    let node = spec.node_name.clone();
    let since = status
        .start_time
        .as_ref()
        .or(pod.metadata.creation_timestamp.as_ref())
        .map_or(DateTime::<Utc>::MIN_UTC, |t| to_chrono(&t.0));
    Some(Entries {
        ips,
        since,
        identity: Arc::new(Identity {
            namespace: pod.metadata.namespace.clone(),
            pod: pod.metadata.name.clone(),
            workload: Some(workload),
            workload_kind: Some(kind),
            labels: labels.apply(pod.metadata.labels.as_ref()),
            zone: node.as_deref().and_then(|n| zone_of(n, lookups)),
            node,
            service: service.map(str::to_string),
        }),
    })
}

/// A service's cluster IPs (none for headless services: their endpoints are pods).
pub fn service_entries(svc: &Service, labels: &LabelFilter) -> Option<Entries> {
    let spec = svc.spec.as_ref()?;
    let mut ips: Vec<&str> = spec
        .cluster_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    ips.extend(spec.cluster_ip.as_deref());
    let ips = parse_ips(ips.into_iter().filter(|ip| *ip != "None"));
    if ips.is_empty() {
        return None;
    }
    Some(Entries {
        ips,
        since: svc
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(DateTime::<Utc>::MIN_UTC, |t| to_chrono(&t.0)),
        identity: Arc::new(Identity {
            namespace: svc.metadata.namespace.clone(),
            service: svc.metadata.name.clone(),
            labels: labels.apply(svc.metadata.labels.as_ref()),
            ..Identity::default()
        }),
    })
}

/// A node's addresses (internal and external IPs), named by node and zone.
pub fn node_entries(node: &Node) -> Option<Entries> {
    let addrs = node.status.as_ref()?.addresses.as_ref()?;
    let ips = parse_ips(
        addrs
            .iter()
            .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
            .map(|a| a.address.as_str()),
    );
    if ips.is_empty() {
        return None;
    }
    Some(Entries {
        ips,
        since: node
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(DateTime::<Utc>::MIN_UTC, |t| to_chrono(&t.0)),
        identity: Arc::new(Identity {
            node: node.metadata.name.clone(),
            zone: node
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(ZONE_LABEL).cloned()),
            ..Identity::default()
        }),
    })
}

/// k8s-openapi 0.29 timestamps are `jiff::Timestamp`s.
fn to_chrono(t: &k8s_openapi::jiff::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
