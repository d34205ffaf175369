//! `flowlake gen`: a deterministic synthetic workload of Kubernetes flow records.
//!
//! A seeded [`topology::Topology`] (nodes in zones, namespaces, workloads, pods,
//! services, who calls whom) produces traffic hour by hour ([`workload::HourStream`]):
//! Zipf-distributed talkers, same-node and cross-node calls through ClusterIPs, DNS
//! with NXDOMAIN and SERVFAIL, external egress with SNAT, a small share of drops
//! with real kernel reasons, retransmits, and RTTs that differ per workload.
//! [`output::generate`] writes it as Hive-partitioned Parquet or Arrow IPC files.

pub mod config;
pub mod error;
pub mod live;
pub mod output;
pub mod topology;
pub mod workload;
pub mod zipf;

pub use config::{GenArgs, GenConfig, OutputFormat};
pub use error::{GenError, Result};
pub use live::LiveFeed;
pub use output::{GenSummary, generate, hour_plans};
pub use topology::{Topology, TopologyConfig};
pub use workload::{HourPlan, HourStream};

/// Every record of a run in memory, in hour order (for tests and small demos).
pub fn records(cfg: &GenConfig) -> Vec<flowlake_schemas::FlowRecord> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let topo = std::sync::Arc::new(Topology::generate(&cfg.topology, &mut rng));
    hour_plans(cfg)
        .into_iter()
        .flat_map(|plan| HourStream::new(std::sync::Arc::clone(&topo), plan))
        .collect()
}

#[cfg(test)]
mod tests;
