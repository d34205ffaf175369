//! Flowlake collector: the node agent.
//!
//! Module plan: `plugins` (each data source by name: the eBPF objects `flows`,
//! `drops`, `tcp`, the `dns` reader, the scrape-time `conntrack`,
//! `interface_stats`, `tcp_connection_remote` and the `apiserver` metrics) →
//! `datapath`/`collector` (load the enabled objects, attach tc/TCX on pod veths
//! and node interfaces, evict aggregated flows) → `enrich` (Kubernetes
//! reflectors, IP → identity) → `sink`/`ship` (Arrow batches to the ingester,
//! IPFIX, JSON lines) → `retina` (Retina-compatible Prometheus).

pub mod abi;
pub mod agent;
pub mod batch;
pub mod btf;
pub mod capture;
pub mod collector;
pub mod config;
pub mod datapath;
pub mod dns;
pub mod enrich;
pub mod error;
pub mod flowcache;
pub mod l3;
pub mod metrics;
pub mod netlink;
pub mod plugins;
pub mod preflight;
pub mod records;
pub mod retina;
pub mod sink;

pub mod ship;

/// The flow programs' tc attachments (the `flows` plugin's).
pub use plugins::flows::attach;

pub use collector::Datapath;
pub use config::{CollectorArgs, DatapathConfig, InterfaceRole};
pub use metrics::DatapathMetrics;
