//! A synthetic Kubernetes cluster: nodes in zones, namespaces, workloads with
//! replicas spread over nodes, services, and who calls whom.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use flowlake_schemas::Identity;
use rand::seq::IndexedRandom;
use rand::{Rng, RngExt};

/// Sizing of the synthetic cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct TopologyConfig {
    pub cluster: String,
    pub nodes: usize,
    pub namespaces: usize,
    pub workloads_per_namespace: usize,
    pub max_replicas: usize,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            cluster: "demo".into(),
            nodes: 10,
            namespaces: 6,
            workloads_per_namespace: 6,
            max_replicas: 5,
        }
    }
}

const NAMESPACES: &[&str] = &[
    "shop",
    "payments",
    "auth",
    "search",
    "checkout",
    "catalog",
    "media",
    "analytics",
    "mail",
    "ledger",
    "ads",
    "profile",
];
const WORKLOADS: &[&str] = &[
    "frontend",
    "api",
    "cart",
    "orders",
    "inventory",
    "worker",
    "cache",
    "db",
    "queue",
    "gateway",
    "indexer",
    "scheduler",
];
const ZONES: &[&str] = &["zone-a", "zone-b", "zone-c"];

#[derive(Debug)]
pub struct Node {
    pub name: Arc<str>,
    pub ip: IpAddr,
    pub identity: Arc<Identity>,
}

#[derive(Debug)]
pub struct Pod {
    pub ip: IpAddr,
    pub node: usize,
    pub workload: usize,
    pub interface: Arc<str>,
    pub identity: Arc<Identity>,
}

#[derive(Debug)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub kind: &'static str,
    pub pods: Vec<usize>,
    pub service_ip: IpAddr,
    /// Identity of the service's ClusterIP (before DNAT).
    pub service_identity: Arc<Identity>,
    /// Workloads this one calls.
    pub calls: Vec<usize>,
    pub port: u16,
    /// Median smoothed RTT of its connections, in microseconds.
    pub base_rtt_us: f64,
    /// Share of segments retransmitted on its connections.
    pub loss: f64,
}

/// The whole synthetic cluster.
#[derive(Debug)]
pub struct Topology {
    pub cluster: Arc<str>,
    pub nodes: Vec<Node>,
    pub workloads: Vec<Workload>,
    pub pods: Vec<Pod>,
    /// Index of the DNS workload (`kube-system/coredns`).
    pub dns: usize,
    /// Addresses outside the cluster that pods talk to.
    pub external: Vec<IpAddr>,
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

impl Topology {
    /// Generates a cluster from a seeded random source.
    pub fn generate<R: Rng>(cfg: &TopologyConfig, rng: &mut R) -> Self {
        let cluster: Arc<str> = cfg.cluster.as_str().into();
        let nodes: Vec<Node> = (0..cfg.nodes.max(1))
            .map(|i| {
                let name: Arc<str> = format!("node-{i:03}").into();
                let zone = ZONES[i % ZONES.len()];
                Node {
                    ip: v4(10, 128, (i / 250) as u8, (i % 250 + 1) as u8),
                    identity: Arc::new(Identity {
                        node: Some(name.to_string()),
                        zone: Some(zone.into()),
                        ..Identity::default()
                    }),
                    name,
                }
            })
            .collect();
        let mut topo = Topology {
            cluster,
            nodes,
            workloads: Vec::new(),
            pods: Vec::new(),
            dns: 0,
            external: (0..8).map(|i| v4(203, 0, 113, 10 + i)).collect(),
        };
        topo.add_workload(rng, "kube-system", "coredns", "Deployment", 2, 53);
        for n in 0..cfg.namespaces.max(1) {
            let ns = match NAMESPACES.get(n) {
                Some(ns) => (*ns).to_string(),
                None => format!("team-{n}"),
            };
            for w in 0..cfg.workloads_per_namespace.max(1) {
                let name = WORKLOADS[w % WORKLOADS.len()];
                let name = if w < WORKLOADS.len() {
                    name.to_string()
                } else {
                    format!("{name}-{w}")
                };
                let kind = match name.as_str() {
                    "db" | "queue" => "StatefulSet",
                    "scheduler" => "CronJob",
                    _ => "Deployment",
                };
                let replicas = rng.random_range(1..=cfg.max_replicas.max(1));
                let port = match name.as_str() {
                    "db" => 5432,
                    "cache" => 6379,
                    "queue" => 9092,
                    _ => 8080,
                };
                topo.add_workload(rng, &ns, &name, kind, replicas, port);
            }
        }
        topo.wire_calls(rng, cfg.workloads_per_namespace.max(1));
        topo
    }

    fn add_workload<R: Rng>(
        &mut self,
        rng: &mut R,
        ns: &str,
        name: &str,
        kind: &'static str,
        replicas: usize,
        port: u16,
    ) {
        let w = self.workloads.len();
        let service_ip = v4(10, 96, (w / 250) as u8, (w % 250 + 10) as u8);
        let service_identity = Arc::new(Identity {
            namespace: Some(ns.into()),
            service: Some(name.into()),
            ..Identity::default()
        });
        let hash: u32 = rng.random();
        let mut pods = Vec::with_capacity(replicas);
        for r in 0..replicas {
            let node = rng.random_range(0..self.nodes.len());
            let p = self.pods.len();
            let pod_name = match kind {
                "StatefulSet" => format!("{name}-{r}"),
                "CronJob" => format!("{name}-{:08}-{:05x}", 29_000_000 + r, hash & 0xfffff),
                _ => format!(
                    "{name}-{:08x}-{:05x}",
                    hash,
                    (hash >> 7).wrapping_add(r as u32) & 0xfffff
                ),
            };
            let mut labels = vec![("app".to_string(), name.to_string())];
            if kind == "Deployment" {
                labels.push(("pod-template-hash".into(), format!("{hash:08x}")));
            }
            let ip = v4(10, 244, (p / 250) as u8, (p % 250 + 2) as u8);
            pods.push(p);
            self.pods.push(Pod {
                ip,
                node,
                workload: w,
                interface: format!("veth{:08x}", hash.wrapping_add(p as u32)).into(),
                identity: Arc::new(Identity {
                    namespace: Some(ns.into()),
                    pod: Some(pod_name),
                    workload: Some(name.into()),
                    workload_kind: Some(kind.into()),
                    labels,
                    node: Some(self.nodes[node].name.to_string()),
                    service: Some(name.into()),
                    zone: self.nodes[node].identity.zone.clone(),
                }),
            });
        }
        // Log-normal-ish spread of per-workload latency: 80 µs to ~3 ms.
        let base_rtt_us = 80.0 * (rng.random::<f64>() * 3.6).exp();
        let loss = if rng.random_bool(0.15) { 0.02 } else { 0.001 };
        self.workloads.push(Workload {
            namespace: ns.into(),
            name: name.into(),
            kind,
            pods,
            service_ip,
            service_identity,
            calls: Vec::new(),
            port,
            base_rtt_us,
            loss,
        });
    }

    /// Each workload calls one to three others, mostly in its own namespace.
    fn wire_calls<R: Rng>(&mut self, rng: &mut R, per_ns: usize) {
        let n = self.workloads.len();
        for w in 1..n {
            let ns_start = 1 + ((w - 1) / per_ns) * per_ns;
            let ns_range: Vec<usize> = (ns_start..(ns_start + per_ns).min(n))
                .filter(|&x| x != w)
                .collect();
            let count = rng.random_range(1..=3);
            let mut calls = Vec::new();
            for _ in 0..count {
                let target = if rng.random_bool(0.8) && !ns_range.is_empty() {
                    *ns_range.choose(rng).expect("non-empty")
                } else {
                    rng.random_range(1..n)
                };
                if target != w && !calls.contains(&target) {
                    calls.push(target);
                }
            }
            self.workloads[w].calls = calls;
        }
    }

    /// The pods that start conversations (everything but DNS servers).
    pub fn client_pods(&self) -> Vec<usize> {
        (0..self.pods.len())
            .filter(|&p| self.pods[p].workload != self.dns)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn topology_is_deterministic_and_consistent() {
        let cfg = TopologyConfig::default();
        let a = Topology::generate(&cfg, &mut StdRng::seed_from_u64(1));
        let b = Topology::generate(&cfg, &mut StdRng::seed_from_u64(1));
        assert_eq!(a.pods.len(), b.pods.len());
        assert_eq!(a.pods[3].identity, b.pods[3].identity);
        assert_eq!(
            a.workloads.len(),
            1 + cfg.namespaces * cfg.workloads_per_namespace
        );
        let mut ips: Vec<_> = a.pods.iter().map(|p| p.ip).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), a.pods.len(), "pod IPs are unique");
        for w in &a.workloads[1..] {
            assert!(!w.calls.is_empty() || a.workloads.len() <= 2);
            for p in &w.pods {
                assert_eq!(a.workloads[a.pods[*p].workload].name, w.name);
            }
        }
    }
}
