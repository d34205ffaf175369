//! The pods a node runs, as the collector's Kubernetes watch knows them: the
//! enrichment index's live pod addresses whose node is this one, grouped by
//! pod. Labels are those the index keeps (`--label-allow`).

use std::collections::HashMap;

use super::select::PodInfo;
use crate::enrich::IpIndex;

/// The pods of `node` in the enrichment index: live pod addresses grouped by pod.
pub fn on_node(index: &IpIndex, node: &str) -> Vec<PodInfo> {
    let mut pods: HashMap<(String, String), PodInfo> = HashMap::new();
    for (ip, identity) in index.live_pods() {
        let (Some(ns), Some(name)) = (&identity.namespace, &identity.pod) else {
            continue;
        };
        if identity.node.as_deref() != Some(node) {
            continue;
        }
        pods.entry((ns.clone(), name.clone()))
            .or_insert_with(|| PodInfo {
                namespace: ns.clone(),
                name: name.clone(),
                node: node.to_string(),
                labels: identity.labels.iter().cloned().collect(),
                ips: Vec::new(),
                interface: None,
            })
            .ips
            .push(ip);
    }
    let mut out: Vec<PodInfo> = pods.into_values().collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for p in &mut out {
        p.ips.sort();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{TimeZone, Utc};
    use flowlake_schemas::Identity;

    use super::*;
    use crate::enrich::index::Owner;

    #[test]
    fn live_pods_of_the_node_grouped_with_their_addresses() {
        let t = Utc.timestamp_opt(1_000, 0).unwrap();
        let mut index = IpIndex::new(chrono::Duration::seconds(60));
        let pod = |name: &str, node: &str| {
            Arc::new(Identity {
                namespace: Some("shop".into()),
                pod: Some(name.into()),
                node: Some(node.into()),
                labels: vec![("app".into(), "web".into())],
                ..Identity::default()
            })
        };
        let web = pod("web-0", "n1");
        for ip in ["10.0.0.2", "fd00::2"] {
            index.upsert(
                ip.parse().unwrap(),
                &Owner::Pod("u1".into()),
                t,
                web.clone(),
            );
        }
        index.upsert(
            "10.0.0.3".parse().unwrap(),
            &Owner::Pod("u2".into()),
            t,
            pod("web-1", "n2"),
        );
        index.upsert(
            "10.0.0.4".parse().unwrap(),
            &Owner::Pod("u3".into()),
            t,
            pod("gone", "n1"),
        );
        index.release("10.0.0.4".parse().unwrap(), &Owner::Pod("u3".into()), t);
        let svc = Arc::new(Identity {
            namespace: Some("shop".into()),
            service: Some("web".into()),
            node: Some("n1".into()),
            ..Identity::default()
        });
        index.upsert(
            "10.96.0.1".parse().unwrap(),
            &Owner::Service("shop/web".into()),
            t,
            svc,
        );
        let pods = on_node(&index, "n1");
        assert_eq!(pods.len(), 1, "{pods:?}");
        assert_eq!(pods[0].name, "web-0");
        assert_eq!(pods[0].ips.len(), 2);
        assert_eq!(pods[0].labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(pods[0].interface, None);
    }
}
