//! Flowlake collector: the node agent.
//!
//! Module plan: `bpf` (load the C programs from `ebpf/`, attach tc/TCX on pod veths
//! and node interfaces, tracepoints) → `flows` (evict aggregated flows, boot time to
//! UTC) → `drops`, `dns`, `tcp` → `enrich` (Kubernetes reflectors, IP → identity) →
//! `ship` (Arrow batches to the ingester, on-disk spool) → `metrics`
//! (Retina-compatible Prometheus).

pub mod enrich;
pub mod ship;
