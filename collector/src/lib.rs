//! Flowlake collector: the node agent.
//!
//! Module plan: `bpf` (load the C programs from `ebpf/`, attach tc/TCX on pod veths
//! and node interfaces, tracepoints) → `flows` (evict aggregated flows, boot time to
//! UTC) → `drops`, `dns`, `tcp` → `enrich` (Kubernetes reflectors, IP → identity) →
//! `ship` (Arrow batches to the ingester, on-disk spool) → `metrics`
//! (Retina-compatible Prometheus).

pub mod abi;
pub mod agent;
pub mod attach;
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
pub mod preflight;
pub mod records;
pub mod retina;
pub mod sink;

pub mod ship;

pub use collector::Datapath;
pub use config::{CollectorArgs, DatapathConfig, InterfaceRole};
pub use metrics::DatapathMetrics;
